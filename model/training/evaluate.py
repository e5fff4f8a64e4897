"""Evaluation: a network over a split (one clip or the multi-clip test) and a checkpoint on a store.

    logits, labels = evaluate_split(net, test_data, batch_size=32, runtime=runtime, clips=10)
    report = write_split_evaluation((logits, labels), test_data, Path("runs/eval"), {"model": "hcn"})
    report = evaluate_checkpoint("runs/ccdfarm/best.pt", "ntu60.zarr", "xsub", out_dir="runs/eval",
                                 clips=10, progress=True, say=print)
    # -> runs/eval/metrics.json (kind "eval"), confusion.png, scores.npz

Multi-clip: the logits of a sample's `clips` clips (`SplitData.batches(..., clip=k, clips=N)`: N samplings
of the sequence for skeletons, N temporal clips or N views for RGB) are averaged, logits not softmax
(MMAction2's "score" average; an ensemble then sums the same logits, `model.results.ensemble`). Each process
predicts its contiguous share; `gather_predictions` puts the shares back in split order, so the result
is the same whatever the process count. The numbers and pictures made of logits: `model.results.reports`.

A checkpoint meets the store it is evaluated on (`store_notes`): RGB frames prepared otherwise than its
training store's (the stored frame count, `all` or not, the side, the crop rule: what the model is
shown) are a CheckpointError; another codec or quality, another store with the same options (the
normal cross-store evaluation) and another protocol than it trained on (whose test split may hold its
training samples: counted) are one note each. `out_dir` must be new, empty or an earlier result
(`model.results.reports.check_result_folder`), checked before any work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from model.data.pyskl_sampling import flip_heatmaps
from model.data.split import Batch, SplitData, SplitInfo, read_split
from model.results.reports import check_result_folder, classification_report, write_evaluation
from model.results.scores import Scores
from model.training.checkpoint import Checkpoint, check_checkpoint_fits, load_checkpoint, load_weights
from model.training.config import AVERAGES, TrainConfig, default_device, default_workers
from model.training.runtime import Runtime, build_network
from ntu_pipeline.errors import CheckpointError, ConfigError
from ntu_pipeline.manifests import get_protocol
from ntu_pipeline.progress import ProgressBar
from ntu_pipeline.stages.rgb_options import RgbOptions
from ntu_pipeline.store import hold_store_for_reading, open_store, read_strings

# The RGB options that shape what a model is shown: a store prepared otherwise is refused (store_notes).
SHAPING_RGB_OPTIONS = ("frames", "size", "crop")


def flipped(batch: Batch) -> Batch:
    """PoseC3D's flip test (GeneratePoseTarget(double=True)): the batch mirrored left-right, its heatmaps
    (B, V, T, H, W) by `flip_heatmaps` (joints swapped), its RGB (B, 3, T, H, W) along W."""
    return dataclasses.replace(batch, heatmaps=flip_heatmaps(batch.heatmaps),
                               rgb=None if batch.rgb is None else batch.rgb.flip(-1))


def average_scores(total: Tensor, count: int, average: str) -> Tensor:
    """The mean of `count` summed scores as logits: the logits' mean, or the log of the probabilities'
    mean ("prob": log-probabilities, whose softmax is that mean, so the loss, top-k and an ensemble's
    sum all read them as logits)."""
    mean = total / count
    return mean.clamp_min(torch.finfo(mean.dtype).tiny).log() if average == "prob" else mean


@torch.no_grad()
def predict(net: nn.Module, data: SplitData, batch_size: int, runtime: Runtime,
            clips: int = 1, bar: ProgressBar | None = None, average: str = "logits",
            flip_test: bool = False) -> tuple[Tensor, Tensor]:
    """Logits (n_local, K) float32 on the CPU, averaged over `clips` clips (and each clip's mirror with
    `flip_test`: heatmaps only), and split positions (n_local,) of this process's share of `data`
    (every sample once, no training flip), with `net` in eval mode (restored after). `average`: "logits"
    (their mean) or "prob" (the softmax's mean, as log-probabilities: `average_scores`). The logits stay
    on the device until the end (no wait per batch). `bar` advances by the clips of each batch."""
    if clips < 1:
        raise ConfigError(f"clips must be >= 1, got {clips}")
    if average not in AVERAGES:
        raise ConfigError(f"average must be one of {AVERAGES}, got {average!r}")
    if flip_test and not data.spec.heatmaps:
        raise ConfigError("the flip test mirrors the heatmaps: this model takes none (posec3d, rgbpose do)")
    was_training = net.training
    net.eval()
    total, positions = None, None
    try:
        for clip in range(clips):
            scores, order = [], []
            for batch in data.batches(0, batch_size, train=False, clip=clip, clips=clips):
                views = (batch, flipped(batch)) if flip_test else (batch,)
                score = 0
                for view in views:
                    logits = runtime.forward(net, view.rgb, view.skeleton, view.motion, view.heatmaps)
                    logits = logits["logits"].float()
                    score = score + (logits.softmax(1) if average == "prob" else logits)
                scores.append(score)
                order.append(batch.positions)
                if bar is not None:
                    bar.advance(len(batch.positions))
            if not scores:
                return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
            stacked = torch.cat(scores)
            total = stacked if total is None else total + stacked
            positions = torch.cat(order)
    finally:
        net.train(was_training)
    return average_scores(total, clips * (2 if flip_test else 1), average).cpu(), positions.cpu()


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
                   clips: int = 1, bar: ProgressBar | None = None, average: str = "logits",
                   flip_test: bool = False) -> tuple[Tensor, Tensor]:
    """Logits (n, K) and labels (n,) of the whole split in split order, each process predicting its share
    (`predict`'s average and flip_test)."""
    logits, positions = gather_predictions(*predict(net, data, max(batch_size, 1), runtime, clips, bar,
                                                    average, flip_test))
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
    return saved.train_config().for_evaluation(device or default_device(),
                                               default_workers() if workers is None else workers)


def trained_network(saved: Checkpoint, path: Path, config: TrainConfig) -> tuple[nn.Module, Runtime]:
    """The checkpoint's network with its weights, on config.device, and the runtime that runs it."""
    runtime = Runtime(torch.device(config.device), config.bf16)
    net = build_network(saved.model_name, saved.num_classes, config.model_options(), runtime.device)
    load_weights(net, saved, path)
    return net, runtime


def _describe_rgb(options: dict) -> str:
    rgb = RgbOptions.from_record(options)
    codec = f"jpeg quality {rgb.quality}" if rgb.codec == "jpeg" else rgb.codec
    frames = "every frame (all)" if rgb.frames is None else f"{rgb.frames} frames"
    return f"{frames} of {rgb.size}x{rgb.size}, {codec}"


def _store_identity(info: SplitInfo, stages: tuple[str, ...]) -> dict:
    """The store of `info` as a checkpoint's `trained_on["store"]` records its training store: each stage
    the model reads, the digest of its input files and its options."""
    recorded = dict(open_store(info.store).attrs.get("stages", {}))
    identity = {}
    for stage in stages:
        entry = dict(recorded.get(stage, {}))
        identity[f"{stage} input"] = str(dict(entry.get("source", {})).get("digest", ""))[:16]
        identity[f"{stage} options"] = dict(entry.get("options", {}))
    return identity


def store_notes(saved: Checkpoint, path: Path, config: TrainConfig, info: SplitInfo) -> list[str]:
    """What a user should know of evaluating checkpoint `saved` (at `path`, run `config`) on the split
    `info`, one line each; CheckpointError where the store's RGB frames were prepared otherwise than
    those it was trained on (SHAPING_RGB_OPTIONS). The training store is known by its identity where
    the checkpoint records it (`trained_on`: its input files' digest and options), else by its path."""
    notes = []
    store, origin = Path(info.store), str(config.store)
    stages = config.stages  # heatmaps: the skeleton stage's 2D joints
    before, now = dict(saved.trained_on.get("store", {})), _store_identity(info, stages)
    trained = dict(before.get("rgb options") or saved.inputs.get("rgb") or {})
    if config.uses_rgb and not trained:
        notes.append(f"{path} does not record how its store's RGB frames were prepared (an older "
                     f"checkpoint): not compared with {store}'s ({_describe_rgb(now['rgb options'])})")
    elif config.uses_rgb:
        theirs = now["rgb options"]
        differ = [k for k in SHAPING_RGB_OPTIONS if trained.get(k) != theirs.get(k)]
        if differ:
            crop = "; the crop rule differs" if "crop" in differ else ""
            raise CheckpointError(f"{path} was trained on RGB frames prepared as {_describe_rgb(trained)}; "
                                  f"{store} holds {_describe_rgb(theirs)}{crop}: evaluate on a store "
                                  "extracted with the same --frames and --size")
        if trained.get("codec") != theirs.get("codec"):
            notes.append(f"{path} was trained on RGB frames stored as {_describe_rgb(trained)}; {store} "
                         f"stores them as {_describe_rgb(theirs)} (the same frames, other pixels)")
    if before:
        other = [stage for stage in stages if before.get(f"{stage} input") != now[f"{stage} input"]]
        options = [stage for stage in stages if stage != "rgb"
                   and before.get(f"{stage} options") != now[f"{stage} options"]]
    else:  # a checkpoint that did not record its store: its path is all there is
        other = list(stages) if Path(origin).resolve() != store.resolve() else []
        options = []
    if other:
        alike = f"; RGB prepared alike ({_describe_rgb(trained)})" if config.uses_rgb and trained else ""
        notes.append(f"{path} was trained on {origin}; evaluating on {store}, made from other "
                     f"{' and '.join(other)} input files{alike}")
    for stage in options:
        notes.append(f"{path} was trained on {stage} data prepared with other options "
                     f"({before.get(f'{stage} options')}; {store}: {now[f'{stage} options']})")
    protocol = config.protocol
    if protocol != info.protocol and get_protocol(protocol).dataset == info.dataset:
        trained_split = get_protocol(protocol)
        values = open_store(store)["samples"][trained_split.field][:][info.indices]
        seen = int(trained_split.is_train(values).sum())
        if seen:
            notes.append(f"{path} was trained on the {protocol} train split: {seen} of the {len(info)} "
                         f"{info.protocol} test samples are in it (these numbers are not a held-out test)")
    return notes


def evaluate_checkpoint(checkpoint: str | Path, store: str | Path, protocol: str, out_dir: str | Path | None,
                        model: str | None = None, batch_size: int = 32, device: str | None = None,
                        workers: int | None = None, clips: int = 1, progress: bool = False,
                        say: Callable[[str], None] | None = None, average: str | None = None,
                        flip_test: bool | None = None) -> dict:
    """The test split of `protocol` in `store` through the weights in `checkpoint`, `clips` clips a
    sample: its classification report (with `left_out`: the test samples the model could not be given,
    by reason; `notes`: `store_notes`, each also given to `say` before the work), also written as
    out_dir/metrics.json (kind "eval"), confusion.png and scores.npz when out_dir is given. `model`,
    when given, must be the checkpoint's. CheckpointError where they do not fit; ConfigError where
    out_dir may not take the result; StoreLockedError while a writer holds the store (it is held for
    reading meanwhile). `progress`: a bar on stderr. A run trained with --sync-bn on GPUs evaluates on a
    CPU too. `average` ("logits" or "prob") and `flip_test`: None, the run's (its test_average and
    flip_test: the model's reference test for a run that did not choose); both go into the report."""
    if out_dir is not None:
        check_result_folder(Path(out_dir))
    path = Path(checkpoint)
    saved = load_checkpoint(path)
    config = evaluation_config(saved, device, workers)
    average = config.run.test_average if average is None else average
    flip_test = config.run.flip_test if flip_test is None else flip_test
    if average not in AVERAGES:
        raise ConfigError(f"average must be one of {AVERAGES}, got {average!r}")
    if flip_test and not config.data.clip.heatmaps:
        raise ConfigError(f"the flip test mirrors the heatmaps: {saved.model_name} takes none")
    with hold_store_for_reading(store):  # no extract or split rewrites it while it is read
        info = read_split(store, protocol, "test", *config.data.clip.needs)
        check_checkpoint_fits(saved, path, model, info.class_names)
        notes = store_notes(saved, path, config, info)
        for note in notes:
            if say is not None:
                say(note)
        net, runtime = trained_network(saved, path, config)
        data = SplitData(info, config.clip_spec(), runtime.device, config.seed, config.workers)
        with ProgressBar(total=len(info) * clips, unit="clips", label="eval", enabled=progress) as bar:
            result = evaluate_split(net, data, batch_size, runtime, clips, bar, average, flip_test)
        return write_split_evaluation(result, data, None if out_dir is None else Path(out_dir), {
            "kind": "eval", "checkpoint": str(path), "epoch": saved.state.epoch, "model": saved.model_name,
            "protocol": protocol, "split": "test", "store": str(store), "clips": clips, "average": average,
            "flip_test": flip_test, "stream": config.data.clip.stream, "notes": notes})
