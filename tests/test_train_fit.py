"""`ntu-train` on the skeleton path: fit, eval, resume after a kill, and bad input (one line each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from training import hcn_config

import model
from cli.train import main
from model.training.checkpoint import load_checkpoint
from model.training.config import TrainConfig
from model.training.evaluate import evaluate_checkpoint
from model.training.fit import fit
from ntu_pipeline.store import open_store

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_store(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns(".ntu-prep.lock"))
    return dest


# --- fit, eval, resume --------------------------------------------------------------------------------

@pytest.mark.slow
def test_hcn_learns_the_synthetic_classes(skeleton_store, tmp_path):
    """Catches a data path that loses the class signal (labels misaligned with samples, windows or
    normalisation destroying the motion) or a loop that does not optimise. Threshold: 3x chance (the
    test split has 20 samples of each of 6 classes, chance 1/6), so 0.5; a nearest-centroid
    classifier reaches 0.98 on these classes (test_synth.py)."""
    report = fit(hcn_config(skeleton_store, tmp_path / "run", epochs=8, batch_size=8, dropout=0.0))
    assert report["top1"] >= 0.5, report["top1"]
    lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and lines[-1]["train_loss"] < lines[0]["train_loss"]


@pytest.fixture(scope="session")
def finished_run(skeleton_store, train_root) -> Path:
    """`ntu-train fit` through the CLI: 2 epochs of HCN."""
    out = train_root / "cli_run"
    result = CliRunner().invoke(main, [
        "fit", "--store", str(skeleton_store), "--protocol", "xsub", "--model", "hcn", "--out", str(out),
        "--epochs", "2", "--batch-size", "16", "--frames", "16", "--optimizer", "adam", "--lr", "0.016",
        "--weight-decay", "0", "--warmup-epochs", "1", "--flip", "0", "--device", "cpu", "--workers", "0",
        "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test top1" in result.output
    return out


def test_fit_writes_the_run_directory(finished_run):
    """Catches a missing or malformed run artefact: config, checkpoints, logs, report, PNG."""
    config = json.loads((finished_run / "config.json").read_text())
    assert config["network"]["model"] == "hcn" and config["recipe"]["epochs"] == 2
    assert config["data"]["clip"]["frames"] == 16 and config["trained_on"]["processes"] == 1
    lines = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    keys = {"train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr", "clips_per_s"}
    assert keys <= set(lines[0])
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and metrics["num_samples"] == 120
    assert metrics["top1"] == pytest.approx(lines[-1]["test_top1"])
    assert metrics["per_class"]["drink water"]["samples"] == 20
    assert sum(c["samples"] for c in metrics["per_class"].values()) == 120
    image = cv2.imread(str(finished_run / "confusion.png"))
    assert image is not None and image.shape[0] > 200
    for name in ("last.pt", "best.pt"):
        state = torch.load(finished_run / name, map_location="cpu", weights_only=True)
        assert state["model_name"] == "hcn" and state["num_classes"] == 60 and state["epoch"] >= 1
        assert isinstance(state["rng"]["torch"], torch.Tensor) and state["seed"] == 0
    assert not list(finished_run.glob("*.tmp"))


def test_eval_reproduces_the_final_metrics(finished_run, skeleton_store, tmp_path):
    """Catches eval building another model or data path than fit's (its metrics must match)."""
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(finished_run / "last.pt"), "--store",
                                       str(skeleton_store), "--protocol", "xsub", "--out", str(tmp_path),
                                       "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "metrics.json").read_text())
    theirs = json.loads((finished_run / "metrics.json").read_text())
    assert ours["top1"] == pytest.approx(theirs["top1"]) and ours["per_class"] == theirs["per_class"]
    assert (tmp_path / "confusion.png").is_file()


@pytest.mark.slow
def test_resume_after_kill_9_equals_an_uninterrupted_run(skeleton_store, tmp_path):
    """Catches any state a resumed run loses: weights, optimizer, schedule, data order, dropout RNG,
    the epoch's running sums. The run is a real process killed with SIGKILL mid-epoch."""
    args = ["fit", "--store", str(skeleton_store), "--protocol", "xsub", "--model", "hcn",
            "--epochs", "4", "--batch-size", "16", "--frames", "16", "--optimizer", "adam", "--lr", "0.016",
            "--weight-decay", "0", "--warmup-epochs", "1", "--flip", "0.5", "--dropout", "0.3",
            "--device", "cpu", "--workers", "0", "--quiet", "--checkpoint-every", "2"]
    reference_run = tmp_path / "whole"
    fit(TrainConfig.from_options(
        store=str(skeleton_store), protocol="xsub", model="hcn", out=str(reference_run), epochs=4,
        batch_size=16, frames=16, optimizer="adam", lr=0.016, weight_decay=0.0, warmup_epochs=1, flip=0.5,
        dropout=0.3, device="cpu", workers=0, progress=False, checkpoint_every=2))
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cli.train", *args, "--out", str(killed)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    where = None
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / "last.pt").is_file():
            state = torch.load(killed / "last.pt", map_location="cpu", weights_only=True)
            if state["epoch"] >= 1 and state["step"] > 0:  # mid-epoch, after the first epoch
                proc.send_signal(signal.SIGKILL)
                where = (state["epoch"], state["step"])
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert where is not None and proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = torch.load(reference_run / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), f"{key} differs after resuming at {where}"
    for key in ("train_loss", "train_top1", "test_top1", "test_loss"):
        assert [line[key] for line in a["history"]] == [line[key] for line in b["history"]], key
    assert json.loads((reference_run / "metrics.json").read_text())["per_class"] == \
        json.loads((killed / "metrics.json").read_text())["per_class"]


def test_nan_loss_stops_with_one_line(skeleton_store, tmp_path):
    """Catches a run that trains on after its loss became NaN (or dies with a traceback)."""
    result = CliRunner().invoke(main, [
        "fit", "--store", str(skeleton_store), "--protocol", "xsub", "--model", "hcn",
        "--out", str(tmp_path / "nan"), "--epochs", "2", "--batch-size", "16", "--frames", "16",
        "--lr", "1e30", "--clip-norm", "0", "--warmup-epochs", "0", "--device", "cpu", "--quiet"])
    assert result.exit_code == 1
    assert "Error: the training loss became nan" in result.output or "became inf" in result.output
    assert len(result.output.strip().splitlines()) <= 3, result.output  # recipe, loading, the error
    assert not (tmp_path / "nan" / "last.pt").exists()


# --- bad input: one line each -------------------------------------------------------------------------

def _fit_args(store: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--frames", "16", "--device", "cpu", "--quiet", *extra]


def _one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_store_without_the_split(skeleton_store, tmp_path):
    line = _one_line_error(CliRunner().invoke(main, _fit_args(skeleton_store, tmp_path / "r")[:4] + [
        "xview", *_fit_args(skeleton_store, tmp_path / "r")[5:]]))
    assert "no split 'xview'" in line and "ntu-prep split --protocol xview" in line


def test_unknown_store_format(skeleton_store, tmp_path):
    odd = copy_store(skeleton_store, tmp_path / "odd.zarr")
    meta = json.loads((odd / "zarr.json").read_text())
    meta["attributes"]["format"] = "ntu-prep/99"
    (odd / "zarr.json").write_text(json.dumps(meta))
    line = _one_line_error(CliRunner().invoke(main, _fit_args(odd, tmp_path / "r")))
    assert "ntu-prep/99" in line


def test_store_without_rgb_for_an_rgb_model(skeleton_store, tmp_path):
    args = _fit_args(skeleton_store, tmp_path / "r")
    args[args.index("hcn")] = "ccdfarm"
    line = _one_line_error(CliRunner().invoke(main, args))
    assert "no RGB frames" in line and "--videos" in line


def test_empty_split(skeleton_store, tmp_path):
    from ntu_pipeline.store.schema import write_split

    empty = copy_store(skeleton_store, tmp_path / "empty.zarr")
    group = open_store(empty, mode="r+")
    write_split(group, "xsub", np.arange(10, dtype=np.int64), np.zeros(0, dtype=np.int64), {})
    line = _one_line_error(CliRunner().invoke(main, _fit_args(empty, tmp_path / "r")))
    assert "xsub/test is empty" in line


def test_checkpoint_of_another_model_or_class_count(finished_run, skeleton_store, tmp_path):
    base = ["eval", "--store", str(skeleton_store), "--protocol", "xsub", "--device", "cpu"]
    line = _one_line_error(CliRunner().invoke(main, [*base, "--checkpoint", str(finished_run / "last.pt"),
                                                     "--model", "ccdfarm"]))
    assert "hcn checkpoint, not ccdfarm" in line
    state = load_checkpoint(finished_run / "last.pt").to_dict()
    other = model.build("hcn", 120, frames=16)
    torch.save({**state, "num_classes": 120, "class_names": [str(k) for k in range(120)], "dataset": "ntu120",
                "model": other.state_dict()}, tmp_path / "ntu120.pt")
    line = _one_line_error(CliRunner().invoke(main, [*base, "--checkpoint", str(tmp_path / "ntu120.pt")]))
    assert "has 120 classes" in line and "the store has 60" in line
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    line = _one_line_error(CliRunner().invoke(main, [*base, "--checkpoint", str(tmp_path / "junk.pt")]))
    assert "not a readable checkpoint" in line
    with pytest.raises(Exception, match="other settings"):  # resume with changed settings
        fit(hcn_config(skeleton_store, finished_run, dropout=0.3), resume=True)


def test_existing_run_directory_needs_resume(finished_run, skeleton_store):
    line = _one_line_error(CliRunner().invoke(main, _fit_args(skeleton_store, finished_run)))
    assert "--resume" in line


def test_evaluate_checkpoint_api(finished_run, skeleton_store):
    report = evaluate_checkpoint(finished_run / "best.pt", skeleton_store, "xsub", None, device="cpu",
                                 workers=0)
    assert report["num_samples"] == 120 and report["model"] == "hcn"


def test_init_from_starts_the_skeleton_stream_of_a_fused_model(finished_run, skeleton_store):
    """Catches --init-from loading into the wrong module, or silently loading nothing."""
    from model.training.checkpoint import init_stream
    from ntu_pipeline.errors import CheckpointError

    class_names = tuple(open_store(skeleton_store).attrs["class_names"])
    state = load_checkpoint(finished_run / "best.pt")
    net = model.build("ccdfarm", len(class_names), frames=16)
    before = net.rgb.endpoints["conv1a"].conv.weight.clone()
    message = init_stream(net, finished_run / "best.pt", class_names)
    assert "hcn stream" in message
    for key, value in state.model.items():
        torch.testing.assert_close(net.skeleton.state_dict()[key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(net.rgb.endpoints["conv1a"].conv.weight, before, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no hcn stream"):
        init_stream(model.build("i3d", len(class_names)), finished_run / "best.pt", class_names)


def test_summary_tables_finished_runs(finished_run, tmp_path):
    """Catches a summary that misreads a run's files or accepts a folder that is not a run."""
    result = CliRunner().invoke(main, ["summary", str(finished_run)])
    assert result.exit_code == 0, result.output
    report = json.loads((finished_run / "metrics.json").read_text())
    row = result.output.splitlines()[1].split()
    assert row[1:5] == ["hcn", "xsub", "2", "1"] and float(row[5]) == pytest.approx(report["top1"], abs=1e-4)
    result = CliRunner().invoke(main, ["summary", str(tmp_path)])
    assert result.exit_code == 1 and "no metrics.json" in result.output
