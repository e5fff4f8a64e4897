"""What DDP computes for a network with BatchNorm (I3D) without `--sync-bn`, which needs CUDA: each process
normalises with the statistics of its own share of the batch. Two gloo processes under torchrun are
checked against that rule worked out in one process, and against one process on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from model.data.split import SplitData, read_split
from model.networks.dropout import dropout_keys, sample_keys
from model.training.config import TrainConfig
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus

REPO = Path(__file__).resolve().parent.parent
BATCH = 8
OPTIONS = {"model": "i3d", "epochs": 1, "batch_size": BATCH, "frames": 16, "crop": 32, "optimizer": "sgd",
           "lr": 0.1, "weight_decay": 0.0, "warmup_epochs": 0, "device": "cpu", "workers": 0}

pytestmark = pytest.mark.usefixtures("one_thread")


def video_store(root: Path) -> Path:
    """24 synthetic samples of 3 classes with videos, 16 frames of 40 x 40, the xsub split (12 train)."""
    raw, store = root / "raw", root / "rgb.zarr"
    write_corpus(raw, 24, 3, seed=1, videos=True)
    extract(ExtractConfig(skeletons=raw, videos=raw, out=store, dataset="ntu60", shard_size=8, rgb_frames=16,
                          rgb_size=40, rgb_shard_size=8, progress=False))
    make_split(open_store(store, mode="r+"), "xsub")
    return store


def one_step(config: TrainConfig, shares: int, classes: int) -> tuple[dict, dict]:
    """The first step of `config` in this process, the batch cut into `shares` parts, each put through the
    network on its own (its BatchNorms normalising that part), the loss the mean over all of them:
    what `shares` DDP processes compute. Returns the weights after the step and the BatchNorm buffers
    after the first part's forward (rank 0's, the checkpoint's)."""
    torch.manual_seed(config.seed)  # the initial weights, as fit
    net = model.build("i3d", classes, **config.model_options()).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=config.base_lr())  # the first step: momentum moot
    info = read_split(config.data.store, "xsub", "train", need_rgb=True, need_skeleton=False)
    assert len(info) // BATCH == 1
    losses, first = [], None
    for rank in range(shares):
        batch = next(SplitData(info, config.clip_spec(), "cpu", config.seed, 0, rank, shares)
                     .batches(0, BATCH, True))
        with dropout_keys(net, sample_keys(config.seed, 0, batch.positions)):
            out = net(rgb=batch.rgb)
        losses.append(model.heads_loss(out, batch.labels))
        if first is None:
            first = {name: b.clone() for name, b in net.named_buffers()}
    (sum(losses) / shares).backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), config.recipe.clip_norm)
    optimizer.step()
    return {name: p.detach() for name, p in net.named_parameters()}, first


@pytest.mark.slow
def test_without_sync_bn_each_process_normalises_its_own_share(tmp_path_factory):
    """One step of I3D (dropout 0.5 and 57 BatchNorms) on a global batch of 8 by two gloo processes.
    Holds: the weights equal one process's that normalises each process's 4 clips apart (<= 1e-6),
    the running statistics of last.pt are those rank 0's 4 clips gave, and the run's test scores are
    those of last.pt. Does not hold: equality with one process on the 8 clips (a BatchNorm over 4 clips
    normalises with other means: the weights move by more than 1e-3 elsewhere). Catches a DDP step that
    is not the per-share one (dropout masks that depend on the process: I3D's classifier input) and
    test scores computed with statistics the checkpoint does not hold (rank 1 scored its half of the
    test split with its own: 3e-4 apart in the logits)."""
    root = tmp_path_factory.mktemp("ddp_bn")
    store = video_store(root)
    out = root / "two"
    args = [f"--{key.replace('_', '-')}={value}" for key, value in OPTIONS.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", "-m", "cli.train", "fit", "--store", str(store), "--protocol", "xsub", "--out",
                          str(out), "--quiet", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    saved = torch.load(out / "last.pt", weights_only=True)["model"]

    config = TrainConfig.from_options(store=str(store), protocol="xsub", out=str(root / "unused"), **OPTIONS)
    classes = len(read_split(store, "xsub", "train", need_rgb=True, need_skeleton=False).class_names)
    weights, rank0_statistics = one_step(config, 2, classes)
    for name, value in weights.items():
        torch.testing.assert_close(saved[name], value, atol=1e-6, rtol=1e-5, msg=name)
    for name, value in rank0_statistics.items():
        torch.testing.assert_close(saved[name], value, atol=1e-6, rtol=1e-5, msg=name)

    whole, _ = one_step(config, 1, classes)
    apart = max((whole[name] - value).abs().max().item() for name, value in weights.items())
    assert apart > 1e-3, apart

    net = model.build("i3d", classes, **config.model_options()).eval()
    net.load_state_dict(saved)
    test = SplitData(read_split(store, "xsub", "test", need_rgb=True, need_skeleton=False),
                     config.clip_spec(), "cpu", config.seed)
    with torch.no_grad():
        logits = torch.cat([net(rgb=batch.rgb)["logits"] for batch in test.batches(0, BATCH, False)])
    reported = np.load(out / "scores.npz")["logits"]
    np.testing.assert_allclose(reported, logits.numpy(), atol=1e-5, rtol=0)
