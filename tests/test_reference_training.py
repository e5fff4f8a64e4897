"""`ntu-train` with the field's reference models (ctrgcn, posec3d, slowonly, rgbpose): their recipes (the
released configs), CTR-GCN's four streams and their ensemble, the PYSKL test (probabilities averaged,
PoseC3D's flip test), fit / eval / predict on stores made by `extract`, DDP, and learning.

The stores are synthetic (tests/training.py, test_train_rgb.py); the sizes are the options' smallest
that the networks take (--frames, --crop, --heatmap-size), so each run is seconds on one CPU thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_train_rgb import video_store
from training import build_store

from cli.train import main
from model.data.pyskl_sampling import flip_heatmaps
from model.data.split import Batch
from model.training.config import TrainConfig
from model.training.epoch import learning_rate
from model.training.evaluate import predict
from model.training.recipes import RECIPES, Recipe
from model.training.runtime import Runtime
from ntu_pipeline.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: why one thread
REPO = Path(__file__).resolve().parents[1]
CPU = ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0", "--quiet"]
# the smallest clips each network takes (rgbpose's heatmaps follow --frames x 4 and --crop / 4)
TINY = {"posec3d": ["--frames", "8", "--heatmap-size", "16", "--heatmap-test-size", "16"],
        "ctrgcn": ["--frames", "8"],
        "slowonly": ["--frames", "4", "--crop", "32"],
        "rgbpose": ["--frames", "4", "--crop", "32"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def rgb_store(root) -> Path:
    """24 samples of 3 classes, skeletons and 32 RGB frames of 40 x 40."""
    return video_store(root, "rgb.zarr", 24, 3, 32, 40)


@pytest.fixture(scope="module")
def skeleton_store(root) -> Path:
    """A skeleton-only store (no RGB stage: what `extract --no-rgb` makes), 48 samples of 3 classes."""
    return build_store(root, samples=48, classes=3)


def fit(store: Path, model: str, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(main, ["fit", "--store", str(store), "--protocol", "xsub", "--model", model,
                                       "--out", str(out), *CPU, *TINY[model], *extra])
    assert result.exit_code == 0, result.output
    return result.output


def evaluate(store: Path, run: Path, *extra: str) -> str:
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(run / "last.pt"), "--store", str(store),
                                       "--protocol", "xsub", "--device", "cpu", "--workers", "0", "--quiet",
                                       *extra])
    assert result.exit_code == 0, result.output
    return result.output


# --- recipes ------------------------------------------------------------------------------------------

def test_the_step_schedule_multiplies_at_each_milestone_epoch_after_the_warm_up():
    """Catches milestones counted from the end of the warm-up, or by steps: CTR-GCN's rate is x0.1 from
    epoch 35 and x0.01 from 55 (0-based epochs), its 5 warm-up epochs linear to the base."""
    rate = [learning_rate(step, 650, 50, 0.1, "step", 0.1, 10, (35, 55)) for step in range(650)]
    assert rate[0] == pytest.approx(0.1 / 50) and rate[49] == pytest.approx(0.1)
    assert rate[50] == rate[349] == pytest.approx(0.1)
    assert rate[350] == rate[549] == pytest.approx(0.01)
    assert rate[550] == rate[649] == pytest.approx(0.001)
    # RGBPose's: no warm-up, x0.1 at 12 and 16 of 20
    assert [learning_rate(e * 3, 60, 0, 1.0, "step", 0.1, 3, (12, 16)) for e in (11, 12, 15, 16)] == \
        pytest.approx([1.0, 0.1, 0.1, 0.01])


RECIPE_LINES = {
    "posec3d": "recipe for posec3d (PYSKL configs/posec3d/slowonly_r50_ntu60_xsub/joint.py: 0.4 at batch "
               "256; its 24 epochs of a 10x RepeatDataset are 240 passes here): SGD momentum 0.9, lr 0.4 at "
               "batch 256 (0.05 at 32), weight decay 0.0003, 0 warm-up epochs, cosine annealing, 240 epochs, "
               "gradient norm clip 40",
    "slowonly": "recipe for slowonly (PYSKL configs/rgbpose_conv3d/rgb_only.py: 0.15 at batch 96; its 18 "
                "epochs of a 10x RepeatDataset are 180 passes here): SGD momentum 0.9, lr 0.15 at batch 96 "
                "(0.05 at 32), weight decay 0.0001, 0 warm-up epochs, cosine annealing, 180 epochs, gradient "
                "norm clip 40",
    "rgbpose": "recipe for rgbpose (PYSKL configs/rgbpose_conv3d/rgbpose_conv3d.py: 0.0075 at batch 48, "
               "started from a posec3d and a slowonly run (--init-from)): SGD momentum 0.9, lr 0.0075 at "
               "batch 48 (0.005 at 32), weight decay 0.0001, 0 warm-up epochs, x0.1 at epochs 12, 16, 20 "
               "epochs, gradient norm clip 40",
    "ctrgcn": "recipe for ctrgcn (CTR-GCN config/nturgbd-cross-subject/default.yaml: 0.1 at batch 64): SGD "
              "momentum 0.9 Nesterov, lr 0.1 at batch 64 (0.05 at 32), weight decay 0.0004, 5 warm-up "
              "epochs, x0.1 at epochs 35, 55, 65 epochs, gradient norm clip 0",
}


@pytest.mark.parametrize("model", sorted(RECIPE_LINES))
def test_each_reference_model_prints_its_released_config(model):
    """Catches a reference model trained with CC-DFARM's recipe ("has no recipe of its own here"), or a
    config value (lr per batch, weight decay, schedule, epochs x repeat, clip, Nesterov) not the
    released one."""
    config = TrainConfig.from_options(store="s", protocol="xsub", model=model, out="o", device="cpu")
    assert config.describe_recipe() == RECIPE_LINES[model]


def test_the_step_schedule_and_nesterov_are_options_and_refused_where_they_cannot_work():
    """Catches --milestones not reaching the recipe, a step schedule without milestones, milestones of
    another schedule (CTR-GCN's dropped when --schedule cosine is asked), Nesterov with Adam."""
    config = TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", device="cpu",
                                      schedule="step", milestones=(3, 5), nesterov=False)
    assert (config.recipe.schedule, config.recipe.milestones) == ("step", (3, 5))
    cosine = TrainConfig.from_options(store="s", protocol="xsub", model="ctrgcn", out="o", schedule="cosine")
    assert cosine.recipe.milestones == () and "changed: schedule, milestones" in cosine.describe_recipe()
    with pytest.raises(ConfigError, match="needs milestones"):
        TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", schedule="step")
    with pytest.raises(ConfigError, match="nesterov needs SGD"):
        TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", nesterov=True)
    # a config.json written before the fields reads as it ran
    old = {k: v for k, v in vars(RECIPES["hcn"]).items() if k not in ("milestones", "nesterov")}
    assert Recipe(**old) == RECIPES["hcn"]
    result = CliRunner().invoke(main, ["fit", "--store", ".", "--protocol", "xsub", "--model", "hcn", "--out",
                                       "o", "--schedule", "step", "--milestones", "3,x"])
    assert result.exit_code == 2 and "--milestones takes epochs" in result.output, result.output


# --- the PYSKL test: probabilities, the flip -----------------------------------------------------------

class _Heatmaps:
    """A split of two batches of heatmaps, as `predict` reads it."""

    class spec:  # noqa: N801 - what SplitData.spec answers
        heatmaps = True

    def __init__(self, heatmaps: torch.Tensor):
        self.heatmaps = heatmaps

    def batches(self, epoch, batch_size, train, clip=0, clips=1):
        for start in range(0, len(self.heatmaps), batch_size):
            part = self.heatmaps[start:start + batch_size]
            yield Batch(None, None, None, torch.zeros(len(part), dtype=torch.int64),
                        torch.arange(start, start + len(part)), heatmaps=part)


class _Net(torch.nn.Module):
    def __init__(self, features: int):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(features, 3)

    def forward(self, rgb=None, skeleton=None, motion=None, heatmaps=None):
        return {"logits": self.fc(heatmaps.flatten(1))}


def test_the_flip_test_changes_nothing_for_a_mirror_symmetric_input_and_averages_otherwise():
    """Catches the mirror not averaged in, mirrored without swapping the joints, or the probabilities'
    mean not what `--average prob` gives."""
    torch.manual_seed(1)
    x = torch.rand(4, 25, 2, 6, 6)  # (B, V, T, H, W)
    symmetric = x + flip_heatmaps(x)
    net, runtime = _Net(25 * 2 * 6 * 6), Runtime(torch.device("cpu"))
    for average in ("logits", "prob"):
        plain, _ = predict(net, _Heatmaps(symmetric), 3, runtime, average=average)
        flipped, _ = predict(net, _Heatmaps(symmetric), 3, runtime, average=average, flip_test=True)
        torch.testing.assert_close(flipped, plain)
    both, _ = predict(net, _Heatmaps(x), 3, runtime, average="prob", flip_test=True)
    with torch.no_grad():
        one, other = net(heatmaps=x)["logits"], net(heatmaps=flip_heatmaps(x))["logits"]
    torch.testing.assert_close(both, ((one.softmax(1) + other.softmax(1)) / 2).log())
    logits, _ = predict(net, _Heatmaps(x), 3, runtime, flip_test=True)
    torch.testing.assert_close(logits, (one + other) / 2)
    assert not torch.allclose(logits, predict(net, _Heatmaps(x), 3, runtime)[0])


def test_the_pyskl_models_test_as_pyskl_does_and_the_others_as_before():
    """Catches posec3d tested without its flip or on averaged logits, or an existing model's test
    changed (its numbers are the README's)."""
    config = {m: TrainConfig.from_options(store="s", protocol="xsub", model=m, out="o", device="cpu").run
              for m in ("posec3d", "slowonly", "rgbpose", "ctrgcn", "hcn", "ccdfarm")}
    assert [(config[m].test_average, config[m].flip_test) for m in config] == [
        ("prob", True), ("prob", False), ("prob", False), ("logits", False), ("logits", False),
        ("logits", False)]
    with pytest.raises(ConfigError, match="flip test"):
        TrainConfig.from_options(store="s", protocol="xsub", model="ctrgcn", out="o", flip_test=True)


# --- fit, eval, predict, summary ----------------------------------------------------------------------

@pytest.mark.parametrize("model", ["posec3d", "ctrgcn", "slowonly", "rgbpose"])
def test_fit_and_eval_run_each_reference_model_on_an_extracted_store(model, rgb_store, root):
    """Catches a reference model that cannot train (its heatmaps not passed to the network), evaluate
    or record its test: one epoch, then `eval` with the run's test and with the other average."""
    run = root / f"fit_{model}"
    output = fit(rgb_store, model, run)
    assert output.startswith(RECIPE_LINES[model].split(":")[0]), output
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["average"], metrics["flip_test"]) == (("prob", model == "posec3d") if model != "ctrgcn"
                                                          else ("logits", False))
    assert f"{model} xsub: test top1 {metrics['top1']:.4f}" in evaluate(rgb_store, run)
    assert json.loads((run / "metrics.json").read_text())["top1"] == metrics["top1"]
    out = root / f"eval_{model}"
    evaluate(rgb_store, run, "--average", "logits", "--out", str(out))
    logits = json.loads((out / "metrics.json").read_text())
    assert logits["average"] == "logits" and logits["top1"] == metrics["top1"] or model == "posec3d"


def test_posec3d_trains_evaluates_and_predicts_from_a_skeleton_only_store(skeleton_store, root):
    """Catches heatmaps asking for the RGB stage (a `--no-rgb` store refused) at fit, eval or predict."""
    run = root / "posec3d_skeletons"
    fit(skeleton_store, "posec3d", run)
    evaluate(skeleton_store, run, "--no-flip-test")
    skeleton = next((root / "raw48_3_0").rglob("*.skeleton"))
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(run / "last.pt"), "--skeleton",
                                       str(skeleton), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert "needs the" not in result.output, result.output


def test_ctrgcn_streams_are_recorded_named_and_ensembled(skeleton_store, root):
    """Catches --stream not reaching the clip or the checkpoint (eval on the joints of a bone run), the
    summary not telling the four runs apart, and `ensemble` refusing them."""
    runs = []
    for stream in ("joint", "bone", "joint_motion", "bone_motion"):
        run = root / f"ctrgcn_{stream}"
        fit(skeleton_store, "ctrgcn", run, "--stream", stream)
        assert json.loads((run / "config.json").read_text())["data"]["clip"]["stream"] == stream
        saved = torch.load(run / "last.pt", weights_only=True)
        assert saved["config"]["data"]["clip"]["stream"] == stream
        out = root / f"eval_{stream}"
        evaluate(skeleton_store, run, "--out", str(out))
        assert json.loads((out / "metrics.json").read_text())["stream"] == stream
        runs.append(run)
    hcn = root / "hcn_beside"
    result = CliRunner().invoke(main, ["fit", "--store", str(skeleton_store), "--protocol", "xsub", "--model",
                                       "hcn", "--out", str(hcn), *CPU, "--frames", "16"])
    assert result.exit_code == 0, result.output
    summary = CliRunner().invoke(main, ["summary", *map(str, runs), str(hcn)])
    assert summary.exit_code == 0, summary.output
    assert " hcn " in summary.output
    for stream in ("joint", "bone", "joint_motion", "bone_motion"):
        assert f"ctrgcn/{stream} " in summary.output
    ensemble = CliRunner().invoke(main, ["ensemble", *map(str, runs), "--out", str(root / "late")])
    assert ensemble.exit_code == 0, ensemble.output
    assert json.loads((root / "late" / "metrics.json").read_text())["num_samples"] > 0


def test_rgbpose_starts_its_pathways_from_a_posec3d_and_a_slowonly_run(rgb_store, root):
    """Catches --init-from refusing the single runs, or a pathway's weights not loaded under its name."""
    pose, rgb = root / "init_posec3d", root / "init_slowonly"
    fit(rgb_store, "posec3d", pose, "--frames", "16", "--heatmap-size", "8", "--heatmap-test-size", "8")
    fit(rgb_store, "slowonly", rgb)
    run = root / "rgbpose_init"
    output = fit(rgb_store, "rgbpose", run, "--init-from", str(pose / "last.pt"), "--init-from",
                 str(rgb / "last.pt"), "--epochs", "1", "--lr", "1e-9")
    assert "RGBPose's pose pathway" in output and "RGBPose's rgb pathway" in output, output
    weights = torch.load(run / "last.pt", weights_only=True)["model"]
    for single, prefix in ((pose, "pose."), (rgb, "rgb.")):
        theirs = torch.load(single / "last.pt", weights_only=True)["model"]
        torch.testing.assert_close(weights[prefix + "stem.conv.weight"], theirs["backbone.stem.conv.weight"],
                                   atol=1e-6, rtol=1e-4)


def test_posec3d_under_two_gloo_processes(skeleton_store, tmp_path):
    """Catches the heatmap path breaking under DDP (each process its half of the batch)."""
    args = ["--store", str(skeleton_store), "--protocol", "xsub", "--model", "posec3d", "--out",
            str(tmp_path / "ddp"), *CPU, *TINY["posec3d"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "cli.train", "fit", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["trained_on"]["processes"] == 2


# --- learning -----------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model, extra", [
    ("posec3d", ["--epochs", "12", "--lr", "0.4"]),
    ("ctrgcn", ["--epochs", "6", "--lr", "0.1", "--warmup-epochs", "0"]),
    ("slowonly", ["--epochs", "6", "--lr", "0.2"]),
    ("rgbpose", ["--epochs", "6", "--lr", "0.2"]),
])
def test_each_reference_model_learns_above_chance(model, extra, rgb_store, root):
    """Catches a reference model that does not learn the synthetic classes (3: chance 1/3) in a short
    run: its inputs, its loss or its recipe's step broken."""
    run = root / f"learn_{model}"
    fit(rgb_store, model, run, *extra)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(line["train_top1"] for line in history) > 0.6, history
