"""Evaluation: a network over a split (one clip or the multi-clip test) and a checkpoint on a store.

    logits, labels = evaluate_split(net, test_data, batch_size=32, runtime=runtime, clips=10)
    report = write_split_evaluation((logits, labels), test_data, Path("runs/eval"), {"model": "hcn"})
    report = evaluate_checkpoint("runs/ccdfarm/best.pt", "ntu60.zarr", "xsub", out_dir="runs/eval",
                                 clips=10)
    # -> runs/eval/metrics.json, confusion.png, scores.npz

Multi-clip: the logits of a sample's `clips` clips (`SplitData.batches(..., clip=k, clips=N)`: N samplings
of the sequence for skeletons, N temporal clips or N views for RGB) are averaged, logits not softmax
(MMAction2's "score" average; an ensemble then sums the same logits, `model.results.ensemble`). Each process
predicts its contiguous share; `gather_predictions` puts the shares back in split order, so the result
is the same whatever the process count. The numbers and pictures made of logits: `model.results.reports`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from model.data.split import SplitData, read_split
from model.results.reports import classification_report, write_evaluation
from model.results.scores import Scores
from model.training.checkpoint import Checkpoint, check_checkpoint_fits, load_checkpoint, load_weights
from model.training.config import TrainConfig, default_device, default_workers
from model.training.runtime import Runtime, build_network
from ntu_pipeline.errors import ConfigError
from ntu_pipeline.store import open_store, read_strings


@torch.no_grad()
def predict(net: nn.Module, data: SplitData, batch_size: int, runtime: Runtime,
            clips: int = 1) -> tuple[Tensor, Tensor]:
    """Logits (n_local, K) float32 on the CPU, averaged over `clips` clips, and split positions (n_local,)
    of this process's share of `data` (every sample once, no flip), with `net` in eval mode (restored
    after). The logits stay on the device until the end (no wait per batch)."""
    if clips < 1:
        raise ConfigError(f"clips must be >= 1, got {clips}")
    was_training = net.training
    net.eval()
    total, positions = None, None
    try:
        for clip in range(clips):
            logits, order = [], []
            for batch in data.batches(0, batch_size, train=False, clip=clip, clips=clips):
                out = runtime.forward(net, batch.rgb, batch.skeleton, batch.motion)
                logits.append(out["logits"].float())
                order.append(batch.positions)
            if not logits:
                return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
            stacked = torch.cat(logits)
            total = stacked if total is None else total + stacked
            positions = torch.cat(order)
    finally:
        net.train(was_training)
    return (total / clips).cpu(), positions.cpu()


def gather_predictions(logits: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """Every process's (logits (n_r, K), positions (n_r,)) concatenated in rank order; unchanged
    without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return logits, positions
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (logits.numpy(), positions.numpy()))
    parts = [(torch.from_numpy(lg), torch.from_numpy(p)) for lg, p in parts if len(p)]
    return torch.cat([lg for lg, _ in parts]), torch.cat([p for _, p in parts])


def evaluate_split(net: nn.Module, data: SplitData, batch_size: int, runtime: Runtime,
                   clips: int = 1) -> tuple[Tensor, Tensor]:
    """Logits (n, K) and labels (n,) of the whole split in split order, each process predicting its share."""
    logits, positions = gather_predictions(*predict(net, data, max(batch_size, 1), runtime, clips))
    order = torch.argsort(positions)
    return logits[order], torch.from_numpy(data.info.labels)[positions[order]]


def write_split_evaluation(result: tuple[Tensor, Tensor], data: SplitData, out_dir: Path | None,
                           extra: dict) -> dict:
    """The classification report of (logits, labels) over `data`'s split, with `extra` (model, protocol,
    clips, ...) and `left_out` (the split's members this model could not be given, by reason: {"skeleton
    absent": 1}, {} when none) in it; written as out_dir/metrics.json, confusion.png and scores.npz when
    out_dir is given (rank 0 passes it, the others None)."""
    logits, labels = result
    info = data.info
    report = classification_report(logits, labels, info.class_names)
    report.update(extra)
    report["left_out"] = dict(info.left_out)
    if out_dir is not None:
        names = read_strings(open_store(info.store)["samples/name"])
        scores = Scores(np.asarray([names[i] for i in info.indices]), labels.numpy().astype(np.int64),
                        logits.numpy().astype(np.float32), tuple(info.class_names))
        clips = extra.get("clips", 1)
        write_evaluation(Path(out_dir), report, scores, f"{extra.get('model', '')} {info.protocol} test top1 "
                         f"{report['top1']:.4f}" + (f" ({clips} clips)" if clips > 1 else ""))
    return report


def evaluation_config(saved: Checkpoint, device: str | None, workers: int | None) -> TrainConfig:
    """The checkpoint's run, executed for evaluation on `device` with `workers` (None: this machine's)."""
    return TrainConfig(**saved.config).for_evaluation(device or default_device(),
                                                      default_workers() if workers is None else workers)


def trained_network(saved: Checkpoint, path: Path, config: TrainConfig) -> tuple[nn.Module, Runtime]:
    """The checkpoint's network with its weights, on config.device, and the runtime that runs it."""
    runtime = Runtime(torch.device(config.device), config.bf16)
    net = build_network(saved.model_name, saved.num_classes, config.model_options(), runtime.device)
    load_weights(net, saved, path)
    return net, runtime


def evaluate_checkpoint(checkpoint: str | Path, store: str | Path, protocol: str, out_dir: str | Path | None,
                        model: str | None = None, batch_size: int = 32, device: str | None = None,
                        workers: int | None = None, clips: int = 1) -> dict:
    """The test split of `protocol` in `store` through the weights in `checkpoint`, `clips` clips a
    sample: its classification report (with `left_out`: the test samples the model could not be given,
    by reason), also written as out_dir/metrics.json, confusion.png and scores.npz when out_dir is
    given. `model`, when given, must be the checkpoint's. CheckpointError where they do not fit. A run
    trained with --sync-bn on GPUs evaluates on a CPU too."""
    path = Path(checkpoint)
    saved = load_checkpoint(path)
    config = evaluation_config(saved, device, workers)
    info = read_split(store, protocol, "test", config.uses_rgb, config.uses_skeleton)
    check_checkpoint_fits(saved, path, model, info.class_names)
    net, runtime = trained_network(saved, path, config)
    data = SplitData(info, config.clip_spec(), runtime.device, config.seed, config.workers)
    result = evaluate_split(net, data, batch_size, runtime, clips)
    return write_split_evaluation(result, data, None if out_dir is None else Path(out_dir), {
        "checkpoint": str(path), "epoch": saved.state.epoch, "model": saved.model_name,
        "protocol": protocol, "split": "test", "store": str(store), "clips": clips})
