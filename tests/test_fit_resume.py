"""`fit --resume`: what a resumed run must match beyond its options (the store's contents, the process
count), more epochs continuing a run, and runs written before the config was in parts."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from training import hcn_config

import model.training.fit as fit_module
from cli.train import main
from model.training.checkpoint import check_trained_on, load_checkpoint
from model.training.config import FIELDS, TrainConfig
from model.training.fit import fit
from ntu_pipeline.errors import ConfigError, TrainingError

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


def stopped_mid_epoch(store: Path, out: Path, monkeypatch, **changes) -> None:
    """A run stopped right after its first mid-epoch checkpoint, as a Ctrl-C there leaves it."""
    real = fit_module.save_checkpoint

    def save_then_stop(path, checkpoint):
        real(path, checkpoint)
        if checkpoint.state.step > 0:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(fit_module, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            fit(hcn_config(store, out, checkpoint_every=2, **changes))
    assert load_checkpoint(out / "last.pt").state.step == 2


def test_a_store_changed_since_is_refused_on_resume(skeleton_store, tmp_path, monkeypatch):
    """A store re-extracted at the same path (other input files, other options) resumed mid-epoch in
    silence: the options compared were strings, the path among them. Now the store's recorded identity
    is compared (each stage's input digest and options, the split's samples): one line naming it."""
    store = tmp_path / "s.zarr"
    shutil.copytree(skeleton_store, store, ignore=shutil.ignore_patterns(".*lock"))
    out = tmp_path / "run"
    stopped_mid_epoch(store, out, monkeypatch)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["stages"]["skeleton"]["source"]["digest"] = "0" * 64  # made from other files
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(TrainingError, match=r"trained on other store contents: its skeleton input changed "
                                            r"since \(skeleton input: \w+ then, 0000000000000000 now\)"):
        fit(hcn_config(store, out, checkpoint_every=2), resume=True)
    assert load_checkpoint(out / "last.pt").state.step == 2  # nothing trained


def test_what_a_run_trained_on_is_compared_whole():
    """The pure check: the process count, then every recorded item of the store (a split rewritten with
    other samples too); a checkpoint that recorded nothing (format /2) resumes, saying so."""
    was = {"processes": 1, "store": {"dataset": "ntu60", "split samples": "ab", "skeleton input": "cd"}}
    check_trained_on(was, was, Path("run"), lambda _: None)
    with pytest.raises(TrainingError, match=r"trained by 1 process; this resume runs 2 \(WORLD_SIZE\)"):
        check_trained_on(was, {**was, "processes": 2}, Path("run"), lambda _: None)
    other = {**was, "store": {**was["store"], "split samples": "ef"}}
    with pytest.raises(TrainingError, match="its split samples changed since"):
        check_trained_on(was, other, Path("run"), lambda _: None)
    said: list[str] = []
    check_trained_on({}, was, Path("run"), said.append)
    assert said == ["run/last.pt was written before runs recorded their store and process count: resuming "
                    "without checking them"]


def test_a_resume_under_another_process_count_is_refused(skeleton_store, tmp_path, monkeypatch):
    """A run of one process resumed by two took other steps from there on (a third result, neither the
    one- nor the two-process run's): config.json did not record the count. Two gloo processes now refuse
    in one line, before training."""
    out = tmp_path / "run"
    stopped_mid_epoch(skeleton_store, out, monkeypatch)
    args = ["--store", str(skeleton_store), "--protocol", "xsub", "--model", "hcn", "--out", str(out),
            "--epochs", "2", "--batch-size", "16", "--frames", "16", "--optimizer", "adam", "--lr", "0.016",
            "--weight-decay", "0", "--warmup-epochs", "1", "--flip", "0", "--dropout", "0.1", "--device",
            "cpu", "--workers", "0", "--quiet", "--checkpoint-every", "2", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "cli.train", "fit", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0, run.stdout + run.stderr
    assert "was trained by 1 process; this resume runs 2 (WORLD_SIZE)" in run.stdout + run.stderr
    assert load_checkpoint(out / "last.pt").state.step == 2


def test_more_epochs_continue_a_finished_run(skeleton_store, tmp_path):
    """A finished run could not be given more epochs (`--epochs` was an option that must match). Now
    --epochs past the epochs done continues it, saying what it does to the schedule; HCN's exp schedule
    does not depend on the epoch count, so 2 epochs then 1 more equal 3 straight, bit for bit. Fewer
    epochs than done is one line (exit 2)."""
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    fit(hcn_config(skeleton_store, straight, epochs=3))
    fit(hcn_config(skeleton_store, extended, epochs=2))
    said = io.StringIO()
    report = fit(hcn_config(skeleton_store, extended, epochs=3), resume=True, stream=said)
    assert ("continuing from epoch 2 with --epochs 3 (started with 2): the exp schedule does not depend on "
            "the epoch count") in said.getvalue()
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(extended / "last.pt")
    assert b.state.epoch == 3 and b.train_config().recipe.epochs == 3
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key
    assert [line["test_top1"] for line in a.state.history] == [line["test_top1"] for line in b.state.history]
    assert json.loads((extended / "metrics.json").read_text())["epoch"] == 3 and report["top1"] >= 0
    assert json.loads((extended / "config.json").read_text())["recipe"]["epochs"] == 3
    with pytest.raises(ConfigError, match="has trained 3 epochs; --epochs 2 cannot continue it"):
        fit(hcn_config(skeleton_store, extended, epochs=2), resume=True)


def test_more_epochs_on_a_cosine_schedule_say_where_the_rate_goes(skeleton_store, tmp_path):
    """The cosine schedule is a function of the epoch count: extended, it ends later, so the rate jumps
    back up where the run resumes; the line says from what to what."""
    out = tmp_path / "run"
    fit(hcn_config(skeleton_store, out, epochs=1, schedule="cosine", warmup_epochs=0))
    said = io.StringIO()
    fit(hcn_config(skeleton_store, out, epochs=2, schedule="cosine", warmup_epochs=0), resume=True,
        stream=said)
    assert ("continuing from epoch 1 with --epochs 2 (started with 1): the cosine schedule now ends at epoch "
            "2, so the lr at step 7 is 0.004 where it was 0 (a 2-epoch run would have had other rates "
            "before)") in said.getvalue()  # 0.004: half the base rate 0.016 x 16 / 32, at mid-schedule
    assert len(load_checkpoint(out / "last.pt").state.history) == 2


# The names a /2 config.json held (and "recipe"), each a flat name of today's FIELDS.
V2_NAMES = ("store", "protocol", "model", "out", "epochs", "batch_size", "lr", "optimizer", "momentum",
            "weight_decay", "warmup_epochs", "schedule", "lr_decay", "clip_norm", "seed", "frames", "crop",
            "flip", "normalize", "dropout", "bn_momentum", "i3d_checkpoint", "pretrained_lr", "init_from",
            "device", "workers", "bf16", "compile", "sync_bn", "half_skeletons", "checkpoint_every",
            "progress", "test_clips")


def written_before_the_parts(run: Path) -> None:
    """Rewrite a run as ntu-train/2 wrote it: a flat config (bf16 true on a CPU, the recipe's name), no
    `trained_on`, in config.json and both checkpoints."""
    for name in ("last.pt", "best.pt"):
        saved = torch.load(run / name, map_location="cpu", weights_only=True)
        config = TrainConfig.from_dict(saved["config"])
        flat = {name: getattr(config, name) for name in FIELDS if name in V2_NAMES}
        flat.update(seed=config.seed, init_from=list(config.network.init_from), bf16=True, recipe="hcn")
        saved.update(config=flat, format="ntu-train/2")
        del saved["trained_on"]
        torch.save(saved, run / name)
    (run / "config.json").write_text(json.dumps(flat, indent=1) + "\n")


def test_a_run_written_before_the_parts_evaluates_and_resumes(skeleton_store, tmp_path):
    """Runs of the previous code (flat config.json and checkpoint config, format ntu-train/2) keep
    working: eval reads them, and --resume continues them (their store and process count unrecorded:
    said in one line, not checked), writing the new layout from then on."""
    run = tmp_path / "run"
    fit(hcn_config(skeleton_store, run, epochs=1))
    written_before_the_parts(run)
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(run / "best.pt"), "--store",
                                       str(skeleton_store), "--protocol", "xsub", "--device", "cpu",
                                       "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    said = io.StringIO()
    fit(hcn_config(skeleton_store, run, epochs=2), resume=True, stream=said)
    assert "was written before runs recorded their store and process count" in said.getvalue()
    last = load_checkpoint(run / "last.pt")
    assert last.format == "ntu-train/3" and last.state.epoch == 2 and last.trained_on["processes"] == 1
