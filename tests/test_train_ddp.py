"""`ntu-train fit` under torchrun: two CPU processes (gloo) train like one process on the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training import build_store

from model.config import TrainConfig
from model.train import fit

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_processes_take_the_same_first_step_as_one(tmp_path_factory):
    """One step on a global batch of 64 (the train split has 119 samples): the loss (mean over the
    batch, summed across processes), the weights after the step and the test metrics equal those of
    one process. Catches per-process batches that are not the global batch cut in two, augmentation
    that depends on the process, a loss or gradient that is not averaged over all processes, and an
    evaluation that drops or repeats a process's share."""
    root = tmp_path_factory.mktemp("ddp")
    store = build_store(root)
    settings = dict(store=str(store), protocol="xsub", model="hcn", epochs=1, batch_size=64, frames=16,
                    lr=0.1, optimizer="sgd", warmup_epochs=0, flip=0.5, dropout=0.0, device="cpu", workers=0,
                    progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = fit(TrainConfig(out=str(root / "one"), **settings))
    finally:
        torch.set_num_threads(threads)
    args = ["--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out", str(root / "two"),
            "--epochs", "1", "--batch-size", "64", "--frames", "16", "--lr", "0.1", "--optimizer", "sgd",
            "--warmup-epochs", "0",
            "--flip", "0.5", "--dropout", "0", "--device", "cpu", "--workers", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "cli.train", "fit", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    one = torch.load(root / "one/last.pt", weights_only=True)
    two = torch.load(root / "two/last.pt", weights_only=True)
    (a,), (b,) = one["history"], two["history"]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
    assert b["train_top1"] == a["train_top1"]
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, atol=1e-6, rtol=1e-5, msg=key)
    report = json.loads((root / "two/metrics.json").read_text())
    assert report["num_samples"] == single["num_samples"] == 120
    assert report["top1"] == pytest.approx(single["top1"])
