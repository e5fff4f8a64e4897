"""Training and evaluation runs: `fit(TrainConfig)` and `evaluate_checkpoint(...)`, what `ntu-train` calls.

    config = TrainConfig(store="ntu60.zarr", protocol="xsub", model="ccdfarm", out="runs/ccdfarm")
    report = fit(config)             # test metrics of the final weights
    report = evaluate_checkpoint("runs/ccdfarm/best.pt", "ntu60.zarr", "xsub", out_dir="runs/eval")
    # the same under DDP, one process per GPU (RANK, WORLD_SIZE, LOCAL_RANK from torchrun):
    #   torchrun --nproc-per-node 8 -m cli.train fit --store ntu60.zarr --protocol xsub --model ccdfarm ...

A run directory holds: config.json (the TrainConfig), last.pt (after every epoch, and every
`checkpoint_every` steps), best.pt (the epoch with the best test top-1), metrics.jsonl (one line per
epoch: train loss and top-1, test loss, top-1 and top-5, lr, clips/s), metrics.json and confusion.png
(the final weights on the test split), and TensorBoard events where tensorboard is installed.

Recipe (the paper's where it says, the field's where it does not): SGD, momentum 0.9, lr 0.1 at batch 32
scaled linearly with the global batch, weight decay 5e-4 (PYSKL's SGD recipes), a linear warm-up over
the first 5 epochs (CTR-GCN) then cosine annealing to 0 per step, 50 epochs, gradient norm clipped at
40 (mmaction2/PYSKL). With `i3d_checkpoint` the pretrained I3D parameters train at 0.1x the learning
rate in their own parameter group (lr 0.1 wipes out a pretrained I3D; MSAF fine-tunes it with Adam at
1e-4); the classifier it re-initialises trains at the full rate. On CUDA: bf16 autocast and
channels_last_3d; on CPU: fp32 (oneDNN's bf16 conv3d is unreliable there, see the README).

Checkpoints are written to a temporary file and moved into place (os.replace), so a kill -9 leaves the
previous one whole, and hold only tensors, numbers, strings, lists and dicts (torch.load(...,
weights_only=True) reads them). Resuming is exact: the data order and every augmentation are pure
functions of (seed, epoch, sample), dropout is reseeded from (seed, epoch, step, rank) before each step,
the learning rate is a function of the step, and the checkpoint carries the weights, the optimizer, the
epoch, the step within it and the epoch's running sums.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

import model as models
from model.checkpoint import (
    CHECKPOINT_FORMAT,
    check_checkpoint_fits,
    init_stream,
    load_checkpoint,
    pretrained_names,
    save_checkpoint,
)
from model.config import RUNTIME_FIELDS, TrainConfig, default_device, default_workers
from model.data import SplitData, read_split
from model.evaluate import classification_report, confusion_matrix, gather_predictions, predict, write_report
from ntu_pipeline.errors import CheckpointError, NonFiniteLossError, TrainingError
from ntu_pipeline.progress import ProgressBar
from ntu_pipeline.store.splits import describe_left_out

LOG_EVERY = 10  # steps between progress updates and loss checks (each one waits for the device)


def learning_rate(step: int, total_steps: int, warmup_steps: int, base: float) -> float:
    """lr at optimiser step `step` (0-based): linear warm-up to `base` over `warmup_steps`, then cosine
    annealing to 0 at `total_steps`."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return base * 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The torch seed set before a training step (dropout), a pure function of its arguments."""
    return int(np.random.SeedSequence([seed, epoch, step, rank, 2]).generate_state(1, np.uint64)[0] >> 1)


# --- distributed set-up -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Processes:
    """This process's place in the run: rank, world size, device (cuda:LOCAL_RANK under DDP)."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_processes(device: str) -> Processes:
    """One process, or this one of torchrun's (RANK, WORLD_SIZE, LOCAL_RANK in the environment): joins
    the process group (nccl on CUDA, gloo on CPU) and picks its GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes(0, 1, torch.device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Processes(rank, world, torch.device(f"cuda:{local}" if cuda else device))


def all_sum(values: Tensor, procs: Processes) -> Tensor:
    """Sum a small tensor over the processes (itself with one process)."""
    if procs.world > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


class TrainProgress(ProgressBar):
    """The stdlib progress bar with the running loss, accuracy and learning rate after the rate."""

    postfix = ""

    def line(self) -> str:
        return f"{super().line()} {self.postfix}"


# --- the run ------------------------------------------------------------------------------------------

def _optimizer(net: nn.Module, config: TrainConfig, pretrained: list[str]) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (L2 weight decay); the pretrained parameters in a second
    group whose `lr_scale` is config.pretrained_lr."""
    chosen = set(pretrained)
    fresh = [p for n, p in net.named_parameters() if n not in chosen]
    groups = [{"params": fresh, "lr_scale": 1.0}]
    if chosen:
        groups.append({"params": [p for n, p in net.named_parameters() if n in chosen],
                       "lr_scale": config.pretrained_lr})
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.base_lr(), weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.base_lr(), momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _check_resume(config: TrainConfig, saved: dict, run_dir: Path) -> None:
    ours, theirs = config.to_dict(), dict(saved)
    differ = [k for k in ours if k not in RUNTIME_FIELDS and ours[k] != theirs.get(k)]
    if differ:
        diffs = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours[k]!r} now" for k in differ)
        raise TrainingError(f"{run_dir} was started with other settings ({diffs}); resume with the same ones "
                            "or train into a new --out")


def _setup_run_dir(config: TrainConfig, resume: bool) -> tuple[Path, dict | None]:
    run_dir = Path(config.out)
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no last.pt); start without --resume")
        state = load_checkpoint(last)
        _check_resume(config, state["config"], run_dir)
        return run_dir, state
    if last.exists():
        raise TrainingError(f"{run_dir} already holds a run (last.pt); continue it with --resume, or choose "
                            "another --out")
    return run_dir, None


def fit(config: TrainConfig, resume: bool = False, stream: TextIO | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train `config.model` on the train split, evaluate on the test split after every epoch; return the
    final report (classification_report of the last weights). `resume` continues RUN_DIR/last.pt.
    Messages go to `stream` (stderr by default, rank 0 only); on_epoch gets each metrics.jsonl line."""
    procs = start_processes(config.device)
    stream = stream or sys.stderr
    say = (lambda text: print(text, file=stream, flush=True)) if procs.main else (lambda text: None)
    try:
        return _fit(config, resume, procs, say, stream, on_epoch)
    finally:
        if procs.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(config: TrainConfig, resume: bool, procs: Processes, say, stream: TextIO, on_epoch) -> dict:
    run_dir, state = _setup_run_dir(config, resume)
    if config.batch_size % procs.world:
        raise TrainingError(f"--batch-size {config.batch_size} is global: it must divide among the "
                            f"{procs.world} processes")
    train_info, test_info = (read_split(config.store, config.protocol, part, config.uses_rgb,
                                        config.uses_skeleton) for part in ("train", "test"))
    steps = len(train_info) // config.batch_size
    if steps == 0:
        raise TrainingError(f"the train split has {len(train_info)} samples, fewer than one batch "
                            f"(--batch-size {config.batch_size})")
    class_names = train_info.class_names
    if state is not None:
        check_checkpoint_fits(state, run_dir / "last.pt", config.model, class_names)
    for info in (train_info, test_info):
        if info.left_out:
            say(f"{info.part}: {sum(info.left_out.values())} samples left out "
                f"({describe_left_out(info.left_out)})")

    torch.manual_seed(config.seed)  # the initial weights, the same in every process
    net = models.build(config.model, len(class_names), **config.model_options())
    pretrained: list[str] = []
    if state is not None:
        net.load_state_dict(state["model"])
        pretrained = list(state["pretrained"])
    else:
        if config.i3d_checkpoint:
            pretrained = pretrained_names(net, config.i3d_checkpoint)
            say(f"I3D from {config.i3d_checkpoint}: {len(pretrained)} parameters at "
                f"{config.pretrained_lr}x lr")
        for path in config.init_from:
            say(init_stream(net, path, class_names))
    cuda = procs.device.type == "cuda"
    if config.sync_bn and procs.world > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(procs.device)
    if cuda and config.uses_rgb:
        models.to_channels_last_3d(net)
    optimizer = _optimizer(net, config, pretrained)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    train_net: nn.Module = net
    if procs.world > 1:
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=[procs.device.index] if cuda
                                                        else None)
    eval_net: nn.Module = net
    if config.compile:
        train_net, eval_net = torch.compile(train_net), torch.compile(net)

    spec = config.clip_spec()
    say(f"loading {config.store} {config.protocol}: train {len(train_info)}, test {len(test_info)} samples")
    train_data, test_data = (SplitData(info, spec, procs.device, config.seed, config.workers, procs.rank,
                                       procs.world) for info in (train_info, test_info))
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
    board = _tensorboard(run_dir) if procs.main else None

    epoch = state["epoch"] if state else 0
    start_step = state["step"] if state else 0
    history: list[dict] = list(state["history"]) if state else []
    best = state["best_top1"] if state else -1.0
    sums = state["epoch_sums"].to(procs.device) if state else None
    total, warmup = config.epochs * steps, round(config.warmup_epochs * steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.bf16 else nullcontext()
    bf16 = cuda and config.bf16
    final: dict | None = None

    def checkpoint(path: Path, epoch_: int, step_: int, sums_: Tensor) -> None:
        save_checkpoint(path, {
            "format": CHECKPOINT_FORMAT, "model_name": config.model, "num_classes": len(class_names),
            "class_names": list(class_names), "dataset": train_info.dataset, "config": config.to_dict(),
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch_, "step": step_,
            "global_step": epoch_ * steps + step_, "history": history, "best_top1": best,
            "epoch_sums": sums_.cpu(), "pretrained": pretrained, "seed": config.seed,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": list(torch.cuda.get_rng_state_all()) if cuda else []},
        })

    while epoch < config.epochs:
        net.train()
        if sums is None or start_step == 0:
            sums = torch.zeros(3, dtype=torch.float64, device=procs.device)  # loss sum, correct, clips
        started = time.monotonic()
        bar = TrainProgress(total=(steps - start_step) * config.batch_size, unit="clips",
                            label=f"epoch {epoch + 1}", stream=stream, enabled=procs.main and config.progress)
        lr = learning_rate(epoch * steps + start_step, total, warmup, config.base_lr())
        with bar:
            for step, batch in enumerate(train_data.batches(epoch, config.batch_size, True, start_step),
                                         start=start_step):
                torch.manual_seed(step_seed(config.seed, epoch, step, procs.rank))
                lr = learning_rate(epoch * steps + step, total, warmup, config.base_lr())
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                rgb = batch.rgb
                if rgb is not None and cuda:
                    rgb = rgb.contiguous(memory_format=torch.channels_last_3d)
                with autocast:
                    out = train_net(rgb, batch.skeleton, batch.motion)
                loss = models.heads_loss(out, batch.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip_norm > 0:
                    nn.utils.clip_grad_norm_(net.parameters(), config.clip_norm)
                optimizer.step()
                correct = (out["logits"].argmax(1) == batch.labels).sum()
                sums += torch.stack([loss.detach().double() * len(batch.labels), correct.double(),
                                     sums.new_tensor(len(batch.labels))])
                bar.advance(config.batch_size)
                last_step = step + 1 == steps
                save_now = bool(config.checkpoint_every) and (step + 1) % config.checkpoint_every == 0 \
                    and not last_step
                if (step + 1) % LOG_EVERY == 0 or last_step or save_now:  # waits for the device
                    seen = all_sum(sums, procs).tolist()
                    if not math.isfinite(seen[0]):
                        raise NonFiniteLossError(
                            f"the training loss became {seen[0]} in epoch {epoch + 1} by step {step + 1} "
                            f"(lr {lr:.3g}); no checkpoint was written after it. Lower --lr or check the "
                            "data")
                    bar.postfix = f"loss {seen[0] / seen[2]:.4f} top1 {seen[1] / seen[2]:.3f} lr {lr:.3g}"
                if save_now and procs.main:
                    checkpoint(run_dir / "last.pt", epoch, step + 1, sums)
        seconds = time.monotonic() - started
        train_sums = all_sum(sums, procs).tolist()
        logits, labels = _evaluate(eval_net, test_data, config, procs, bf16)
        report = classification_report(logits, labels, class_names)
        line = {"epoch": epoch + 1, "train_loss": train_sums[0] / train_sums[2],
                "train_top1": train_sums[1] / train_sums[2], "test_loss": report["loss"],
                "test_top1": report["top1"], "test_top5": report["top5"], "lr": lr,
                "seconds": round(seconds, 3),
                "clips_per_s": round((steps - start_step) * config.batch_size / max(seconds, 1e-9), 2)}
        history.append(line)
        epoch, start_step = epoch + 1, 0
        if procs.main:
            improved = report["top1"] > best
            best = max(best, report["top1"])
            checkpoint(run_dir / "last.pt", epoch, 0, sums)
            if improved:
                checkpoint(run_dir / "best.pt", epoch, 0, sums)
            _write_jsonl(run_dir / "metrics.jsonl", history)
            if board is not None:
                for key, value in line.items():
                    if key != "epoch":
                        board.add_scalar(key, value, epoch)
            say(f"epoch {epoch}/{config.epochs}: train loss {line['train_loss']:.4f} top1 "
                f"{line['train_top1']:.3f} | test loss {line['test_loss']:.4f} top1 {line['test_top1']:.4f} "
                f"top5 {line['test_top5']:.4f} | {line['clips_per_s']:.1f} clips/s")
            if on_epoch is not None:
                on_epoch(line)
        final = {"logits": logits, "labels": labels}

    if final is None:  # resumed after the last epoch: evaluate the final weights again
        logits, labels = _evaluate(eval_net, test_data, config, procs, bf16)
        final = {"logits": logits, "labels": labels}
    report = classification_report(final["logits"], final["labels"], class_names)
    report.update({"checkpoint": str(run_dir / "last.pt"), "epoch": epoch, "model": config.model,
                   "protocol": config.protocol, "split": "test"})
    if procs.main:
        conf = confusion_matrix(final["logits"].argmax(1), final["labels"], len(class_names))
        write_report(report, conf, class_names, run_dir,
                     title=f"{config.model} {config.protocol} test top1 {report['top1']:.4f}")
        if board is not None:
            board.close()
    return report


def _evaluate(net: nn.Module, data: SplitData, config: TrainConfig, procs: Processes,
              bf16: bool) -> tuple[Tensor, Tensor]:
    """Logits (n, K) and labels (n,) of the whole split, each process predicting its share."""
    logits, positions = gather_predictions(*predict(net, data, max(config.batch_size // procs.world, 1),
                                                    bf16))
    return logits, torch.from_numpy(data.info.labels)[positions]


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    """Rewrite the whole log from the checkpoint's history, so it always matches last.pt."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    os.replace(tmp, path)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


# --- evaluation of a checkpoint -----------------------------------------------------------------------

def evaluate_checkpoint(checkpoint: str | Path, store: str | Path, protocol: str, out_dir: str | Path | None,
                        model: str | None = None, batch_size: int = 32, device: str | None = None,
                        workers: int | None = None) -> dict:
    """The test split of `protocol` in `store` through the weights in `checkpoint`: its
    classification_report, also written as out_dir/metrics.json and confusion.png when out_dir is
    given. `model`, when given, must be the checkpoint's. CheckpointError where they do not fit."""
    path = Path(checkpoint)
    state = load_checkpoint(path)
    saved = TrainConfig(**{**state["config"], "device": device or default_device(),
                           "workers": default_workers() if workers is None else workers})
    info = read_split(store, protocol, "test", saved.uses_rgb, saved.uses_skeleton)
    check_checkpoint_fits(state, path, model, info.class_names)
    net = models.build(state["model_name"], state["num_classes"], **saved.model_options())
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit {state['model_name']}: "
                              f"{str(err).splitlines()[0]}") from err
    dev = torch.device(saved.device)
    net = net.to(dev)
    if dev.type == "cuda" and saved.uses_rgb:
        models.to_channels_last_3d(net)
    data = SplitData(info, saved.clip_spec(), dev, saved.seed, saved.workers)
    logits, positions = predict(net, data, batch_size, bf16=dev.type == "cuda" and saved.bf16)
    labels = torch.from_numpy(info.labels)[positions]
    report = classification_report(logits, labels, info.class_names)
    report.update({"checkpoint": str(path), "epoch": state["epoch"], "model": state["model_name"],
                   "protocol": protocol, "split": "test", "store": str(store)})
    if out_dir is not None:
        conf = confusion_matrix(logits.argmax(1), labels, len(info.class_names))
        write_report(report, conf, info.class_names, Path(out_dir),
                     title=f"{state['model_name']} {protocol} test top1 {report['top1']:.4f}")
    return report
