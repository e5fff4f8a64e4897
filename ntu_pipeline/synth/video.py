"""Synthetic `_rgb.avi` videos matching synthetic skeletons: the actors drawn where their joints project.

Usage:
    scene = synth_sample("S001C002P003R001A004", num_classes=6)
    render_video(scene, Path("demo_raw/S001/S001C002P003R001A004_rgb.avi"))   # 480x270, MPEG-4 Part 2
    for rgb in render_frames(scene): ...   # (270, 480, 3) uint8 RGB each, what the file encodes
    write_corpus(Path("demo_raw"), 240, 6, videos=True)                        # synth/corpus.py

A video has one frame per skeleton frame (empty frames included) at 30 fps, in an AVI with the DIVX
tag as NTU's are, but at a quarter of 1920x1080 each way by default: the RGB stage scales the colour
frame coordinates to the video's actual size. A frame costs ~0.6 ms of CPU (drawing 0.25, encoding
the rest): 14 s on one core for the 240-sample demo's ~23,000 frames, ~0.5 KB a frame.

What is drawn, per actor, from `color_xy` (colour frame pixels) and the depth of the spine (for the
stroke widths) alone: legs (trousers), torso and arms (shirt), neck, head and hands (skin), and the
object of `motion.held` in actor 1's right palm (between joints 11 and 23). Fingers and thumbs
(joints 21-24) are not drawn, nor are the noise bodies (the Kinect's mistakes, not people).
Colours: the room (wall, floor) by setup, clothes by performer, the object by class. Strokes are
sized by the body's distance at its spine (joint 1), not per joint, and drawn in a fixed order (never
sorted by depth): a hand brought towards the camera along its viewing ray is drawn exactly as before,
which is what makes the depth twins' videos identical in distribution (synth/skeleton.py; a real
camera would show such a hand ~8% larger at 3 m, and in front of the body).
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .scene import COLOR_CAMERA, FPS, SyntheticBody, SyntheticSample

COLOR_SIZE = (1920, 1080)  # width, height of the frame `color_xy` is in
VIDEO_SIZE = (480, 270)  # default width, height of the rendered videos
QUANTIZER = 5  # MPEG-4 quantizer, 2 (best) .. 31: ~0.5 KB a frame, edges stay sharp
# A large, fully saturated ball: what the RGB stream must find. With the first corpus's 18 cm ball of
# softer colours, I3D trained from scratch on CPU-sized clips (16 x 32^2) told red from blue no better
# than chance after 150 steps on 119 clips (it learnt the performers instead); with this 40 cm ball it
# does so on unseen performers in ~70 steps, which is what lets the demo's fused model plainly win.
OBJECT_RGB = {"red ball": (235, 20, 20), "blue ball": (20, 50, 235)}
OBJECT_RADIUS_M = 0.2
# muted colours only, so that a red or blue object is the only saturated red or blue in a frame
SHIRTS = ((95, 150, 75), (200, 180, 70), (150, 150, 150), (120, 95, 70), (225, 225, 215), (70, 70, 70),
          (165, 120, 160))
TROUSERS = ((50, 55, 70), (95, 85, 70), (40, 40, 40), (110, 110, 100))
SKIN = ((225, 190, 160), (190, 145, 110), (140, 100, 75))
WALLS = ((205, 200, 190), (190, 195, 190), (215, 210, 200), (180, 180, 175))
FLOORS = ((90, 90, 85), (110, 105, 95), (75, 85, 80))

# (joint, joint, width in metres) in drawing order, per part; Kinect v2 joint numbers
LEGS = ((0, 12, .12), (12, 13, .11), (13, 14, .09), (14, 15, .07), (0, 16, .12), (16, 17, .11),
        (17, 18, .09), (18, 19, .07))
TORSO = ((0, 1, .26), (1, 20, .30), (20, 4, .09), (20, 8, .09))
ARMS = ((4, 5, .08), (5, 6, .07), (6, 7, .06), (8, 9, .08), (9, 10, .07), (10, 11, .06))
NECK = ((20, 2, .07), (2, 3, .06))
HEAD, HANDS, RIGHT_HAND, RIGHT_HAND_TIP = 3, (7, 11), 11, 23
HEAD_RADIUS_M, HAND_RADIUS_M = 0.11, 0.045
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions, so slow motion is smooth


def _palette(key: list[int], colours: tuple) -> tuple[int, int, int]:
    return colours[int(np.random.default_rng(key).integers(len(colours)))]


def _background(sample: SyntheticSample, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) the empty room: a wall, and the floor below a horizon that depends on the setup."""
    setup = int(sample.name[1:4])
    width, height = size
    room = np.empty((height, width, 3), np.uint8)
    horizon = int(height * np.random.default_rng([0x800, setup]).uniform(0.45, 0.62))
    room[:horizon] = _palette([0xA11, setup], WALLS)
    room[horizon:] = _palette([0xF10, setup], FLOORS)
    return room


def _clothes(sample: SyntheticSample, actor: int) -> tuple[tuple[int, int, int], ...]:
    """(shirt, trousers, skin) of actor 0 or 1: by performer, so a performer looks the same in every
    sample; the second actor of a two-person class is someone else."""
    performer = int(sample.name[9:12])
    key = [0xC10, performer, actor]
    return (_palette([*key, 1], SHIRTS), _palette([*key, 2], TROUSERS), _palette([*key, 3], SKIN))


def _draw_body(img: np.ndarray, xy: np.ndarray, ppm: float, clothes, held: str) -> None:
    """Draw one actor in place. xy (25, 2) pixels in img; ppm: pixels per metre at the body."""
    shirt, trousers, skin = clothes
    p = np.round(xy * (1 << _SHIFT)).astype(np.int64)  # (25, 2) fixed point
    for bones, colour in ((LEGS, trousers), (TORSO, shirt), (NECK, skin), (ARMS, shirt)):
        for a, b, width in bones:
            cv2.line(img, tuple(p[a]), tuple(p[b]), colour, max(1, round(width * ppm)), cv2.LINE_AA, _SHIFT)
    for joint, radius in ((HEAD, HEAD_RADIUS_M), *((j, HAND_RADIUS_M) for j in HANDS)):
        cv2.circle(img, tuple(p[joint]), round(radius * ppm * (1 << _SHIFT)), skin, -1, cv2.LINE_AA, _SHIFT)
    if held:
        at = (xy[RIGHT_HAND] + xy[RIGHT_HAND_TIP]) / 2  # in the palm
        cv2.circle(img, tuple(np.round(at * (1 << _SHIFT)).astype(np.int64)),
                   round(OBJECT_RADIUS_M * ppm * (1 << _SHIFT)), OBJECT_RGB[held], -1, cv2.LINE_AA, _SHIFT)


def _actors(sample: SyntheticSample) -> list[SyntheticBody]:
    return [b for b in sample.bodies if b.kind == "actor"]


def render_frames(sample: SyntheticSample, size: tuple[int, int] = VIDEO_SIZE) -> Iterator[np.ndarray]:
    """Yield the sample's frames, (H, W, 3) uint8 RGB each, num_frames of them; size = (W, H)."""
    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"video size must be even and at least 16x16, got {width}x{height}")
    scale = np.array([width / COLOR_SIZE[0], height / COLOR_SIZE[1]])
    focal = COLOR_CAMERA.fx * scale[0]
    room = _background(sample, size)
    actors = _actors(sample)
    held = [sample.motion.held if k == 0 else "" for k in range(len(actors))]
    clothes = [_clothes(sample, k) for k in range(len(actors))]
    for f in range(sample.num_frames):
        img = room.copy()
        for k, body in enumerate(actors):
            i = f - body.first_frame
            if 0 <= i < body.num_frames:
                ppm = focal / body.joints[i, 1, 2]  # spine mid: the depth twins never move it
                _draw_body(img, body.color_xy[i] * scale, ppm, clothes[k], held[k])
        yield img


def render_video(sample: SyntheticSample, path: str | Path, size: tuple[int, int] = VIDEO_SIZE) -> Path:
    """Write the sample's `<name>_rgb.avi` (MPEG-4 Part 2, DIVX tag, 30 fps, yuv420p) at `path`; size =
    (W, H), even. Returns the path. The bytes are a pure function of the sample and size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w", format="avi") as container:
        # one thread: the bytes must not depend on the machine (threads split frames into slices)
        stream = container.add_stream("mpeg4", rate=FPS, options={"threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        context = stream.codec_context
        context.codec_tag, context.gop_size = "DIVX", 2 * FPS
        # a fixed quantizer (ffmpeg's -q:v needs a per-frame quality PyAV cannot set): clamp the rate
        # control's choice instead
        context.qmin = context.qmax = QUANTIZER
        for i, rgb in enumerate(render_frames(sample, size)):
            # cv2's I420 is BT.601 limited range, what decoders assume: 3x faster than PyAV's swscale here
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
