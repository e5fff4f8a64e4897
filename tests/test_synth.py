"""The synthetic corpus: deterministic, in the exact NTU text format, noisy where it should be, learnable."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zlib
from collections import Counter

import numpy as np
import pytest

from ntu_pipeline.manifests import get_protocol
from ntu_pipeline.sample_id import SampleId
from ntu_pipeline.synth.corpus import write_corpus
from ntu_pipeline.synth.scene import COLOR_CAMERA, DEPTH_CAMERA
from ntu_pipeline.synth.skeleton import class_motion, sample_names, synth_sample
from ntu_pipeline.synth.skeleton_text import format_skeleton

NUM_SAMPLES, NUM_CLASSES = 60, 6
TWO_PERSON = {5, 6}  # the last 6 // 3 actions


def read_plain(data: bytes):
    """An independent reading of a .skeleton file: (frames, crlf), frames[f] a list of
    (bodyID int, 9 body numbers, 25 x 12 joint numbers). Asserts the layout line by line."""
    text = data.decode("ascii")
    crlf = "\r\n" in text
    lines = text.split("\r\n" if crlf else "\n")
    assert lines[-1] == "", "the file ends with a line end"
    lines = lines[:-1]
    assert not any("\r" in line for line in lines), "line ends are not mixed"
    pos = 0

    def take(n_fields):
        nonlocal pos
        tokens = lines[pos].split(" ")
        assert len(tokens) == n_fields, (pos + 1, lines[pos])
        pos += 1
        return tokens

    (num_frames,) = take(1)
    frames = []
    for _ in range(int(num_frames)):
        (count,) = take(1)
        bodies = []
        for _ in range(int(count)):
            body = take(10)
            assert all(body[k].isdigit() for k in (0, 1, 2, 3, 4, 5, 6, 9)), body
            assert take(1) == ["25"]
            joints = [take(12) for _ in range(25)]
            assert all(j[11] in ("0", "1", "2") for j in joints)
            bodies.append((int(body[0]), [float(v) for v in body[1:]],
                           np.array([[float(v) for v in j] for j in joints])))
        frames.append(bodies)
    assert pos == len(lines), "nothing after the last frame"
    return frames, crlf


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(paths, scenes, plain readings) of a 60-sample, 6-class corpus."""
    out = tmp_path_factory.mktemp("synth")
    paths = write_corpus(out / "raw", NUM_SAMPLES, NUM_CLASSES, seed=0)
    scenes = [synth_sample(p.name.removesuffix(".skeleton"), NUM_CLASSES, seed=0) for p in paths]
    plain = [read_plain(p.read_bytes()) for p in paths]
    return paths, scenes, plain


def test_same_arguments_same_text_other_seed_other_text():
    """The names and a sample's text are pure functions of their arguments: the same in another process
    with another hash seed, after calls with other arguments and with the global generators moved (any
    global, cached or set-ordered state would change them); another seed gives others."""
    names = sample_names(12, 6, seed=0)
    text = format_skeleton(synth_sample(names[4], 6, seed=0))
    code = ("import zlib; from ntu_pipeline.synth.skeleton import sample_names, synth_sample; "
            "from ntu_pipeline.synth.skeleton_text import format_skeleton; "
            "names = sample_names(12, 6, seed=0); text = format_skeleton(synth_sample(names[4], 6, seed=0)); "
            "print(zlib.crc32(text.encode()), ' '.join(names))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.split()
    assert other == [str(zlib.crc32(text.encode())), *names]
    state = random.getstate(), np.random.get_state()
    try:
        random.seed(1)
        np.random.seed(1)
        synth_sample(sample_names(12, 6, seed=1)[3], 6, seed=1)
        assert sample_names(12, 6, seed=0) == names
        assert format_skeleton(synth_sample(names[4], 6, seed=0)) == text
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    assert format_skeleton(synth_sample(names[4], 6, seed=1)) != text
    assert sample_names(12, 6, seed=1) != names


def test_names_are_valid_balanced_and_cover_both_protocols():
    names = sample_names(NUM_SAMPLES, NUM_CLASSES)
    assert names == sorted(set(names)) and len(names) == NUM_SAMPLES
    ids = [SampleId.parse(n) for n in names]
    assert all(1 <= s.setup <= 17 and 1 <= s.camera <= 3 and 1 <= s.performer <= 40
               and 1 <= s.replication <= 2 for s in ids)
    assert Counter(s.action for s in ids) == {a: 10 for a in range(1, 7)}
    assert len({s.setup for s in ids}) > 5 and {s.camera for s in ids} == {1, 2, 3}
    for protocol, field in (("xsub", "performer"), ("xview", "camera")):
        is_train = get_protocol(protocol).is_train
        for action in range(1, 7):
            splits = {bool(is_train(getattr(s, field))) for s in ids if s.action == action}
            assert splits == {True, False}, (protocol, action)
    assert max(Counter(SampleId.parse(n).action for n in sample_names(13, 6)).values()) == 3


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_classes"):
        sample_names(10, 0)
    with pytest.raises(ValueError, match="num_classes"):
        sample_names(10, 121)
    with pytest.raises(ValueError, match="class label"):
        synth_sample("S001C001P001R001A007", num_classes=6)


def test_files_follow_the_format_and_match_the_scene(corpus):
    paths, scenes, plain = corpus
    assert len({p.parent for p in paths}) > 1, "files are spread over subfolders"
    for scene, (frames, crlf) in zip(scenes, plain, strict=True):
        assert crlf == scene.crlf and len(frames) == scene.num_frames
        assert [len(b) for b in frames] == scene.bodies_per_frame().tolist()
        for body in scene.bodies:
            rows = [next(j for i, _, j in frames[body.first_frame + k] if i == body.body_id)
                    for k in range(body.num_frames)]
            joints = np.stack(rows)  # (F_b, 25, 12)
            np.testing.assert_allclose(joints[..., :3], body.joints, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(joints[..., 5:7], body.color_xy, rtol=1e-6)
            np.testing.assert_array_equal(joints[..., 11], body.tracking)


def test_body_ids_are_kinect_sized_and_exact(corpus):
    _, scenes, plain = corpus
    for scene, (frames, _) in zip(scenes, plain, strict=True):
        ids = {i for bodies in frames for i, _, _ in bodies}
        assert ids == {b.body_id for b in scene.bodies}
        assert all(i > 2**53 for i in ids)
        assert max(ids) - min(ids) < 1000, "bodies of a file differ only in the last digits"


def test_corpus_has_crlf_and_lf_files_empty_frames_and_noise_bodies(corpus):
    paths, scenes, plain = corpus
    raw = [p.read_bytes() for p in paths]
    assert 0 < sum(b"\r\n" in data for data in raw) < len(raw) // 2
    assert all(b"\r" not in data for data, (_, crlf) in zip(raw, plain, strict=True) if not crlf)
    assert sum(any(len(b) == 0 for b in frames) for frames, _ in plain) >= 3
    tracked = [Counter(i for bodies in frames for i, _, _ in bodies) for frames, _ in plain]
    assert sum(min(t.values()) <= 11 for t in tracked) >= 3, "short noise bodies"
    wide = [b for s in scenes for b in s.bodies if b.kind == "wide"]
    assert len(wide) >= 2
    for body in wide + [b for s in scenes for b in s.bodies if b.kind == "actor"]:
        spread = np.ptp(body.joints, axis=1)  # (F_b, 3)
        ratio = np.mean(spread[:, 0] > 0.8 * spread[:, 1])
        assert ratio >= 0.7 if body.kind == "wide" else ratio < 0.5, (body.kind, ratio)
        assert body.num_frames >= 12


def test_two_person_classes_have_two_long_bodies(corpus):
    _, scenes, plain = corpus
    assert {label + 1 for label in range(6) if class_motion(label, 6).two_person} == TWO_PERSON
    for scene, (frames, _) in zip(scenes, plain, strict=True):
        actors = [b for b in scene.bodies if b.kind == "actor"]
        want = 2 if SampleId.parse(scene.name).action in TWO_PERSON else 1
        assert len(actors) == want, scene.name
        tracked = Counter(i for bodies in frames for i, _, _ in bodies)
        assert all(tracked[b.body_id] >= 30 for b in actors)
        if want == 2:
            both = sum({b.body_id for b in actors} <= {i for i, _, _ in bodies} for bodies in frames)
            assert both >= 30, "the two actors are seen together"
            gap = np.linalg.norm(actors[0].joints[-1, 0] - actors[1].joints[-1, 0])
            assert 0.5 < gap < 2.5


def test_projections_use_the_documented_intrinsics(corpus):
    _, scenes, _ = corpus
    for body in [b for s in scenes for b in s.bodies]:
        x, y, z = np.moveaxis(body.joints, -1, 0)
        np.testing.assert_allclose(body.color_xy[..., 0], 960.0 + 1058.0 * (x + 0.056) / z)
        np.testing.assert_allclose(body.color_xy[..., 1], 568.0 - 1056.0 * y / z)
        np.testing.assert_allclose(body.depth_xy, np.stack([256 + 368 * x / z, 208 - 367 * y / z], -1))
    actors = np.concatenate([b.joints.reshape(-1, 3) for s in scenes for b in s.bodies if b.kind == "actor"])
    assert 1.8 < actors[:, 2].min() and actors[:, 2].max() < 4.6


def test_intrinsics_reproduce_the_real_files(ntu_samples):
    from ntu_pipeline.skeleton.parse import parse_skeleton

    for path in sorted((ntu_samples / "skeletons").glob("*.skeleton")):
        joints = parse_skeleton(path).joints  # (R, 25, 12)
        assert np.abs(COLOR_CAMERA.project(joints[..., :3]) - joints[..., 5:7]).max() < 4, path.name
        assert np.abs(DEPTH_CAMERA.project(joints[..., :3]) - joints[..., 3:5]).max() < 1.5, path.name


def test_round_trip_through_the_parser_and_the_denoiser(corpus):
    from ntu_pipeline.skeleton.actors import select_actors
    from ntu_pipeline.skeleton.parse import parse_skeleton

    paths, scenes, _ = corpus
    for path, scene in zip(paths, scenes, strict=True):
        record = parse_skeleton(path)
        assert record.num_frames == scene.num_frames
        np.testing.assert_array_equal(record.bodies_per_frame, scene.bodies_per_frame())
        for body in scene.bodies:
            rows = record.body_id == np.uint64(body.body_id)
            assert rows.sum() == body.num_frames
            assert record.frame[rows][0] == body.first_frame
            fields = np.concatenate([body.joints, body.depth_xy, body.color_xy, body.orientation,
                                     body.tracking[..., None]], axis=-1)  # (F_b, 25, 12)
            np.testing.assert_allclose(record.joints[rows], fields, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(record.body_info[rows], body.info, rtol=1e-6, atol=1e-6)
        actors = select_actors(record)
        kept = sorted(actors.actor_ids[0] + actors.actor_ids[1])
        assert kept == sorted(b.body_id for b in scene.bodies if b.kind == "actor"), path.name


def motion_feature(joints: np.ndarray) -> np.ndarray:
    """(F, 25, 3) -> (48,): per joint but the spine base, spread and mean speed around the spine base,
    in body sizes. Both are unchanged by turning the body, so the view does not matter."""
    rel = joints[:, 1:] - joints[:, :1]  # (F, 24, 3)
    size = np.linalg.norm(rel[:, 2], axis=-1).mean()  # spine base to head
    spread = np.sqrt(rel.var(axis=0).sum(-1))
    speed = np.linalg.norm(np.diff(rel, axis=0), axis=-1).mean(axis=0)
    return np.concatenate([spread, speed]) / size


def test_class_is_learnable_by_nearest_centroid_across_performers():
    """From the skeleton alone. The object twins (classes 0 and 1) share one skeleton motion by design
    (only the video tells them apart: tests/test_synth_video.py), so they count as one class here."""
    num_classes = 8
    names = sample_names(128, num_classes, seed=7)
    features, labels, train = [], [], []
    for name in names:
        scene = synth_sample(name, num_classes, seed=7)
        features.append(motion_feature(next(b for b in scene.bodies if b.kind == "actor").joints))
        sid = SampleId.parse(name)
        labels.append(0 if sid.label == 1 else sid.label)  # the object twins merged
        train.append(bool(get_protocol("xsub").is_train(sid.performer)))
    X, y, train = np.array(features), np.array(labels), np.array(train)
    X = (X - X[train].mean(0)) / X[train].std(0)
    classes = np.unique(y)  # 7 skeleton classes
    centroids = np.stack([X[train & (y == c)].mean(0) for c in classes])
    predicted = classes[np.argmin(((X[~train, None] - centroids) ** 2).sum(-1), axis=1)]
    accuracy = (predicted == y[~train]).mean()
    assert accuracy > 0.85, f"held-out accuracy {accuracy:.2f}, chance {1 / len(classes):.2f}"
