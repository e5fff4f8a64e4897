"""Synthetic videos: they match their skeletons, and the twin classes make the modalities complementary
(object twins: one skeleton, told apart only in the video; depth twins: one video, told apart only by
the skeleton's depth). The oracles are nearest-centroid classifiers on simple features of one modality,
scored on held-out halves of 20 samples a class: one split swings by about +-0.1 (measured), so scores
are averaged over 100 random splits."""

from __future__ import annotations

from dataclasses import replace

import av
import cv2
import numpy as np
import pytest
from test_synth import motion_feature

from ntu_pipeline.sample_id import SampleId
from ntu_pipeline.synth.corpus import write_corpus
from ntu_pipeline.synth.scene import FPS, ClassMotion
from ntu_pipeline.synth.skeleton import (
    HELD_OBJECTS,
    PUSH_M,
    class_motion,
    sample_names,
    synth_sample,
    synth_scene,
    twin_classes,
)
from ntu_pipeline.synth.video import VIDEO_SIZE, render_frames, render_video

CROP = 64  # the side a CPU demo trains the RGB stream at


def decode(path) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB, every frame of the file."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def actors(scene):
    return [b for b in scene.bodies if b.kind == "actor"]


def person_box(scene, size=VIDEO_SIZE) -> tuple[float, float, float]:
    """(x0, y0, side) in video pixels: the square around every actor joint over the clip, plus 15%."""
    xy = np.concatenate([b.color_xy.reshape(-1, 2) for b in actors(scene)]) * (size[0] / 1920)
    lo, hi = xy.min(0), xy.max(0)
    side = 1.15 * (hi - lo).max()
    x0, y0 = (lo + hi) / 2 - side / 2
    return x0, y0, side


def crop(scene, frames: np.ndarray, side_px: int = CROP) -> np.ndarray:
    """(F, H, W, 3) -> (F, side_px, side_px, 3): the person-centred crop the RGB stage would take."""
    x0, y0, side = person_box(scene)
    k = side_px / side
    warp = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]])
    return np.stack([cv2.warpAffine(f, warp, (side_px, side_px), flags=cv2.INTER_AREA) for f in frames])


def test_video_matches_its_skeleton(tmp_path):
    name = next(n for n in sample_names(60, 6) if synth_sample(n, 6).bodies[0].first_frame > 0)
    scene = synth_sample(name, 6)
    path = render_video(scene, tmp_path / f"{name}_rgb.avi")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.codec_tag) == ("mpeg4", "DIVX")
        assert stream.average_rate == FPS and (stream.width, stream.height) == VIDEO_SIZE
    frames = decode(path)
    assert len(frames) == scene.num_frames
    first = min(b.first_frame for b in actors(scene))
    empty_room = next(render_frames(scene)).astype(int)  # frame 0 has no actor
    room = np.median(empty_room.reshape(-1, 3), axis=0)
    for f, frame in enumerate(frames):
        foreground = np.abs(frame.astype(int) - empty_room).sum(-1) > 60  # (H, W)
        if f < first:
            assert not foreground.any(), "an empty frame shows the empty room"
            continue
        ys, xs = np.nonzero(foreground)
        x0, y0, side = person_box(scene)
        inside = (xs >= x0) & (xs < x0 + side) & (ys >= y0) & (ys < y0 + side)
        assert inside.mean() > 0.99, f"frame {f}: the figure is where the skeleton says"
        for body in actors(scene):
            i = f - body.first_frame
            if 0 <= i < body.num_frames:
                hx, hy = np.round(body.color_xy[i, 3] * VIDEO_SIZE[0] / 1920).astype(int)  # the head
                assert np.abs(frame[hy, hx].astype(int) - room).sum() > 60, f"frame {f}: a head at the head"


def test_videos_are_pure_functions_and_sit_beside_the_skeletons(tmp_path):
    """Catches a corpus that depends on the run (or, written by parallel workers, on their number)."""
    paths = write_corpus(tmp_path / "a", 8, 4, seed=5, videos=True)
    again = write_corpus(tmp_path / "b", 8, 4, seed=5, videos=True, jobs=2)
    assert [p.relative_to(tmp_path / "a") for p in paths] == [p.relative_to(tmp_path / "b") for p in again]
    for path, other in zip(paths, again, strict=True):
        video = path.with_name(path.name.replace(".skeleton", "_rgb.avi"))
        assert path.read_bytes() == other.read_bytes()
        assert video.read_bytes() == other.with_name(video.name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").rglob("*.avi")) == sorted(
        p.name.replace(".skeleton", "_rgb.avi") for p in paths)
    write_corpus(tmp_path / "c", 8, 4, seed=5)
    assert not list((tmp_path / "c").rglob("*.avi")), "no videos unless asked"


def test_twin_classes_follow_the_documented_rule():
    assert twin_classes(6) == twin_classes(8) == {"object": (0, 1), "depth": (2, 3)}
    assert twin_classes(4) == {"object": (0, 1)}  # class 3 is a two-person class
    assert twin_classes(1) == {}
    for k in (2, 4, 6, 60, 120):
        assert class_motion(0, k).held == HELD_OBJECTS[0]
        assert class_motion(1, k) == replace(class_motion(0, k), held=HELD_OBJECTS[1])
    assert class_motion(3, 6) == replace(class_motion(2, 6), push_m=PUSH_M)
    assert class_motion(3, 4) == ClassMotion(3, "forward", 1.35, True)  # no depth twin at 4 classes
    assert class_motion(4, 6) == ClassMotion(4, "circle", 1.8, True)  # other classes keep their own


def test_object_twins_have_one_skeleton_and_two_videos():
    sid = SampleId.parse(sample_names(12, 6, seed=1)[0])
    red, blue = (synth_scene(sid, class_motion(label, 6), seed=1) for label in (0, 1))
    for a, b in zip(red.bodies, blue.bodies, strict=True):
        for field in ("joints", "color_xy", "depth_xy", "orientation", "tracking", "info"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    frames_red, frames_blue = np.stack(list(render_frames(red))), np.stack(list(render_frames(blue)))
    differ = np.any(frames_red != frames_blue, axis=-1)  # (F, H, W)
    assert differ.any() and differ.mean() < 0.01, "only the ball differs"
    assert frames_red[differ][:, 0].mean() > 150 > frames_blue[differ][:, 0].mean()


def test_depth_twins_have_one_video_and_two_skeletons():
    sid = SampleId.parse(sample_names(12, 6, seed=1)[2])
    still, pushing = (synth_scene(sid, class_motion(label, 6), seed=1) for label in (2, 3))
    (a,), (b,) = actors(still), actors(pushing)
    np.testing.assert_allclose(b.color_xy, a.color_xy, atol=1e-6)
    depth = a.joints[..., 2] - b.joints[..., 2]  # (F, 25) metres nearer the camera
    assert depth[:, [7, 11]].max() > 0.15 and np.abs(depth[:, [0, 1, 2, 3, 20]]).max() < 1e-9
    video = [np.stack(list(render_frames(scene))) for scene in (still, pushing)]
    np.testing.assert_array_equal(video[0], video[1])


def hand_reach(joints: np.ndarray) -> np.ndarray:
    """(F, 25, 3) -> (1,): how far both hands come towards the camera relative to the spine, summed."""
    z = joints[..., 2] - joints[:, 1:2, 2]  # (F, 25)
    return np.array([z[:, [7, 11]].min(axis=0).sum()])


def colour_balance(clip: np.ndarray) -> np.ndarray:
    """(F, S, S, 3) -> (1,): the share of saturated red pixels minus that of saturated blue ones."""
    r, g, b = np.moveaxis(clip.astype(int), -1, 0)
    return np.array([((r > 150) & (g < 90) & (b < 90)).mean() - ((b > 150) & (r < 90) & (g < 120)).mean()])


def motion_energy(clip: np.ndarray) -> np.ndarray:
    """(F, S, S, 3) -> (71,): where the image changes (an 8x8 map of mean absolute frame differences,
    grey levels, normalised) and how fast (the spectrum of the total change at 7 frequencies)."""
    grey = clip.astype(np.float32).mean(-1)  # (F, S, S)
    change = np.abs(np.diff(grey, axis=0))  # (F - 1, S, S)
    n = clip.shape[1] // 8
    where = change.reshape(len(change), 8, n, 8, n).mean(axis=(0, 2, 4)).ravel()
    energy = change.mean(axis=(1, 2))
    t = np.arange(len(energy)) / FPS
    hz = np.array([0.5, 0.75, 1.0, 1.5, 2.0, 2.75, 3.5])
    spectrum = np.abs(np.exp(-2j * np.pi * hz[:, None] * t) @ (energy - energy.mean()))
    return np.concatenate([where / where.sum(), 3 * spectrum / spectrum.sum()])


def nearest_centroid(features: dict, labels: dict, pair: tuple[int, int], splits: int = 100) -> float:
    """Held-out accuracy of a nearest-centroid classifier of the classes `pair` (features standardised
    on the train half), averaged over random halvings of each class."""
    names = [n for n in features if labels[n] in pair]
    X = np.array([features[n] for n in names])  # (n, d)
    y = np.array([labels[n] for n in names])
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(splits):
        is_train = np.zeros(len(y), bool)
        for c in pair:
            members = np.flatnonzero(y == c)
            is_train[rng.permutation(members)[:len(members) // 2]] = True
        Z = (X - X[is_train].mean(0)) / (X[is_train].std(0) + 1e-9)
        centroids = np.stack([Z[is_train & (y == c)].mean(0) for c in pair])
        predicted = np.array(pair)[np.argmin(((Z[~is_train, None] - centroids) ** 2).sum(-1), axis=1)]
        scores.append((predicted == y[~is_train]).mean())
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Classes 0-3 of a 6-class corpus, 20 samples each: per sample its label, its actor's joints
    (F, 25, 3) and the CROP-pixel person crop of its decoded video (F, CROP, CROP, 3)."""
    out = tmp_path_factory.mktemp("twins")
    names = [n for n in sample_names(6 * 20, 6, seed=3) if SampleId.parse(n).label < 4]
    labels, joints, clips = {}, {}, {}
    for name in names:
        scene = synth_sample(name, 6, seed=3)
        labels[name] = SampleId.parse(name).label
        joints[name] = actors(scene)[0].joints
        clips[name] = crop(scene, decode(render_video(scene, out / f"{name}_rgb.avi")))
    return labels, joints, clips


@pytest.mark.slow
def test_only_the_video_tells_the_object_twins_apart(twins):
    labels, joints, clips = twins
    skeleton = {n: motion_feature(j) for n, j in joints.items()}
    colour = {n: colour_balance(c) for n, c in clips.items()}
    assert nearest_centroid(skeleton, labels, (0, 2)) > 0.9, "the skeleton oracle works"
    assert nearest_centroid(skeleton, labels, (0, 1)) < 0.7, "one skeleton motion: near chance"
    assert nearest_centroid(colour, labels, (0, 1)) == 1.0, "the ball's colour survives the crop"
    assert nearest_centroid(colour, labels, (2, 3)) < 0.7, "colour alone is not a class cue"


@pytest.mark.slow
def test_only_the_skeleton_tells_the_depth_twins_apart(twins):
    labels, joints, clips = twins
    motion = {n: motion_energy(c) for n, c in clips.items()}
    reach = {n: hand_reach(j) for n, j in joints.items()}
    assert nearest_centroid(motion, labels, (0, 2)) > 0.85, "the video oracle works"
    assert nearest_centroid(motion, labels, (1, 3)) > 0.85
    assert nearest_centroid(motion, labels, (2, 3)) < 0.7, "one video: near chance"
    assert nearest_centroid(reach, labels, (2, 3)) > 0.95, "the depth tells them apart"
    assert nearest_centroid(reach, labels, (0, 1)) < 0.7
