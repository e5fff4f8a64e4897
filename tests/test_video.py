"""The video wing: the person box (crop.py), the crop's pixels (pixels.py) and decode_clip (decode.py).

Synthetic videos are written inside the tests with PyAV (MPEG-4 Part 2 in AVI as the NTU originals,
and H.264 with B-frames as some mirrors); each frame carries its own number as 8 black/white blocks,
so the frame a clip says it stored can be read back from its pixels. Damaged copies are made with
fixed random bytes over chosen chunks or byte ranges (as `dd conv=notrunc` would). Conformance tests
read the real samples in ../shared/ntu_samples; their damaged copies are checked against the clean
video's every frame.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from ntu_pipeline.errors import VideoDecodeError
from ntu_pipeline.skeleton.actors import select_actors
from ntu_pipeline.skeleton.parse import parse_skeleton
from ntu_pipeline.video.crop import (
    COLOR_FRAME_SIZE,
    fallback_crop_box,
    person_crop_box,
    scale_box,
    usable_joints,
)
from ntu_pipeline.video.decode import _gop_needed, decode_clip
from ntu_pipeline.video.pixels import _fast_path, crop_frame, crop_resize_i420, crop_resize_rgb, snap_box
from ntu_pipeline.video.timeline import sample_indices

W, H = 96, 64  # synthetic video size
WHOLE = np.array([0, 0, W, H], np.float32)  # a box of the whole synthetic frame, in its own pixels

# ---------------------------------------------------------------- synthetic videos


def frame_image(k: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """(h, w, 3) uint8: k mod 256 as 8 blocks across the top half (bit b white when set), grey below."""
    w, h = size
    img = np.full((h, w, 3), 128, np.uint8)
    bw = w // 8
    for b in range(8):
        img[: h // 2, b * bw: (b + 1) * bw] = 255 if (k >> b) & 1 else 0
    return img


def read_number(rgb: np.ndarray) -> int:
    """The frame number written by frame_image, from a crop of the whole frame (any square size)."""
    s = rgb.shape[0]
    bits = [rgb[s // 4, int((b + 0.5) * s / 8)].mean() > 128 for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_video(path: Path, n: int, codec: str = "mpeg4", size=(W, H), gop: int = 12, fmt: str = "avi"):
    """n frames of frame_image; MPEG-4 without B-frames (the NTU originals) or H.264 with B-frames."""
    if codec == "mpeg4":
        options = {"bf": "0", "qscale": "2", "sc_threshold": "1000000000"}
    else:
        options = {"preset": "veryfast", "crf": "8", "bf": "3", "sc_threshold": "0"}
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for k in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(k, size), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_with_garbage(path: Path, good: int, bad: int) -> Path:
    """An MPEG-4 AVI of `good` real frames, then `bad` packets of random bytes."""
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=30, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, 30)
        for k in range(good):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(k), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        rng = np.random.default_rng(0)
        for k in range(bad):
            packet = av.Packet(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
            packet.stream = stream
            packet.pts = packet.dts = good + k
            packet.time_base = stream.time_base
            container.mux(packet)
    return path


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


CODECS = ["mpeg4", pytest.param("libx264", marks=pytest.mark.skipif(
    not has_encoder("libx264"), reason="this PyAV build has no libx264 encoder"))]


def numbers(clip) -> list[int]:
    return [read_number(f) for f in clip.frames]


# ---------------------------------------------------------------- sample_indices


def test_sample_indices_longer_than_t_are_distinct_and_spread():
    idx = sample_indices(103, 32)
    assert idx.shape == (32,)
    assert np.all(np.diff(idx) >= 103 // 32)  # distinct, at least floor(n/t) apart
    assert idx[0] == 1 and idx[-1] == 101  # centres of the first and last of 32 segments of 103
    assert np.array_equal(idx, np.floor((np.arange(32) + 0.5) * 103 / 32).astype(int))


def test_sample_indices_equal_is_every_frame():
    assert np.array_equal(sample_indices(32, 32), np.arange(32))


def test_sample_indices_shorter_than_t_repeat_every_frame_in_order():
    idx = sample_indices(5, 12)
    assert np.all(np.diff(idx) >= 0)
    counts = np.bincount(idx, minlength=5)
    assert counts.sum() == 12 and set(counts.tolist()) <= {2, 3}  # each frame floor or ceil of 12/5 times


@pytest.mark.parametrize("n,t", [(0, 4), (4, 0), (-1, 3)])
def test_sample_indices_rejects_empty(n, t):
    with pytest.raises(ValueError):
        sample_indices(n, t)


# ---------------------------------------------------------------- the person box


def joints_at(points) -> np.ndarray:
    """(1, 2, 25, 2): actor 1 with joints at `points` (the rest zero, i.e. absent), actor 2 absent."""
    xy = np.zeros((1, 2, 25, 2), np.float32)
    xy[0, 0, : len(points)] = points
    return xy


def test_person_box_is_a_padded_square_holding_every_joint():
    xy = joints_at([(900, 300), (1000, 700), (950, 500)])
    box = person_crop_box(xy, margin=0.25)
    assert box.dtype == np.float32
    x0, y0, x1, y1 = box
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert y1 - y0 == pytest.approx(400 * 1.5)  # the longer side (y, 400 px) plus 25% on each side
    assert (x0 + x1) / 2 == pytest.approx(950) and (y0 + y1) / 2 == pytest.approx(500)


def test_person_box_ignores_zero_nonfinite_and_far_joints():
    xy = joints_at([(900, 300), (1000, 700), (np.nan, 10), (np.inf, 500), (1e6, 400), (-5000, 400)])
    assert np.allclose(person_crop_box(xy), person_crop_box(joints_at([(900, 300), (1000, 700)])))
    assert len(usable_joints(xy)) == 2


def test_person_box_none_when_no_joint_is_usable():
    assert person_crop_box(np.zeros((10, 2, 25, 2), np.float32)) is None
    assert person_crop_box(np.full((3, 2, 25, 2), np.nan, np.float32)) is None


def test_person_box_of_one_joint_has_the_minimum_side():
    box = person_crop_box(joints_at([(960, 540)]), min_side=0.1)
    assert box[2] - box[0] == pytest.approx(108) and box[3] - box[1] == pytest.approx(108)


@pytest.mark.parametrize("points,inside", [
    ([(5, 500), (60, 700)], "left"), ([(1900, 500), (1915, 700)], "right"),
    ([(900, 3), (950, 200)], "top"), ([(900, 900), (950, 1079)], "bottom"),
])
def test_person_box_is_shifted_inside_at_every_border(points, inside):
    x0, y0, x1, y1 = person_crop_box(joints_at(points))
    assert x0 >= 0 and y0 >= 0 and x1 <= 1920 and y1 <= 1080
    edge = {"left": x0, "right": 1920 - x1, "top": y0, "bottom": 1080 - y1}[inside]
    assert edge == pytest.approx(0, abs=1e-3)
    xs, ys = np.array(points).T
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1


def test_person_box_larger_than_the_frame_stays_centred_and_extends_past_it():
    xy = joints_at([(200, 50), (1700, 1000)])  # 1500 x 950 of joints: padded square 2250 > both sides
    x0, y0, x1, y1 = person_crop_box(xy)
    assert x1 - x0 == pytest.approx(2250) and y1 - y0 == pytest.approx(2250)
    assert (x0 + x1) / 2 == pytest.approx(950) and (y0 + y1) / 2 == pytest.approx(525)
    assert x0 < 0 and y0 < 0 and x1 > 1920 and y1 > 1080


def test_person_box_taller_than_the_frame_is_still_shifted_inside_in_x():
    xy = joints_at([(40, 0), (60, 1000)])  # padded side 1500 > 1080 but < 1920
    x0, y0, x1, y1 = person_crop_box(xy)
    assert x0 == pytest.approx(0) and x1 == pytest.approx(1500)
    assert y0 < 0 and y1 > 1080


def test_fallback_box_is_the_centred_square():
    assert np.array_equal(fallback_crop_box((1920, 1080)), [420, 0, 1500, 1080])
    assert np.array_equal(fallback_crop_box((480, 640)), [0, 80, 480, 560])


def test_scale_box_to_a_resized_video():
    box = np.array([420, 0, 1500, 1080], np.float32)
    assert np.allclose(scale_box(box, (1920, 1080), (960, 540)), [210, 0, 750, 540])
    assert np.allclose(scale_box(box, (1920, 1080), (640, 480)), [140, 0, 500, 480])  # per axis


def test_snap_box_grows_to_a_four_pixel_grid():
    assert snap_box(np.array([752.9, 217.0, 1343.5, 807.6])) == (752, 216, 1344, 808)
    assert snap_box(np.array([-3.0, -1.0, 1.0, 2.0])) == (-4, -4, 4, 4)
    with pytest.raises(ValueError):
        snap_box(np.array([10.0, 10.0, 5.0, 20.0]))


# ---------------------------------------------------------------- cropping pixels


def grey_planes(level_y: int = 200, h: int = 60, w: int = 80):
    """Y, U, V planes of a uniform grey 4:2:0 frame (h, w)."""
    return (np.full((h, w), level_y, np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
            np.full((h // 2, w // 2), 128, np.uint8))


def grey_rgb(level_y: int) -> float:
    return (level_y - 16) * 255 / 219


@pytest.mark.parametrize("box,black,image", [
    # a 40-pixel box over a uniform 80x60 frame, half past one edge: half the 64-pixel output is black
    ((-20, 0, 20, 40), np.s_[:, :30], np.s_[:, 34:]),  # past the left edge
    ((60, 0, 100, 40), np.s_[:, 34:], np.s_[:, :30]),  # past the right edge
    ((0, -20, 40, 20), np.s_[:30, :], np.s_[34:, :]),  # past the top
    ((0, 40, 40, 80), np.s_[34:, :], np.s_[:30, :]),  # past the bottom
])
def test_crop_past_each_border_is_black_there_and_the_image_elsewhere(box, black, image):
    out = crop_resize_i420(*grey_planes(), box, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[black].max() <= 2
    assert np.abs(out[image].astype(float) - grey_rgb(200)).max() <= 2


def test_crop_larger_than_the_image_pads_all_around():
    y, u, v = grey_planes(h=60, w=80)
    out = crop_resize_i420(y, u, v, (-40, -60, 120, 100), 80)  # 160 x 160 box, image in the middle
    # the image covers x 40..120 and y 60..120 of the box: output x 20..60, y 30..60 at half scale
    assert np.abs(out[33:57, 23:57].astype(float) - grey_rgb(200)).max() <= 2
    assert out[:27].max() <= 2 and out[63:].max() <= 2 and out[:, :17].max() <= 2 and out[:, 63:].max() <= 2


def test_crop_outside_the_image_is_all_black():
    assert crop_resize_i420(*grey_planes(), (200, 200, 240, 240), 32).max() <= 2


def test_crop_puts_content_where_the_box_says():
    y, u, v = grey_planes(level_y=16)
    y[20:40, 40:60] = 235  # a white square
    out = crop_resize_i420(y, u, v, (20, 0, 80, 60), 60)  # 60x60 box: scale 1, square at x 20..40
    white = out[:, :, 1] > 128
    rows, cols = np.nonzero(white)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 20, 39)


def textured_frame(w: int = 320, h: int = 240) -> av.VideoFrame:
    """A yuv420p frame of smooth colour (like video's chroma) over fine luma detail."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 200 // w + 20, yy * 200 // h + 20, 128 + 80 * np.sin(xx / 9) * np.cos(yy / 13)], -1)
    rgb = rgb + 40 * np.sin((xx + 2 * yy) / 3)[..., None]
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


@pytest.mark.parametrize("size", [250, 254, 256])
@pytest.mark.parametrize("box", [(40, 20, 280, 220), (-60, -40, 200, 200), (200, 100, 400, 300)])
def test_fast_path_equals_the_rgb_path_at_sizes_of_2_mod_4(size, box):
    """S = 2 (mod 4): the chroma planes are (S/2, S/2) with S/2 odd, written into the flat I420 buffer."""
    frame = textured_frame()
    assert _fast_path(frame)
    fast = crop_frame(frame, box, size)
    reference = crop_resize_rgb(frame.to_ndarray(format="rgb24"), box, size)  # convert all, then crop
    assert fast.shape == (size, size, 3) and fast.dtype == np.uint8
    assert psnr(fast, reference) > 35  # the tolerance of the real-sample test at 256


def yuv_rgb(y: int, u: int, v: int) -> np.ndarray:
    """(3,) uint8: one limited-range BT.601 YUV colour in RGB, by OpenCV's own I420 conversion."""
    i420 = np.array([[y, y], [y, y], [u, v]], np.uint8)  # (3, 2): 2x2 luma, then one U and one V
    return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)[0, 0]


@pytest.mark.parametrize("size", [16, 18, 22, 30, 34, 128, 250, 254])
def test_chroma_quadrants_land_where_the_box_says_at_any_even_size(size):
    """Four colours in the quadrants of a 4:2:0 frame come out in the quadrants of the crop."""
    y = np.full((80, 80), 120, np.uint8)
    u, v = np.empty((40, 40), np.uint8), np.empty((40, 40), np.uint8)
    colours = {(0, 0): (60, 200), (0, 1): (200, 60), (1, 0): (90, 90), (1, 1): (170, 170)}  # (U, V)
    for (r, c), (cu, cv) in colours.items():
        u[r * 20: (r + 1) * 20, c * 20: (c + 1) * 20] = cu
        v[r * 20: (r + 1) * 20, c * 20: (c + 1) * 20] = cv
    out = crop_resize_i420(y, u, v, (0, 0, 80, 80), size)
    assert out.shape == (size, size, 3)
    h, m = size // 2, 3  # quadrant side, margin kept from the boundary (where colours mix)
    for (r, c), (cu, cv) in colours.items():
        quadrant = out[r * h + m * r: (r + 1) * h - m * (1 - r), c * h + m * c: (c + 1) * h - m * (1 - c)]
        assert np.abs(quadrant.astype(int) - yuv_rgb(120, cu, cv)).max() <= 2, (r, c)


@pytest.mark.parametrize("size", [250, 254])
def test_decode_clip_at_a_size_of_2_mod_4(tmp_path, size):
    path = write_video(tmp_path / "v.avi", 20)
    clip = decode_clip(path, WHOLE, size=size, frames=4, box_frame_size=(W, H))
    assert clip.frames.shape == (4, size, size, 3) and numbers(clip) == clip.frame_index.tolist()


# ---------------------------------------------------------------- decode_clip on synthetic videos


@pytest.mark.parametrize("codec", CODECS)
def test_decode_clip_stores_the_frames_it_says(tmp_path, codec):
    path = write_video(tmp_path / "v.avi", 100, codec)
    clip = decode_clip(path, WHOLE, size=64, frames=8, box_frame_size=(W, H))
    assert clip.frames.shape == (8, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.frame_index.dtype == np.int32
    assert np.array_equal(clip.frame_index, sample_indices(100, 8))
    assert numbers(clip) == clip.frame_index.tolist()
    assert clip.num_source_frames == 100 and clip.header_frames == 100
    assert clip.note == ""


@pytest.mark.parametrize("codec", CODECS)
def test_decode_clip_every_frame(tmp_path, codec):
    path = write_video(tmp_path / "v.avi", 40, codec)
    clip = decode_clip(path, WHOLE, size=32, frames=None, box_frame_size=(W, H))
    assert clip.frames.shape == (40, 32, 32, 3)
    assert numbers(clip) == list(range(40)) == clip.frame_index.tolist()


def test_decode_clip_every_frame_stops_at_300(tmp_path):
    path = write_video(tmp_path / "v.avi", 310, gop=50)
    clip = decode_clip(path, WHOLE, size=32, frames=None, box_frame_size=(W, H))
    assert clip.frames.shape == (300, 32, 32, 3) and clip.num_source_frames == 310
    assert numbers(clip) == [k % 256 for k in range(300)] and "first 300" in clip.note


def test_gop_skip_decodes_only_up_to_the_last_wanted_frame_of_each_gop():
    class Packet:
        def __init__(self, key):
            self.is_keyframe = key

    packets = [Packet(k % 12 == 0) for k in range(40)]
    needed = _gop_needed(packets, np.array([1, 30]))
    assert np.flatnonzero(needed).tolist() == [0, 1] + list(range(24, 31))


def test_gop_skip_gives_the_frames_of_a_full_decode(tmp_path):
    path = write_video(tmp_path / "v.avi", 120, "mpeg4")
    clip = decode_clip(path, np.array([8, 4, 72, 60]), size=32, frames=5, box_frame_size=(W, H))
    index = clip.frame_index.tolist()
    full, count = plain_crops(path, index, lambda f: crop_frame(f, snap_box(clip.box), 32))
    assert np.array_equal(clip.frames, full) and count == clip.num_source_frames == 120


@pytest.mark.parametrize("codec", CODECS)
def test_decode_clip_shorter_than_t_repeats_and_says_so(tmp_path, codec):
    path = write_video(tmp_path / "v.avi", 5, codec)
    clip = decode_clip(path, WHOLE, size=32, frames=12, box_frame_size=(W, H))
    assert clip.frames.shape == (12, 32, 32, 3)
    assert np.array_equal(clip.frame_index, sample_indices(5, 12))
    assert numbers(clip) == clip.frame_index.tolist()
    assert clip.num_source_frames == 5 and "repeated" in clip.note


def test_decode_clip_scales_the_box_to_a_resized_video(tmp_path):
    size = (192, 108)  # a mirror at 1/10 of 1920x1080
    with av.open(str(tmp_path / "v.avi"), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=30, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        img = np.zeros((108, 192, 3), np.uint8)
        img[:, 100:] = 255  # white from x = 100 (x = 1000 at colour-camera scale)
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    white = decode_clip(tmp_path / "v.avi", np.array([1040, 200, 1840, 1000]), size=16, frames=2)
    black = decode_clip(tmp_path / "v.avi", np.array([80, 200, 880, 1000]), size=16, frames=2)
    assert np.array_equal(white.box, [104, 20, 184, 100]) and white.video_size == size
    assert white.frames.min() >= 240 and black.frames.max() <= 15


def test_decode_clip_without_a_box_uses_the_fallback_and_says_so(tmp_path):
    path = write_video(tmp_path / "v.avi", 10, size=(128, 64))
    clip = decode_clip(path, None, size=32, frames=4, box_frame_size=(128, 64))
    assert np.array_equal(clip.box, [32, 0, 96, 64]) and "fallback_crop_box" in clip.note


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("keep", [0.24, 0.32, 0.45, 0.57, 0.6])
def test_truncated_file_is_sampled_over_the_frames_it_holds(tmp_path, codec, keep):
    """Cut the bytes: the count comes from the content, and every stored frame is the one it says.

    (With B-frames, a cut can drop frames shown just before the last ones decoded; those are dropped.)
    """
    path = write_video(tmp_path / "v.avi", 60, codec)
    data = path.read_bytes()
    movi = data.index(b"movi")  # the frames follow the (padded) header
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: movi + int((len(data) - movi) * keep)])
    clip = decode_clip(cut, WHOLE, size=32, frames=16, box_frame_size=(W, H))
    n = clip.num_source_frames
    assert 0 < n < 60 and clip.header_frames == 60
    assert f"declares 60 frames, the stream holds {n}" in clip.note
    assert np.array_equal(clip.frame_index, sample_indices(n, 16))
    assert numbers(clip) == clip.frame_index.tolist()


def test_missing_header_count_is_not_needed(tmp_path):
    path = write_video(tmp_path / "v.m4v", 30, fmt="m4v")  # a raw MPEG-4 stream declares no count
    clip = decode_clip(path, WHOLE, size=32, frames=8, box_frame_size=(W, H))
    assert clip.header_frames == 0 and clip.num_source_frames == 30
    assert numbers(clip) == sample_indices(30, 8).tolist()


# ---------------------------------------------------------------- bad inputs


def assert_names_file(error: VideoDecodeError, path: Path):
    assert error.path == str(path) and str(path) in str(error)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty_rgb.avi"
    path.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty file") as e:
        decode_clip(path, None)
    assert_names_file(e.value, path)


def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="cannot be opened") as e:
        decode_clip(tmp_path / "nothing.avi", None)
    assert_names_file(e.value, tmp_path / "nothing.avi")


def test_not_a_video(tmp_path):
    path = tmp_path / "text_rgb.avi"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match="cannot be opened") as e:
        decode_clip(path, None)
    assert_names_file(e.value, path)


def test_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match="no video stream") as e:
        decode_clip(path, None)
    assert_names_file(e.value, path)


def test_truncated_to_its_header(tmp_path):
    path = write_video(tmp_path / "v.avi", 40)
    data = path.read_bytes()
    movi = data.index(b"movi")
    for cut, message in [(100, "cannot be opened"), (movi + 4, "no video packets")]:
        short = tmp_path / f"cut{cut}.avi"
        short.write_bytes(data[:cut])
        with pytest.raises(VideoDecodeError, match=message) as e:
            decode_clip(short, WHOLE, box_frame_size=(W, H))
        assert_names_file(e.value, short)


def test_no_decodable_frame(tmp_path):
    path = write_with_garbage(tmp_path / "garbage.avi", good=0, bad=10)
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(path, WHOLE, box_frame_size=(W, H))
    assert_names_file(e.value, path)
    assert e.value.frame == 0


def test_decode_error_halfway_names_the_frame(tmp_path):
    path = write_with_garbage(tmp_path / "half.avi", good=10, bad=10)
    with pytest.raises(VideoDecodeError, match="decoder error") as e:
        decode_clip(path, WHOLE, frames=16, box_frame_size=(W, H))
    assert_names_file(e.value, path)
    assert e.value.frame == 10


@pytest.mark.parametrize("kwargs", [{"size": 33}, {"size": 0}, {"frames": 0}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        decode_clip(tmp_path / "v.avi", None, **kwargs)


# ---------------------------------------------------------------- damaged streams


def chunk_spans(path: Path) -> list[tuple[int, int]]:
    """(start, stop) bytes of each frame's chunk (8-byte header, then data), in frame order, by its index."""
    with av.open(str(path)) as container:
        return [(e.pos, e.pos + 8 + e.size) for e in container.streams.video[0].index_entries]


def overwrite(path: Path, out: Path, spans, seed: int = 0) -> Path:
    """A copy of `path` with each (start, stop) byte span overwritten by fixed random bytes (as dd would)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for start, stop in spans:
        data[start:stop] = rng.bytes(stop - start)
    out.write_bytes(bytes(data))
    return out


def wreck(path: Path, out: Path, frames, part: str) -> Path:
    """Overwrite the whole chunk of each frame ("chunk": the demuxer loses it) or the last two thirds of
    its data ("data": it is read, and decodes to garbage or not at all)."""
    spans = chunk_spans(path)
    if part == "data":
        spans = [(a + 8 + (b - a - 8) // 3, b) for a, b in spans]
    return overwrite(path, out, [spans[f] for f in frames])


def assert_true_to_content(clip, count: int, frames: int | None):
    """Every stored frame is the frame its frame_index says; the others are the ones sampled."""
    assert numbers(clip) == clip.frame_index.tolist()
    wanted = np.arange(count) if frames is None else sample_indices(count, frames)
    assert np.array_equal(clip.frame_index[~clip.replaced], wanted[~clip.replaced])
    assert clip.num_source_frames == count


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("frames", [16, None])
def test_lost_chunks_do_not_shift_the_frames_after_them(tmp_path, codec, frames):
    """The demuxer skips unreadable chunks and its pts count the chunks it found; the index keeps
    every frame's number, and frames 20-22 and those predicted from them are replaced by good ones.

    (With B-frames, frames shown around a lost one cannot be placed, and are bad too.)
    """
    path = wreck(write_video(tmp_path / "v.avi", 60, codec), tmp_path / "d.avi", [20, 21, 22], "chunk")
    clip = decode_clip(path, WHOLE, size=32, frames=frames, box_frame_size=(W, H))
    assert_true_to_content(clip, 60, frames)
    wanted = np.arange(60) if frames is None else sample_indices(60, 16)
    assert {20, 21, 22} & set(wanted.tolist()) <= set(wanted[clip.replaced].tolist())
    assert set(wanted[clip.replaced].tolist()) <= set(range(17, 24))  # up to the next keyframe, 24
    assert "not in the stream" in clip.note and "replaced" in clip.note


@pytest.mark.parametrize("codec", CODECS)
def test_a_corrupt_frame_and_those_predicted_from_it_are_replaced(tmp_path, codec):
    path = wreck(write_video(tmp_path / "v.avi", 60, codec), tmp_path / "d.avi", [26], "data")
    clip = decode_clip(path, WHOLE, size=32, frames=None, box_frame_size=(W, H))
    assert_true_to_content(clip, 60, None)
    replaced = set(np.flatnonzero(clip.replaced).tolist())
    if codec == "mpeg4":  # I/P: frame 26 and every frame after it up to keyframe 36
        assert replaced == set(range(26, 36))
    else:  # with B-frames, decode order (the damage's) is not display order: within the same GOP
        assert len(replaced) >= 8 and replaced <= set(range(24, 36))
    assert f"replaced {len(replaced)} of the 60 frames needed" in clip.note


@pytest.mark.parametrize("frames", [16, None])
def test_more_than_a_fifth_of_the_frames_bad_fails_the_sample(tmp_path, frames):
    path = wreck(write_video(tmp_path / "v.avi", 60), tmp_path / "d.avi", [13, 40], "data")
    with pytest.raises(VideoDecodeError, match="frames needed are corrupt or missing") as e:
        decode_clip(path, WHOLE, size=32, frames=frames, box_frame_size=(W, H))
    assert_names_file(e.value, path)
    assert e.value.frame == 13
    assert ("5 of the 16" if frames else "19 of the 60") in str(e.value)  # 13-23 and 40-47: two GOPs


@pytest.mark.parametrize("keep_index", [True, False])
def test_one_readable_frame_fails(tmp_path, keep_index):
    """Every chunk after the first unreadable: with the index the frames are known lost; without it,
    the unreadable bytes where they were still tell a damaged file from a truncated one."""
    source = write_video(tmp_path / "v.avi", 60)
    data = source.read_bytes()
    end = data.rindex(b"idx1") if keep_index else len(data)
    path = overwrite(source, tmp_path / "d.avi", [(chunk_spans(source)[1][0], end)])
    for frames in (16, None):
        with pytest.raises(VideoDecodeError, match="corrupt or missing") as e:
            decode_clip(path, WHOLE, size=32, frames=frames, box_frame_size=(W, H))
        assert_names_file(e.value, path)


# ---------------------------------------------------------------- the real samples


A001 = "S001C001P001R001A001"
DIVX = "S004C002P003R002A046"


def plain_crops(path: Path, index, crop) -> tuple[np.ndarray, int]:
    """(crop(frame) of every frame in `index`, stacked; the video's frame count), by plain PyAV."""
    wanted, count = {}, 0
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(container.streams.video[0])):
            if k in index:
                wanted[k] = crop(frame)
            count = k + 1
    return (np.stack([wanted[int(j)] for j in index]) if len(index) else np.empty(0)), count


@pytest.fixture(scope="module")
def videos(ntu_samples) -> Path:
    folder = ntu_samples / "videos"
    missing = [n for n in (A001, DIVX) if not (folder / f"{n}_rgb.avi").exists()]
    if missing:
        pytest.skip(f"real NTU videos {missing} not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def a001_box(ntu_samples):
    actors = select_actors(parse_skeleton(ntu_samples / "skeletons" / f"{A001}.skeleton"))
    return actors, person_crop_box(actors.color_xy)


@pytest.mark.slow
def test_a001_stores_32_of_its_103_frames_in_a_box_around_its_performer(videos, a001_box):
    actors, box = a001_box
    clip = decode_clip(videos / f"{A001}_rgb.avi", box)
    assert clip.frames.shape == (32, 256, 256, 3)
    assert clip.num_source_frames == 103 and clip.header_frames == 103 and clip.note == ""
    assert np.array_equal(clip.frame_index, sample_indices(103, 32))
    assert clip.frame_index[0] == 1 and clip.frame_index[-1] == 101
    assert clip.video_size == COLOR_FRAME_SIZE
    joints = usable_joints(actors.color_xy)
    x0, y0, x1, y1 = clip.box
    assert len(joints) > 1000
    assert (joints[:, 0] >= x0).all() and (joints[:, 0] <= x1).all()
    assert (joints[:, 1] >= y0).all() and (joints[:, 1] <= y1).all()
    assert (x1 - x0) * (y1 - y0) <= 0.25 * 1920 * 1080


@pytest.mark.slow
@pytest.mark.parametrize("name", [A001, DIVX])
def test_real_clip_equals_a_full_decode_at_its_indices(videos, a001_box, name):
    """Frame numbering (B-frames in display order) and the GOP skip (DIVX) are exact."""
    path = videos / f"{name}_rgb.avi"
    clip = decode_clip(path, a001_box[1])
    full, _ = plain_crops(path, clip.frame_index.tolist(), lambda f: crop_frame(f, snap_box(clip.box), 256))
    assert np.array_equal(clip.frames, full)


@pytest.mark.slow
def test_divx_decodes_to_its_true_frame_count(videos):
    path = videos / f"{DIVX}_rgb.avi"
    _, count = plain_crops(path, [], None)
    clip = decode_clip(path, None, size=64, frames=None)
    assert clip.num_source_frames == count == clip.frames.shape[0] == 67
    assert np.array_equal(clip.frame_index, np.arange(count))
    assert np.array_equal(decode_clip(path, None, size=64).frame_index, sample_indices(count, 32))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.mark.slow
@pytest.mark.parametrize("name,box", [(A001, "skeleton"), (DIVX, "skeleton"), (DIVX, "fallback")])
def test_yuv_crop_is_close_to_the_naive_rgb_path(videos, a001_box, name, box):
    """Crop and resize in YUV, then convert == convert the whole frame, crop, resize (PSNR > 35 dB)."""
    box = a001_box[1] if box == "skeleton" else fallback_crop_box()
    path = videos / f"{name}_rgb.avi"
    clip = decode_clip(path, box, frames=8)
    x0, y0, x1, y1 = snap_box(clip.box)

    def naive_crop(frame):
        rgb = frame.to_ndarray(format="rgb24")
        pad = ((max(-y0, 0), max(y1 - rgb.shape[0], 0)), (max(-x0, 0), max(x1 - rgb.shape[1], 0)), (0, 0))
        crop = np.pad(rgb[max(y0, 0): y1, max(x0, 0): x1], pad)
        return cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)

    naive, _ = plain_crops(path, clip.frame_index.tolist(), naive_crop)
    assert psnr(clip.frames, naive) > 35


@pytest.mark.slow
@pytest.mark.parametrize("size", [250, 254, 256])
def test_real_sizes_of_2_mod_4_are_close_to_the_rgb_path(videos, a001_box, size):
    for name in (A001, DIVX):
        path = videos / f"{name}_rgb.avi"
        clip = decode_clip(path, a001_box[1], size=size, frames=8)
        box = snap_box(clip.box)

        def convert_all_then_crop(frame, box=box):
            return crop_resize_rgb(frame.to_ndarray(format="rgb24"), box, size)

        reference, _ = plain_crops(path, clip.frame_index.tolist(), convert_all_then_crop)
        assert clip.frames.shape == (8, size, size, 3) and psnr(clip.frames, reference) > 35


@pytest.mark.slow
@pytest.mark.parametrize("name", [A001, DIVX])
@pytest.mark.parametrize("frames", [32, None])
def test_real_clean_video_is_stored_as_a_full_decode(videos, a001_box, name, frames):
    """Undamaged videos: the frames and frame numbers of decoding every frame, nothing replaced."""
    path = videos / f"{name}_rgb.avi"
    clip = decode_clip(path, a001_box[1], frames=frames)
    _, count = plain_crops(path, [], None)
    wanted = np.arange(count) if frames is None else sample_indices(count, frames)
    full, _ = plain_crops(path, wanted.tolist(), lambda f: crop_frame(f, snap_box(clip.box), 256))
    assert np.array_equal(clip.frame_index, wanted) and np.array_equal(clip.frames, full)
    assert not clip.replaced.any() and clip.note == "" and clip.num_source_frames == count


@pytest.fixture(scope="module")
def divx_every_frame(videos) -> np.ndarray:
    """(67, 64, 64, 3): the clean DIVX original's every frame, fallback box, the oracle for damage."""
    return decode_clip(videos / f"{DIVX}_rgb.avi", None, size=64, frames=None).frames


def damaged_divx(videos, tmp_path, at: float | int, nbytes: int) -> Path:
    """The DIVX original with `nbytes` random bytes written at byte `at` (an int) or at that share."""
    source = videos / f"{DIVX}_rgb.avi"
    start = at if isinstance(at, int) else int(source.stat().st_size * at)
    return overwrite(source, tmp_path / f"{DIVX}_rgb.avi", [(start, start + nbytes)])


@pytest.mark.slow
def test_real_divx_200kb_hit_stores_frames_under_their_own_numbers(videos, tmp_path, divx_every_frame):
    """The issue's repro (dd bs=1024 count=200 seek=10): frame 0 concealed, chunks 1-3 lost, 4-11
    predicted from them. Before: 64 frames numbered 0-63, frames 4-31 of the clip 3 frames off."""
    clip = decode_clip(damaged_divx(videos, tmp_path, 10 * 1024, 200 * 1024), None, size=64)
    assert np.array_equal(clip.frames, divx_every_frame[clip.frame_index])  # each is the frame it says
    wanted = sample_indices(67, 32)
    assert clip.num_source_frames == 67
    assert wanted[clip.replaced].tolist() == [1, 3, 5, 7, 9, 11]  # 6 of 32: within the 20% rule
    assert clip.frame_index[clip.replaced].tolist() == [12] * 6  # the first good frame, keyframe 12
    assert np.array_equal(clip.frame_index[~clip.replaced], wanted[~clip.replaced])
    assert "3 of 67 frames not in the stream" in clip.note and "replaced 6 of the 32" in clip.note


@pytest.mark.slow
@pytest.mark.parametrize("frames", [32, None])
def test_real_divx_20kb_hit_replaces_the_frames_with_artefacts(videos, tmp_path, divx_every_frame, frames):
    """20 KB at 40% of the file: frame 25 concealed (flagged corrupt), 26-35 predicted from it with
    visible blocks, none flagged. Before: stored with no note."""
    clip = decode_clip(damaged_divx(videos, tmp_path, 0.4, 20 * 1024), None, size=64, frames=frames)
    assert np.array_equal(clip.frames, divx_every_frame[clip.frame_index])
    wanted = np.arange(67) if frames is None else sample_indices(67, 32)
    bad = [j for j in wanted.tolist() if 25 <= j <= 35]
    assert wanted[clip.replaced].tolist() == bad
    assert clip.frame_index[clip.replaced].tolist() == [24 if j <= 30 else 36 for j in bad]  # nearest good
    assert f"replaced {len(bad)} of the {len(wanted)}" in clip.note


@pytest.mark.slow
@pytest.mark.parametrize("keep_index", [True, False])
def test_real_divx_with_one_readable_frame_of_67_fails(videos, tmp_path, keep_index):
    source = videos / f"{DIVX}_rgb.avi"
    data = source.read_bytes()
    end = data.rindex(b"idx1") if keep_index else len(data)
    path = overwrite(source, tmp_path / f"{DIVX}_rgb.avi", [(chunk_spans(source)[1][0], end)])
    for frames in (32, None):
        with pytest.raises(VideoDecodeError, match="of the .* frames needed are corrupt or missing") as e:
            decode_clip(path, None, size=64, frames=frames)
        assert_names_file(e.value, path)


@pytest.mark.slow
def test_real_h264_damage_fails_where_its_only_keyframe_leaves_no_clean_frame(videos, tmp_path):
    """A001's re-encode has one keyframe: every frame decoded after the damage is predicted from it."""
    source = videos / f"{A001}_rgb.avi"
    start = int(source.stat().st_size * 0.4)
    path = overwrite(source, tmp_path / f"{A001}_rgb.avi", [(start, start + 20 * 1024)])
    with pytest.raises(VideoDecodeError, match="26 of the 32 frames needed are corrupt or missing") as e:
        decode_clip(path, None, size=64)
    assert_names_file(e.value, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [DIVX, A001])
def test_real_random_damage_is_never_stored_as_a_clean_frame(videos, tmp_path, name):
    """Random hits of 16 B to 100 KB: each clip either fails or stores only clean frames, each the
    frame its frame_index says (the oracle: the clean video's every frame)."""
    source = videos / f"{name}_rgb.avi"
    clean = decode_clip(source, None, size=32, frames=None).frames
    data = source.read_bytes()
    movi, idx1 = data.index(b"movi"), data.rindex(b"idx1")
    rng = np.random.default_rng(7)
    outcomes = []
    for trial in range(8):
        nbytes = int(rng.choice([16, 2048, 20480, 102400]))
        start = int(rng.integers(movi, idx1 - nbytes))
        path = overwrite(source, tmp_path / f"{trial}.avi", [(start, start + nbytes)], seed=trial)
        for frames in (32, None):
            try:
                clip = decode_clip(path, None, size=32, frames=frames)
            except VideoDecodeError:
                outcomes.append("failed")
                continue
            assert np.array_equal(clip.frames, clean[clip.frame_index]), (start, nbytes, frames, clip.note)
            outcomes.append("replaced" if clip.replaced.any() else "ok")
    assert len(outcomes) == 16 and (name == A001 or "replaced" in outcomes), outcomes
