"""`ntu-train fit` under torchrun: two CPU processes (gloo) train like one process on the same batch, and
stop together, each with the one-line message, when the loss becomes NaN in one of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from training import build_store

from model.training.config import TrainConfig
from model.training.fit import fit

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_processes_take_the_same_first_step_as_one(tmp_path_factory):
    """One step on a global batch of 64 (the train split has 119 samples), HCN at its default dropout
    (0.5): the loss (mean over the batch, summed across processes), the weights after the step and the
    test metrics equal those of one process. Catches per-process batches that are not the global batch
    cut in two, augmentation or dropout masks that depend on the process (torch's dropout, one mask per
    process's batch: the weights were 1.8e-2 apart), a loss or gradient that is not averaged over all
    processes, and an evaluation that drops or repeats a process's share."""
    root = tmp_path_factory.mktemp("ddp")
    store = build_store(root)
    settings = dict(store=str(store), protocol="xsub", model="hcn", epochs=1, batch_size=64, frames=16,
                    lr=0.1, optimizer="sgd", warmup_epochs=0, flip=0.5, device="cpu", workers=0,
                    progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = fit(TrainConfig.from_options(out=str(root / "one"), **settings))
    finally:
        torch.set_num_threads(threads)
    args = ["--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out", str(root / "two"),
            "--epochs", "1", "--batch-size", "64", "--frames", "16", "--lr", "0.1", "--optimizer", "sgd",
            "--warmup-epochs", "0",
            "--flip", "0.5", "--device", "cpu", "--workers", "0", "--quiet"]
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


# Run by torchrun in each process: `ntu-train` with rank 1's loss NaN from its 4th step on, the sums read
# back every 2 steps, and a CUDA event's timing on the CPU: a copy of the sums "arrives" at the first
# query on rank 0, at the third on rank 1 (GPUs finish at different moments; a CPU copy is done at once,
# so without this both ranks would always read it at the same step). Each rank writes the step at which
# it stops into STOPPED_AT/rank<r> (only the first process to stop prints the message).
NAN_IN_RANK_1 = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import model.training.epoch as epoch
    from cli.train import main

    RANK = int(os.environ["RANK"])

    class LateEvent:
        def __init__(self):
            self.queries_left = 0
        def record(self):
            self.queries_left = 2 * RANK
        def query(self):
            self.queries_left -= 1
            return self.queries_left < 0
        def synchronize(self):
            self.queries_left = -1

    make_reader = epoch.SumsReader.__init__
    def late_reader(self, device):
        make_reader(self, device)
        self.event = LateEvent()
    epoch.SumsReader.__init__ = late_reader
    epoch.LOG_EVERY = 2
    heads_loss, steps = epoch.heads_loss, [0]
    def nan_in_rank_1(out, labels, **options):
        steps[0] += 1
        loss = heads_loss(out, labels, **options)
        return loss * float("nan") if RANK == 1 and steps[0] > 3 else loss
    epoch.heads_loss = nan_in_rank_1  # the name the training step calls
    check_finite = epoch.check_finite
    def noted(sums, epoch_, step, lr):
        try:
            check_finite(sums, epoch_, step, lr)
        except Exception:
            (Path(os.environ["STOPPED_AT"]) / f"rank{RANK}").write_text(str(step))
            raise
    epoch.check_finite = noted
    main(sys.argv[1:], prog_name="ntu-train")
""")


@pytest.mark.slow
def test_a_nan_in_one_process_stops_every_process_with_one_line(tmp_path_factory):
    """Two gloo processes, 14 steps an epoch; rank 1's loss turns NaN at its 4th step (the all-reduced
    gradients then spread it). Every process must decide at the same step: catches a process that
    stops on the NaN alone while the other goes on into the next step's all-reduce (the sums read
    whenever their copy had arrived: torchrun then tears the group down, and the others end with a
    traceback or a signal instead of the message). The message is said once, by the first process to
    stop (each process printed it before), and `cli.torchrun` adds nothing: exit 1, no traceback."""
    root = tmp_path_factory.mktemp("ddp_nan")
    store = build_store(root)
    script = root / "nan_in_rank_1.py"
    script.write_text(NAN_IN_RANK_1)
    args = ["fit", "--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out", str(root / "run"),
            "--epochs", "1", "--batch-size", "8", "--frames", "16", "--device", "cpu", "--workers", "0",
            "--quiet"]
    stopped = root / "stopped_at"
    stopped.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "STOPPED_AT": str(stopped)}
    run = subprocess.run([sys.executable, "-m", "cli.torchrun", "--standalone", "--nproc-per-node", "2",
                          "--tee", "3", str(script), *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    errors = [line for line in output.splitlines() if "Error" in line or "Traceback" in line]
    assert len(errors) == 1, output
    said = re.fullmatch(r"\[default[01]\]:Error: the training loss became nan in epoch 1 by step (\d+) .*",
                        errors[0])
    assert said, output
    # the same step in every process (torchrun stops the other with SIGTERM as soon as the first exits,
    # after both decided)
    assert (stopped / "rank0").read_text() == (stopped / "rank1").read_text() == said[1], output
    assert not (root / "run" / "last.pt").exists()
