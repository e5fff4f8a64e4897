"""Training runs: `fit(TrainConfig)`, what `ntu-train fit` calls.

    config = TrainConfig(store="ntu60.zarr", protocol="xsub", model="ccdfarm", out="runs/ccdfarm")
    report = fit(config)             # test metrics of the final weights
    # the same under DDP, one process per GPU (RANK, WORLD_SIZE, LOCAL_RANK from torchrun):
    #   torchrun --nproc-per-node 8 -m cli.train fit --store ntu60.zarr --protocol xsub --model ccdfarm ...

A run directory holds: config.json (the TrainConfig, its recipe filled in), last.pt (after every epoch,
and every `checkpoint_every` steps), best.pt (the epoch with the best test top-1), metrics.jsonl (one
line per epoch: train loss, the heads' summed loss and top-1, test loss, top-1 and top-5, lr, clips/s;
the losses are the cross-entropy of the prediction, train and test alike), metrics.json, scores.npz
and confusion.png (the final weights on the test split, `test_clips` clips a sample), and TensorBoard
events where tensorboard is installed. One `fit` writes a run directory at a time: a second one fails
at once naming the holder's pid (the lock of ntu_pipeline/store/lock.py, inside the directory).

Recipes: `model.training.config` (HCN's paper for hcn, CC-DFARM's for the others), printed first. The learning
rate warms up linearly, then follows the recipe's schedule per step (cosine to 0, or x lr_decay per
epoch); gradients are clipped at clip_norm. With `i3d_checkpoint` the pretrained I3D parameters train
at pretrained_lr x the rate in their own parameter group (lr 0.1 wipes out a pretrained I3D); the
classifier it re-initialises trains at the full rate.

Nothing in a step waits for the device: the running sums stay there and are copied back without
blocking every LOG_EVERY steps, each copy read LOG_EVERY steps later, at the same step in every process
(so a NaN loss stops every process together, within 2 x LOG_EVERY steps of it: model/epoch.py); labels
were checked once per split. Checkpoints are written whole (atomic.py), best.pt
before last.pt, so a kill at any moment leaves a run that resumes to the same result. Resuming is
exact: the data order and every augmentation are pure functions of (seed, epoch, sample), dropout is
reseeded from (seed, epoch, step, rank) before each step, the learning rate is a function of the step,
and the checkpoint carries the weights, the optimizer, the epoch, the step within it and the epoch's
running sums (over every process, given back to rank 0 alone).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor, nn

from model.data.split import SplitData, SplitInfo, read_split
from model.results.reports import classification_report
from model.training.checkpoint import (
    CHECKPOINT_FORMAT,
    SUMS,
    Checkpoint,
    RunState,
    check_checkpoint_fits,
    init_stream,
    load_checkpoint,
    load_weights,
    pretrained_names,
    save_checkpoint,
)
from model.training.config import RUNTIME_FIELDS, TrainConfig
from model.training.distributed import Processes, all_sum, broadcast_text, start_processes, stop_processes
from model.training.epoch import CLIPS, CORRECT, HEADS_LOSS, LOSS, Trainer, TrainProgress, check_finite
from model.training.evaluate import evaluate_split
from model.training.runtime import Runtime, build_network
from ntu_pipeline.atomic import atomic_write_text, remove_partials
from ntu_pipeline.errors import LockedError, RunLockedError, TrainingError
from ntu_pipeline.store.lock import hold_lock
from ntu_pipeline.store.splits import describe_left_out

RUN_LOCK = ".ntu-train-lock"


def make_optimizer(net: nn.Module, config: TrainConfig, pretrained: list[str]) -> torch.optim.Optimizer:
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


def _previous_run(config: TrainConfig, resume: bool) -> Checkpoint | None:
    """The checkpoint to resume (checked against the config), or None for a new run."""
    run_dir = Path(config.out)
    last = run_dir / "last.pt"
    if not resume:
        if last.exists():
            raise TrainingError(f"{run_dir} already holds a run (last.pt); continue it with --resume, or "
                                "choose another --out")
        return None
    if not last.is_file():
        raise TrainingError(f"{run_dir}: nothing to resume (no last.pt); start without --resume")
    previous = load_checkpoint(last)
    if previous.format != CHECKPOINT_FORMAT:
        raise TrainingError(f"{last}: written by an older ntu-train ({previous.format}): its weights load "
                            "(eval, --init-from) but its run cannot be resumed; train into a new --out")
    ours, theirs = config.to_dict(), dict(previous.config)
    differ = [k for k in ours if k not in RUNTIME_FIELDS and ours[k] != theirs.get(k)]
    if differ:
        diffs = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours[k]!r} now" for k in differ)
        raise TrainingError(f"{run_dir} was started with other settings ({diffs}); resume with the same ones "
                            "or train into a new --out")
    return previous


def _run_lock(config: TrainConfig, procs: Processes) -> ExitStack:
    """The run directory's lock, held (by rank 0) until the returned stack is closed; every process
    fails together when another fit holds it."""
    run_dir = Path(config.out)
    held, message = ExitStack(), ""
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        busy = f"{run_dir}: another ntu-train fit is writing this run directory"
        try:
            held.enter_context(hold_lock(run_dir / RUN_LOCK, "fit", busy, RunLockedError))
        except LockedError as err:
            message = str(err)
    message = broadcast_text(message, procs)
    if message:
        raise RunLockedError(message)
    return held


def fit(config: TrainConfig, resume: bool = False, stream: TextIO | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train `config.model` on the train split, evaluate on the test split after every epoch; return the
    final report (classification_report of the last weights). `resume` continues RUN_DIR/last.pt.
    Messages go to `stream` (stderr by default, rank 0 only); on_epoch gets each metrics.jsonl line."""
    procs = start_processes(config.device)
    stream = stream or sys.stderr
    say = (lambda text: print(text, file=stream, flush=True)) if procs.main else (lambda text: None)
    run_dir = Path(config.out)
    new_dir = procs.main and not run_dir.exists()
    try:
        with _run_lock(config, procs):
            if procs.main:
                remove_partials(run_dir)  # what a kill left of a write
            return _fit(config, resume, procs, say, stream, on_epoch)
    except BaseException:
        if new_dir:  # a run refused before it wrote anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    finally:
        stop_processes(procs)


def _splits(config: TrainConfig, procs: Processes, say) -> tuple[SplitInfo, SplitInfo]:
    infos = tuple(read_split(config.store, config.protocol, part, config.uses_rgb, config.uses_skeleton)
                  for part in ("train", "test"))
    for info in infos:
        if info.left_out:
            say(f"{info.part}: {sum(info.left_out.values())} samples left out "
                f"({describe_left_out(info.left_out)})")
    if len(infos[0]) < config.batch_size:
        raise TrainingError(f"the train split has {len(infos[0])} samples, fewer than one batch "
                            f"(--batch-size {config.batch_size})")
    if config.batch_size % procs.world:
        raise TrainingError(f"--batch-size {config.batch_size} is global: it must divide among the "
                            f"{procs.world} processes")
    return infos


def _fit(config: TrainConfig, resume: bool, procs: Processes, say, stream: TextIO, on_epoch) -> dict:
    run_dir = Path(config.out)
    previous = _previous_run(config, resume)
    train_info, test_info = _splits(config, procs, say)
    class_names = train_info.class_names
    if previous is not None:
        check_checkpoint_fits(previous, run_dir / "last.pt", config.model, class_names)
    say(config.describe_recipe())

    torch.manual_seed(config.seed)  # the initial weights, the same in every process
    net = build_network(config.model, len(class_names), config.model_options(), procs.device,
                        config.sync_bn and procs.group)
    pretrained: list[str] = []
    if previous is not None:
        load_weights(net, previous, run_dir / "last.pt")
        pretrained = previous.pretrained
    else:
        if config.i3d_checkpoint:
            pretrained = pretrained_names(net, config.i3d_checkpoint)
            say(f"I3D from {config.i3d_checkpoint}: {len(pretrained)} parameters at "
                f"{config.pretrained_lr}x lr")
        for path in config.init_from:
            say(init_stream(net, path, class_names))
    optimizer = make_optimizer(net, config, pretrained)
    if previous is not None:
        optimizer.load_state_dict(previous.optimizer)
    cuda = procs.device.type == "cuda"
    train_net: nn.Module = net
    if procs.group:  # under torchrun, even alone: what runs on two GPUs runs on one
        devices = [procs.device.index] if cuda else None
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=devices)
    eval_net: nn.Module = net
    if config.compile:
        train_net, eval_net = torch.compile(train_net), torch.compile(net)
    runtime = Runtime(procs.device, config.bf16)

    say(f"loading {config.store} {config.protocol}: train {len(train_info)}, test {len(test_info)} samples")
    train_data, test_data = (SplitData(info, config.clip_spec(), procs.device, config.seed, config.workers,
                                       procs.rank, procs.world) for info in (train_info, test_info))
    trainer = Trainer(config, procs, net, train_net, optimizer, runtime, train_data,
                      len(train_info) // config.batch_size)
    state = previous.state if previous is not None else RunState()
    if procs.main:
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=1) + "\n")
    board = _tensorboard(run_dir) if procs.main else None

    def checkpoint(path: Path, run: RunState) -> None:
        if procs.main:
            rng = {"torch": torch.get_rng_state(),
                   "cuda": list(torch.cuda.get_rng_state_all()) if cuda else []}
            save_checkpoint(path, Checkpoint(config.model, list(class_names), train_info.dataset,
                                             config.to_dict(), net.state_dict(), optimizer.state_dict(), run,
                                             pretrained, rng, inputs={"rgb": train_info.rgb_options}))

    def partial(run: RunState, step: int, total: Tensor) -> None:  # mid-epoch: last.pt only
        checkpoint(run_dir / "last.pt", RunState(run.epoch, step, run.history, run.best_top1, run.best_epoch,
                                                 total.cpu()))

    final = None
    while state.epoch < config.epochs:
        epoch, start = state.epoch, state.step
        sums = torch.zeros(len(SUMS), dtype=torch.float64, device=procs.device)
        if start and procs.main:
            sums += state.sums.to(procs.device)  # the epoch so far, every process's: counted once, here
        started = time.monotonic()
        bar = TrainProgress(total=(trainer.steps - start) * config.batch_size, unit="clips",
                            label=f"epoch {epoch + 1}", stream=stream, enabled=procs.main and config.progress)
        with bar:
            sums, lr = trainer.train_epoch(epoch, start, sums, bar, functools.partial(partial, state))
        seconds = time.monotonic() - started
        total = all_sum(sums, procs).cpu()
        check_finite(total, epoch, trainer.steps, lr)
        logits, labels = evaluate_split(eval_net, test_data, config.batch_size // procs.world, runtime)
        report = classification_report(logits, labels, class_names)
        line = {"epoch": epoch + 1, "train_loss": float(total[LOSS] / total[CLIPS]),
                "train_heads_loss": float(total[HEADS_LOSS] / total[CLIPS]),
                "train_top1": float(total[CORRECT] / total[CLIPS]), "test_loss": report["loss"],
                "test_top1": report["top1"], "test_top5": report["top5"], "lr": lr,
                "seconds": round(seconds, 3)}
        line["clips_per_s"] = round((trainer.steps - start) * config.batch_size / max(seconds, 1e-9), 2)
        improved = report["top1"] > state.best_top1
        state = RunState(epoch + 1, 0, [*state.history, line], max(state.best_top1, report["top1"]),
                         epoch + 1 if improved else state.best_epoch)
        if improved:  # before last.pt: a kill between the two resumes the epoch and writes both again
            checkpoint(run_dir / "best.pt", state)
        checkpoint(run_dir / "last.pt", state)
        if procs.main:
            _log_epoch(run_dir, state.history, line, board, say, config.epochs)
            if on_epoch is not None:
                on_epoch(line)
        final = (logits, labels)
    return _final_evaluation(config, eval_net, test_data, runtime, procs, final, state, board)


def _final_evaluation(config: TrainConfig, net: nn.Module, test_data: SplitData, runtime: Runtime,
                      procs: Processes, final, state: RunState, board) -> dict:
    """The final weights on the test split (`test_clips` clips a sample), written into the run directory."""
    from model.training.evaluate import write_split_evaluation

    run_dir = Path(config.out)
    if final is None or config.test_clips > 1:  # resumed after the last epoch, or a multi-clip test
        final = evaluate_split(net, test_data, config.batch_size // procs.world, runtime, config.test_clips)
    report = write_split_evaluation(final, test_data, run_dir if procs.main else None, {
        "checkpoint": str(run_dir / "last.pt"), "epoch": state.epoch, "model": config.model,
        "protocol": config.protocol, "split": "test", "clips": config.test_clips})
    if board is not None:
        board.close()
    return report


def _log_epoch(run_dir: Path, history: list[dict], line: dict, board, say, epochs: int) -> None:
    """Rewrite metrics.jsonl from the checkpoint's history (so it always matches last.pt), TensorBoard,
    and the epoch's line on screen."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(item) + "\n" for item in history))
    if board is not None:
        for key, value in line.items():
            if key != "epoch":
                board.add_scalar(key, value, line["epoch"])
    say(f"epoch {line['epoch']}/{epochs}: train loss {line['train_loss']:.4f} top1 "
        f"{line['train_top1']:.3f} | test loss {line['test_loss']:.4f} top1 {line['test_top1']:.4f} "
        f"top5 {line['test_top5']:.4f} | {line['clips_per_s']:.1f} clips/s")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
