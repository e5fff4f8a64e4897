"""`ntu-train predict`: a checkpoint on recordings outside any store gives what `eval` gives in one.

The recordings are real pipeline input (`write_corpus(..., videos=True)`: `.skeleton` files and
`_rgb.avi` videos); the runs are real `ntu-train fit` runs of one epoch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.train import main
from model.predict.sampling import frames_to_keep, sampled_skeleton
from model.results.scores import read_scores
from ntu_pipeline.manifests import class_names
from ntu_pipeline.skeleton.actors import select_actors
from ntu_pipeline.skeleton.parse import parse_skeleton_bytes
from ntu_pipeline.stages.rgb_options import RgbOptions
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus
from ntu_pipeline.synth.skeleton import synth_sample
from ntu_pipeline.synth.skeleton_text import format_skeleton
from ntu_pipeline.synth.video import render_video
from ntu_pipeline.video.timeline import sample_indices

FIT = ["--protocol", "xsub", "--epochs", "1", "--batch-size", "4", "--frames", "16", "--crop", "48",
       "--device", "cpu", "--workers", "0", "--warmup-epochs", "0", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest.py: why one thread


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """16 synthetic recordings of 2 classes, and their stores (xsub split) of 64 x 64 frames: "16" frames
    a sample (a 16-frame model takes them whole: its clips are views) and "all" (temporal clips)."""
    root = tmp_path_factory.mktemp("predict")
    write_corpus(root / "raw", 16, 2, seed=3, videos=True)
    stores = {}
    for frames in (16, None):
        store = stores[str(frames or "all")] = root / f"store{frames or 'all'}.zarr"
        extract(ExtractConfig(skeletons=root / "raw", videos=root / "raw", out=store, dataset="ntu60",
                              rgb_frames=frames, rgb_size=64, progress=False))
        make_split(open_store(store, mode="r+"), "xsub")
    return root / "raw", stores


RUNS = {"hcn": ("hcn", "16"), "i3d": ("i3d", "16"), "ccdfarm": ("ccdfarm", "16"),
        "ccdfarm of all frames": ("ccdfarm", "all")}  # i3d: for its crop (test_a_video_cropped_without...)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory) -> dict[str, Path]:
    """One-epoch runs (RUNS: model and store), each evaluated with 2 clips into <run>/eval."""
    _, stores = corpus
    root = tmp_path_factory.mktemp("predict_runs")
    out = {}
    for key, (model_name, store) in RUNS.items():
        out[key] = run = root / key.replace(" ", "_")
        result = invoke("fit", "--store", stores[store], "--model", model_name, "--out", run, *FIT)
        assert result.exit_code == 0, result.output
        result = invoke("eval", "--checkpoint", run / "best.pt", "--store", stores[store], "--protocol",
                        "xsub", "--clips", "2", "--out", run / "eval", "--device", "cpu", "--workers", "0")
        assert result.exit_code == 0, result.output
    return out


def own_recordings(raw: Path, names: list[str], folder: Path) -> dict[str, str]:
    """The recordings `names` copied into `folder` under names of the user's own: {own name: NTU name}."""
    folder.mkdir()
    own = {}
    for i, name in enumerate(names):
        (folder / f"take{i}.skeleton").write_bytes(next(raw.rglob(f"{name}.skeleton")).read_bytes())
        (folder / f"take{i}.avi").write_bytes(next(raw.rglob(f"{name}_rgb.avi")).read_bytes())
        own[f"take{i}"] = name
    return own


@pytest.mark.parametrize("model_name", ["hcn", "ccdfarm", "ccdfarm of all frames"])  # i3d: logits too alike
def test_predict_gives_the_logits_of_eval(corpus, runs, tmp_path, model_name):
    """Renamed copies of the test samples, predicted with 2 clips, get the logits that `eval --clips 2`
    saved for them (catches a preparation, a clip rule or a normalisation that differs from the store's:
    the ccdfarm cases include the JPEG round trip, the spatial views of a 16-frame store and the temporal
    clips of an all-frames one), and no true class (their names are not NTU's)."""
    raw, _ = corpus
    saved = read_scores(runs[model_name] / "eval" / "scores.npz")
    own = own_recordings(raw, list(saved.names[:5]), tmp_path / "mine")
    result = invoke("predict", "--checkpoint", runs[model_name] / "best.pt", "--skeleton", tmp_path / "mine",
                    "--video", tmp_path / "mine", "--clips", "2", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["name"] for line in lines] == sorted(own)
    row = {name: i for i, name in enumerate(saved.names)}
    assert np.ptp(saved.logits, axis=0).max() > 1e-5  # the samples' logits differ: the check below can fail
    for line in lines:
        expected = saved.logits[row[own[line["name"]]]]
        np.testing.assert_allclose(line["logits"], expected, rtol=0, atol=1e-6, err_msg=line["name"])
        probabilities = torch.softmax(torch.tensor(expected, dtype=torch.float64), 0)
        best = int(probabilities.argmax())
        top = [saved.class_names[best], pytest.approx(float(probabilities[best]), abs=1e-4)]
        assert line["top5"][0] == top
        assert len(line["top5"]) == 5 and line["true_class"] is None


def test_an_ntu_name_shows_its_true_class_and_the_picture(corpus, runs, tmp_path):
    """A file named like an NTU sample is shown with its class (the action of its name); --picture writes
    an image of what the model saw beside the bars (catches a picture that is not written or empty)."""
    raw, _ = corpus
    skeleton = next(raw.rglob("*A002.skeleton"))
    video = next(raw.rglob(skeleton.stem + "_rgb.avi"))
    for name, extra in (("hcn", []), ("ccdfarm", ["--video", video])):
        picture = tmp_path / f"{name}.png"
        result = invoke("predict", "--checkpoint", runs[name] / "best.pt", "--skeleton", skeleton, *extra,
                        "--picture", picture, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"{skeleton.stem}: ")
        assert f"(true class: {class_names('ntu60')[1]})" in result.stdout
        image = cv2.imread(str(picture))
        assert image is not None and image.shape[0] >= 150 and image.shape[1] > 360
        assert image[:, :-360].std() > 10  # the frames or the skeleton drawn, not a blank


def test_a_recording_without_the_files_the_model_needs_is_one_line(corpus, runs, tmp_path):
    """ccdfarm needs both files: a folder where one recording has no video predicts the others and names
    the one left out; a single skeleton alone is refused with exit 1; a damaged skeleton file says what
    the parser found (catches a traceback, a silent skip or a zero skeleton fed to the model)."""
    raw, _ = corpus
    names = [p.stem for p in sorted(raw.rglob("*.skeleton"))[:3]]
    own = own_recordings(raw, names, tmp_path / "mine")
    (tmp_path / "mine" / "take0.avi").unlink()
    checkpoint = runs["ccdfarm"] / "best.pt"
    result = invoke("predict", "--checkpoint", checkpoint, "--skeleton", tmp_path / "mine", "--video",
                    tmp_path / "mine", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["take1", "take2"]
    assert "not predicted: take0: ccdfarm needs the video, and none was given" in result.stderr
    assert len(own) == 3

    alone = invoke("predict", "--checkpoint", checkpoint, "--skeleton", tmp_path / "mine" / "take1.skeleton",
                   "--device", "cpu")
    assert alone.exit_code == 1
    assert alone.stderr.splitlines()[-1] == "Error: no recording could be predicted (1 given)"

    bad = tmp_path / "bad.skeleton"
    bad.write_text("3\nnot a skeleton file\n")
    damaged = invoke("predict", "--checkpoint", runs["hcn"] / "best.pt", "--skeleton", bad, "--device", "cpu")
    assert damaged.exit_code == 1
    first = damaged.stderr.splitlines()[0]
    assert first.startswith(f"not predicted: bad: skeleton failed: {bad}:")
    assert "Traceback" not in damaged.output
    assert "ntu-predict-" not in damaged.output  # the user's file is named, not the link the stages read


@pytest.mark.parametrize("options", [RgbOptions(), RgbOptions(frames=16, size=64, quality=75),
                                     RgbOptions(frames=None, size=48, codec="lz4")])
def test_a_recording_is_prepared_with_the_rgb_options_its_store_recorded(options):
    """`rgb_extract_options` maps a store's recorded RGB options (a checkpoint's `inputs["rgb"]`) onto the
    extract run that prepares a recording: that run records them again, unchanged (catches a field
    dropped, `frames: all` or lz4 read back as something else)."""
    from model.predict.recordings import rgb_extract_options

    fields = rgb_extract_options(options.record())
    config = ExtractConfig(videos=Path("videos"), out=Path("out.zarr"), **fields)
    assert config.rgb_options == options and config.rgb_options.record() == options.record()
    assert rgb_extract_options({}) == {}


# --- recordings longer than a store holds, crops without a person box -----------------------------------

def long_scene(name: str, repeats: int):
    """The synthetic scene of `name` (2 classes, seed 3) with its actors' motion played `repeats` times
    over: a recording of repeats x its frames, with a one-frame noise body where the scene has one."""
    scene = synth_sample(name, 2, 3)
    fields = ("joints", "color_xy", "depth_xy", "orientation", "tracking", "info")
    bodies = tuple(dataclasses.replace(b, **{f: np.concatenate([getattr(b, f)] * repeats) for f in fields})
                   if b.kind == "actor" else b for b in scene.bodies)
    frames = max(b.first_frame + len(b.joints) for b in bodies)
    return dataclasses.replace(scene, bodies=bodies, num_frames=frames)


@pytest.mark.parametrize("rgb, rgb_frames", [(False, None), (True, 32), (True, None)])
@pytest.mark.parametrize("crlf", [False, True])
def test_a_long_skeleton_is_sampled_to_the_frames_a_store_holds(rgb, rgb_frames, crlf):
    """A 465-frame skeleton (the store holds 300): the frames kept are at most 300 of those with an actor
    (skeleton models: evenly spread; RGB of 32 stored frames: the 32 the video's clip takes among them;
    RGB of every frame: those of the first 300); the sampled file parses to the same frame count, every
    other frame empty, each kept frame's actor rows exactly the original's, the noise body gone, and the
    same actors chosen (catches renumbered frames, a frame count that drifts, numbers rewritten)."""
    scene = dataclasses.replace(long_scene("S007C001P030R001A001", 5), crlf=crlf)
    data = format_skeleton(scene).encode("ascii")
    record = parse_skeleton_bytes(data, "long")
    actors = select_actors(record)
    assert actors.num_frames == 465 and len({int(i) for i in record.body_id}) == 2  # an actor and noise
    frames, note = frames_to_keep(actors.frame_index, record.num_frames, rgb, rgb_frames)
    assert note.startswith("465 frames with an actor, more than the 300 a store holds: kept ")
    assert np.array_equal(frames, np.unique(frames)) and np.isin(frames, actors.frame_index).all()
    if rgb and rgb_frames is None:
        assert np.array_equal(frames, np.arange(300))
    else:
        assert len(frames) == 300 and np.diff(frames).max() <= 2  # evenly spread over the 465
    if rgb_frames is not None:
        assert np.isin(sample_indices(record.num_frames, rgb_frames), frames).all()

    sampled = parse_skeleton_bytes(sampled_skeleton(data, frames, set(actors.actor_ids[0])), "sampled")
    assert sampled.num_frames == record.num_frames
    assert np.array_equal(np.flatnonzero(sampled.bodies_per_frame), frames)
    rows = np.flatnonzero(np.isin(record.frame, frames) & (record.body_id == actors.actor_ids[0][0]))
    assert np.array_equal(sampled.joints, record.joints[rows])
    assert np.array_equal(sampled.body_info, record.body_info[rows])
    assert np.array_equal(select_actors(sampled).frame_index, frames)
    assert (b"\r\n" in sampled_skeleton(data, frames, set(actors.actor_ids[0]))) == crlf


@pytest.mark.parametrize("model_name", ["hcn", "ccdfarm", "ccdfarm of all frames"])
def test_a_recording_longer_than_a_store_holds_is_predicted_and_says_so(runs, tmp_path, model_name):
    """A 465-frame recording (skeleton and video) was refused ("465 frames kept; the store holds at most
    300"): now it is predicted from its sampled frames, with one note saying how they were chosen, and,
    for the fused models, none saying that a video frame was left without its skeleton."""
    scene = long_scene("S007C001P030R001A001", 5)
    (tmp_path / "long.skeleton").write_bytes(format_skeleton(scene).encode("ascii"))
    render_video(scene, tmp_path / "long.avi", (160, 90))
    result = invoke("predict", "--checkpoint", runs[model_name] / "best.pt", "--skeleton",
                    tmp_path / "long.skeleton", "--video", tmp_path / "long.avi", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("long: ") and len(result.stdout.splitlines()) == 1
    kept = {"hcn": "kept 300 evenly spread over them",
            "ccdfarm": "kept the 16 its video's clip takes and 284 more evenly spread",
            "ccdfarm of all frames": "kept those among its first 300 frames"}[model_name]
    notes = result.stderr.splitlines()
    assert len(notes) == 1, result.stderr
    said = "note: long: 465 frames with an actor, more than the 300 a store holds: "
    assert notes[0].startswith(said + kept)


def test_a_video_cropped_without_its_person_box_says_so(corpus, runs, tmp_path):
    """i3d given a bare video crops the centred square of its frames where it was trained on crops around
    the person: a note says so (it was silent); given the skeleton too, the person box is used, and the
    note is gone."""
    raw, _ = corpus
    own = own_recordings(raw, [p.stem for p in sorted(raw.rglob("*.skeleton"))[:1]], tmp_path / "mine")
    checkpoint = runs["i3d"] / "best.pt"
    bare = invoke("predict", "--checkpoint", checkpoint, "--video", tmp_path / "mine" / "take0.avi",
                  "--device", "cpu")
    assert bare.exit_code == 0, bare.output
    assert bare.stdout.startswith("take0: ") and bare.stderr.splitlines() == [
        "note: take0: the video was cropped to the centred square of its frames (no skeleton given), where "
        "the model was trained on crops around the person (its skeleton's box); give --skeleton for that "
        "crop"]
    both = invoke("predict", "--checkpoint", checkpoint, "--video", tmp_path / "mine" / "take0.avi",
                  "--skeleton", tmp_path / "mine" / "take0.skeleton", "--json", "--device", "cpu")
    assert both.exit_code == 0 and both.stderr == "", both.output
    assert json.loads(both.stdout)["notes"] == [] and len(own) == 1


def test_a_long_video_longer_than_its_skeleton_says_which_frames_lack_theirs(runs, tmp_path):
    """The skeleton of a long recording keeps the frames its video's clip takes, counted from the skeleton
    file's length; a video of 20 frames more has its clip elsewhere: a note says how many of its frames
    the fused model sees without the actor (catches zeros fed silently)."""
    scene = long_scene("S007C001P030R001A001", 5)
    (tmp_path / "long.skeleton").write_bytes(format_skeleton(scene).encode("ascii"))
    longer = dataclasses.replace(scene, num_frames=scene.num_frames + 20)  # 20 frames with no one in them
    render_video(longer, tmp_path / "long.avi", (160, 90))
    result = invoke("predict", "--checkpoint", runs["ccdfarm"] / "best.pt", "--skeleton",
                    tmp_path / "long.skeleton", "--video", tmp_path / "long.avi", "--device", "cpu")
    assert result.exit_code == 0, result.output
    clip = sample_indices(485, 16)
    lost = np.setdiff1d(clip[clip < 465], frames_to_keep(np.arange(465), 465, True, 16)[0])
    assert len(lost) > 0
    assert result.stderr.splitlines()[1] == (
        f"note: long: {len(lost)} of the 16 video frames kept have no skeleton frame prepared (the video has "
        "485 frames, its skeleton file 465): the model sees no actor there")


def test_a_long_video_in_a_store_of_every_frame_says_it_kept_the_first(runs, tmp_path):
    """A store of every frame holds a video's first 300 (extract's rule, noted in the store): a 465-frame
    video predicted with such a model says so (it was silent: the rest of the recording unseen)."""
    scene = synth_sample("S007C001P030R001A001", 2, 3)
    (tmp_path / "long.skeleton").write_bytes(format_skeleton(scene).encode("ascii"))
    render_video(long_scene("S007C001P030R001A001", 5), tmp_path / "long.avi", (160, 90))
    result = invoke("predict", "--checkpoint", runs["ccdfarm of all frames"] / "best.pt", "--skeleton",
                    tmp_path / "long.skeleton", "--video", tmp_path / "long.avi", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == ["note: long: the video has 465 frames, more than the 300 a store "
                                          "holds: kept its first 300, as a store of every frame does"]
