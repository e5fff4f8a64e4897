"""`ntu-train predict`: a checkpoint on recordings outside any store gives what `eval` gives in one.

The recordings are real pipeline input (`write_corpus(..., videos=True)`: `.skeleton` files and
`_rgb.avi` videos); the runs are real `ntu-train fit` runs of one epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.train import main
from model.results.scores import read_scores
from ntu_pipeline.manifests import class_names
from ntu_pipeline.stages.rgb_options import RgbOptions
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus

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


RUNS = {"hcn": ("hcn", "16"), "ccdfarm": ("ccdfarm", "16"), "ccdfarm of all frames": ("ccdfarm", "all")}


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


@pytest.mark.parametrize("model_name", list(RUNS))
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
