"""Training runs: `fit(TrainConfig)`, what `ntu-train fit` calls.

    config = TrainConfig.from_options(store="ntu60.zarr", protocol="xsub", model="ccdfarm", out="runs/x")
    report = fit(config)             # test metrics of the final weights
    # the same under DDP, one process per GPU (RANK, WORLD_SIZE, LOCAL_RANK from torchrun):
    #   python -m cli.torchrun --nproc-per-node 8 -m cli.train fit --store ntu60.zarr --protocol xsub ...

A fit runs in three steps: `set_up` (the previous run's checks, the splits, the machine's bounds, the
network, the optimizer, the data: a `Run`), `train_epochs`, and `final_evaluation`. It holds the store
for reading throughout (`hold_store_for_reading`: no `extract` or `split` rewrites it meanwhile).

A run directory holds: config.json (the TrainConfig in its parts, the recipe filled in, and `trained_on`:
the process count and the store's identity), last.pt (after every epoch, and every `checkpoint_every`
steps), best.pt (the epoch with the best test top-1), metrics.jsonl (one line per epoch: train loss, the
heads' summed loss and top-1, test loss, top-1 and top-5, lr, clips/s; the losses are the cross-entropy
of the prediction, train and test alike), metrics.json, scores.npz and confusion.png (the final weights
on the test split, `test_clips` clips a sample), and TensorBoard events where tensorboard is installed.
One `fit` writes a run directory at a time: a second one fails at once naming the holder's pid (the lock
of ntu_pipeline/store/lock.py, inside the directory).

Recipes: `model.training.config` (HCN's paper for hcn, CC-DFARM's for i3d and the fused models, each
reference model its released config's), printed first. The learning rate warms up linearly, then follows
the recipe's schedule per step (cosine to 0, x lr_decay per epoch, or x lr_decay at each milestone epoch;
SGD with Nesterov momentum where the recipe says); gradients are clipped at clip_norm. With
`i3d_checkpoint` the pretrained I3D parameters train at pretrained_lr x the rate in their own parameter
group (lr 0.1 wipes out a pretrained I3D); the classifier it re-initialises trains at the full rate.

Nothing in a step waits for the device: the running sums stay there and are copied back without
blocking every LOG_EVERY steps, each copy read LOG_EVERY steps later, at the same step in every process
(so a NaN loss stops every process together, within 2 x LOG_EVERY steps of it: model/epoch.py); labels
were checked once per split. Checkpoints are written whole (atomic.py), best.pt
before last.pt, so a kill at any moment leaves a run that resumes to the same result. Resuming is
exact: the data order, every augmentation and dropout's masks are pure functions of (seed, epoch,
sample) (model/networks/dropout.py), torch's generator is reseeded from (seed, epoch, step, rank) before
each step, the learning rate is a function of the step,
and the checkpoint carries the weights, the optimizer, the epoch, the step within it and the epoch's
running sums (over every process, given back to rank 0 alone). A resumed run must have the settings it
was started with but how it executes (`RunConfig`), the same process count and the same store contents
(its stages' input digests and options, the split's samples); `--epochs` may grow past the epochs done,
to continue a run, finished or not (`extension_notice` says what that does to the schedule).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor, nn

from model.data.clip_recipes import REFERENCE_CLIPS as REFERENCE_MODELS
from model.data.split import SplitData, SplitInfo, read_split
from model.results.reports import classification_report
from model.training.checkpoint import (
    SUMS,
    Checkpoint,
    RunState,
    check_checkpoint_fits,
    check_trained_on,
    load_checkpoint,
    load_stream,
    load_weights,
    pretrained_names,
    resumable_checkpoint,
    save_checkpoint,
    trained_on,
)
from model.training.config import TrainConfig
from model.training.distributed import Processes, all_sum, broadcast_text, start_processes, stop_processes
from model.training.epoch import (
    CLIPS,
    CORRECT,
    HEADS_LOSS,
    LOSS,
    Trainer,
    TrainProgress,
    check_finite,
    learning_rate,
)
from model.training.evaluate import average_scores, evaluate_split, write_split_evaluation
from model.training.runtime import Runtime, build_network, check_device, check_machine, compile_network
from ntu_pipeline.atomic import atomic_write_text, remove_partials
from ntu_pipeline.errors import ConfigError, LockedError, RunLockedError, TrainingError
from ntu_pipeline.store import hold_store_for_reading
from ntu_pipeline.store.lock import hold_lock
from ntu_pipeline.store.splits import describe_left_out

RUN_LOCK = ".ntu-train-lock"


def make_optimizer(net: nn.Module, config: TrainConfig, pretrained: list[str]) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (L2 weight decay) of config.recipe; the pretrained parameters
    in a second group whose `lr_scale` is the recipe's pretrained_lr."""
    recipe, chosen = config.recipe, set(pretrained)
    fresh = [p for n, p in net.named_parameters() if n not in chosen]
    groups = [{"params": fresh, "lr_scale": 1.0}]
    if chosen:
        groups.append({"params": [p for n, p in net.named_parameters() if n in chosen],
                       "lr_scale": recipe.pretrained_lr})
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.base_lr(), weight_decay=recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.base_lr(), momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)


def fit(config: TrainConfig, resume: bool = False, stream: TextIO | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train `config`'s network on the train split, evaluate on the test split after every epoch; return
    the final report (classification_report of the last weights). `resume` continues RUN_DIR/last.pt.
    Messages go to `stream` (stderr by default, rank 0 only); on_epoch gets each metrics.jsonl line."""
    check_device(config.run.device)
    procs = start_processes(config.run.device)
    stream = stream or sys.stderr
    say = (lambda text: print(text, file=stream, flush=True)) if procs.main else (lambda text: None)
    run_dir = Path(config.run.out)
    new_dir = procs.main and not run_dir.exists()
    try:
        with _run_lock(run_dir, procs), hold_store_for_reading(config.data.store):
            if procs.main:
                remove_partials(run_dir)  # what a kill left of a write
            run = set_up(config, resume, procs, say)
            try:
                final = train_epochs(run, stream, say, on_epoch)
                return final_evaluation(run, final)
            finally:
                if run.board is not None:
                    run.board.close()
    except BaseException:
        if new_dir:  # a run refused before it wrote anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    finally:
        stop_processes(procs)


def interrupted_message(out: str | Path) -> str:
    """What to tell a user whose fit into `out` was interrupted: resume from last.pt where there is one,
    else run the command again (a fit stopped before its first checkpoint has nothing to resume)."""
    last = Path(out) / "last.pt"
    if last.is_file():
        return f"interrupted; {last} holds the last checkpoint: continue with the same command and --resume"
    return (f"interrupted before the first checkpoint ({last} was not written): nothing to resume; run the "
            "same command again, without --resume")


def _run_lock(run_dir: Path, procs: Processes) -> ExitStack:
    """The run directory's lock, held (by rank 0) until the returned stack is closed; every process
    fails together when another fit holds it."""
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


# --- set-up -------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A fit once set up: its config and processes, the splits' data, the network (`net`; `train_net`
    wraps it in DDP and torch.compile where asked, `eval_net` in torch.compile), the optimizer, the
    runtime, the epoch's Trainer, the pretrained parameter names, what it trains on (`trained_on`),
    where it is (`state`, replaced after each epoch) and its TensorBoard writer (None without)."""

    config: TrainConfig
    procs: Processes
    train_info: SplitInfo
    test_data: SplitData
    net: nn.Module
    eval_net: nn.Module
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    trainer: Trainer
    pretrained: list[str]
    trained_on: dict
    state: RunState
    board: object | None = None

    @property
    def dir(self) -> Path:
        return Path(self.config.run.out)

    def save(self, path: Path, state: RunState) -> None:
        """The checkpoint of the run at `state`, written by rank 0."""
        if not self.procs.main:
            return
        cuda = self.procs.device.type == "cuda"
        rng = {"torch": torch.get_rng_state(), "cuda": list(torch.cuda.get_rng_state_all()) if cuda else []}
        info = self.train_info
        save_checkpoint(path, Checkpoint(
            self.config.network.model, list(info.class_names), info.dataset, self.config.to_dict(),
            self.net.state_dict(), self.optimizer.state_dict(), state, self.pretrained, rng,
            inputs={"rgb": info.rgb_options}, trained_on=self.trained_on))

    def save_partial(self, state: RunState, step: int, total: Tensor) -> None:
        """Mid-epoch, `step` steps into the epoch after `state` with the running sums `total`: last.pt."""
        self.save(self.dir / "last.pt", RunState(state.epoch, step, state.history, state.best_top1,
                                                 state.best_epoch, total.cpu()))


def set_up(config: TrainConfig, resume: bool, procs: Processes, say: Callable[[str], None]) -> Run:
    """Everything a fit needs before its first step, each refusal one line before anything is allocated:
    the previous run (`resume`) checked against the config, the store and the process count; the splits;
    this machine's bounds; then the network (its starts), the optimizer, the data, config.json."""
    run_dir = Path(config.run.out)
    previous = resumable_checkpoint(config, resume)
    train_info, test_info = _splits(config, procs, say)
    class_names = train_info.class_names
    check_machine(config, procs, train_info, test_info)
    record = trained_on(train_info, test_info, config.stages, procs.world)
    steps = len(train_info) // config.recipe.batch_size
    if previous is not None:
        check_checkpoint_fits(previous, run_dir / "last.pt", config.network.model, class_names)
        check_trained_on(previous.trained_on, record, run_dir, say)
    say(config.describe_recipe())
    if previous is not None and previous.train_config().recipe.epochs != config.recipe.epochs:
        say(extension_notice(previous, config, steps))

    torch.manual_seed(config.seed)  # the initial weights, the same in every process
    net = build_network(config.network.model, len(class_names), config.model_options(), procs.device,
                        config.network.sync_bn and procs.group)
    pretrained = _start_weights(net, config, previous, class_names, say)
    optimizer = make_optimizer(net, config, pretrained)
    if previous is not None:
        optimizer.load_state_dict(previous.optimizer)
    train_net: nn.Module = net
    if procs.group:  # under torchrun, even alone: what runs on two GPUs runs on one
        devices = [procs.device.index] if procs.device.type == "cuda" else None
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=devices)
    eval_net: nn.Module = net
    if config.run.compile:
        train_net, eval_net = compile_network(train_net), compile_network(net)
    runtime = Runtime(procs.device, config.network.bf16)

    say(f"loading {config.data.store} {config.data.protocol}: train {len(train_info)}, test "
        f"{len(test_info)} samples")
    train_data, test_data = (SplitData(info, config.clip_spec(), procs.device, config.seed,
                                       config.run.workers, procs.rank, procs.world)
                             for info in (train_info, test_info))
    trainer = Trainer(config, procs, net, train_net, optimizer, runtime, train_data, steps)
    if procs.main:
        atomic_write_text(run_dir / "config.json",
                          json.dumps({**config.to_dict(), "trained_on": record}, indent=1) + "\n")
    return Run(config, procs, train_info, test_data, net, eval_net, optimizer, runtime, trainer, pretrained,
               record, previous.state if previous is not None else RunState(),
               _tensorboard(run_dir) if procs.main else None)


def extension_notice(previous: Checkpoint, config: TrainConfig, steps: int) -> str:
    """One line on a resumed run whose --epochs changed: what the schedule does now. The exp schedule
    does not depend on the epoch count (the run goes on exactly as one of the new count would); the
    cosine schedule does (it now ends at the new count, so the rate jumps where the run resumes)."""
    old, new = previous.train_config().recipe, config.recipe
    done = previous.state.epoch
    head = f"continuing from epoch {done} with --epochs {new.epochs} (started with {old.epochs}): "
    if new.schedule in ("exp", "step"):
        return head + (f"the {new.schedule} schedule does not depend on the epoch count, so the run goes on "
                       f"as a {new.epochs}-epoch run would")
    step = done * steps + previous.state.step
    was, now = (learning_rate(step, r.epochs * steps, round(r.warmup_epochs * steps), r.base_lr(),
                              r.schedule, r.lr_decay, steps, r.milestones) for r in (old, new))
    return head + (f"the cosine schedule now ends at epoch {new.epochs}, so the lr at step {step} is "
                   f"{now:.3g} where it was {was:.3g} (a {new.epochs}-epoch run would have had other rates "
                   "before)")


def _splits(config: TrainConfig, procs: Processes, say) -> tuple[SplitInfo, SplitInfo]:
    infos = tuple(read_split(config.data.store, config.data.protocol, part, *config.data.clip.needs)
                  for part in ("train", "test"))
    for info in infos:
        if info.left_out:
            say(f"{info.part}: {sum(info.left_out.values())} samples left out "
                f"({describe_left_out(info.left_out)})")
    batch_size = config.recipe.batch_size
    if len(infos[0]) < batch_size:
        raise TrainingError(f"the train split has {len(infos[0])} samples, fewer than one batch "
                            f"(--batch-size {batch_size})")
    if batch_size % procs.world:
        raise TrainingError(f"--batch-size {batch_size} is global: it must divide among the "
                            f"{procs.world} processes")
    return infos


def _start_weights(net: nn.Module, config: TrainConfig, previous: Checkpoint | None,
                   class_names: tuple[str, ...], say) -> list[str]:
    """Load what the network starts from: the previous run's weights, or --i3d-checkpoint and
    --init-from (one checkpoint per stream); the names of the pretrained parameters."""
    if previous is not None:
        load_weights(net, previous, Path(config.run.out) / "last.pt")
        return previous.pretrained
    pretrained: list[str] = []
    network = config.network
    if network.i3d_checkpoint:
        pretrained = pretrained_names(net, network.i3d_checkpoint)
        say(f"I3D from {network.i3d_checkpoint}: {len(pretrained)} parameters at "
            f"{config.recipe.pretrained_lr}x lr")
    streams: dict[str, str] = {}
    for path in network.init_from:
        checkpoint = load_checkpoint(path)
        if checkpoint.model_name in streams:
            raise ConfigError(f"--init-from {streams[checkpoint.model_name]} and {path} both start the "
                              f"{checkpoint.model_name} stream; give one")
        streams[checkpoint.model_name] = path
        say(load_stream(net, checkpoint, path, class_names, config.data.clip.frames))
    return pretrained


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


# --- epochs -------------------------------------------------------------------------------------------

def train_epochs(run: Run, stream: TextIO, say: Callable[[str], None],
                 on_epoch: Callable[[dict], None] | None) -> tuple[Tensor, Tensor] | None:
    """Every epoch from the run's state to the recipe's count, each logged (rank 0); the last one's test
    (logits, labels), None where none was left to train."""
    final = None
    while run.state.epoch < run.config.recipe.epochs:
        line, final = train_epoch(run, stream)
        if run.procs.main:
            _log_epoch(run.dir, run.state.history, line, run.board, say, run.config.recipe.epochs)
            if on_epoch is not None:
                on_epoch(line)
    return final


def train_epoch(run: Run, stream: TextIO) -> tuple[dict, tuple[Tensor, Tensor]]:
    """One epoch (from the step the state is at), its evaluation on the test split, best.pt and last.pt;
    advances run.state. Returns its metrics line and the test (logits, labels)."""
    config, procs, trainer, state = run.config, run.procs, run.trainer, run.state
    batch_size = config.recipe.batch_size
    epoch, start = state.epoch, state.step
    sums = torch.zeros(len(SUMS), dtype=torch.float64, device=procs.device)
    if start and procs.main:
        sums += state.sums.to(procs.device)  # the epoch so far, every process's: counted once, here
    started = time.monotonic()
    bar = TrainProgress(total=(trainer.steps - start) * batch_size, unit="clips", label=f"epoch {epoch + 1}",
                        stream=stream, enabled=procs.main and config.run.progress)
    with bar:
        sums, lr = trainer.train_epoch(epoch, start, sums, bar, functools.partial(run.save_partial, state))
    seconds = time.monotonic() - started
    total = all_sum(sums, procs).cpu()
    check_finite(total, epoch, trainer.steps, lr)
    logits, labels = evaluate_split(run.eval_net, run.test_data, batch_size // procs.world, run.runtime)
    report = classification_report(logits, labels, run.train_info.class_names)
    line = {"epoch": epoch + 1, "train_loss": float(total[LOSS] / total[CLIPS]),
            "train_heads_loss": float(total[HEADS_LOSS] / total[CLIPS]),
            "train_top1": float(total[CORRECT] / total[CLIPS]), "test_loss": report["loss"],
            "test_top1": report["top1"], "test_top5": report["top5"], "lr": lr,
            "seconds": round(seconds, 3)}
    line["clips_per_s"] = round((trainer.steps - start) * batch_size / max(seconds, 1e-9), 2)
    improved = report["top1"] > state.best_top1
    run.state = RunState(epoch + 1, 0, [*state.history, line], max(state.best_top1, report["top1"]),
                         epoch + 1 if improved else state.best_epoch)
    if improved:  # before last.pt: a kill between the two resumes the epoch and writes both again
        run.save(run.dir / "best.pt", run.state)
    run.save(run.dir / "last.pt", run.state)
    return line, (logits, labels)


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


# --- the final evaluation -----------------------------------------------------------------------------

def final_evaluation(run: Run, final: tuple[Tensor, Tensor] | None) -> dict:
    """The final weights on the test split (`test_clips` clips a sample, averaged as `test_average` says,
    with their mirrors where `flip_test`), written into the run directory: the last epoch's evaluation
    where it is that (one clip, no flip; log-softmax for "prob": the mean of one clip's probabilities),
    else evaluated now (a run resumed after its last epoch, a multi-clip or flip test)."""
    config, procs = run.config, run.procs
    clips, average, flip = config.run.test_clips, config.run.test_average, config.run.flip_test
    if final is None or clips > 1 or flip:
        final = evaluate_split(run.eval_net, run.test_data, config.recipe.batch_size // procs.world,
                               run.runtime, clips, average=average, flip_test=flip)
    elif average == "prob":
        final = (average_scores(final[0].softmax(1), 1, average), final[1])
    extra = {"checkpoint": str(run.dir / "last.pt"), "epoch": run.state.epoch, "model": config.network.model,
             "protocol": config.data.protocol, "split": "test", "clips": clips}
    if config.network.model in REFERENCE_MODELS:  # the project's own models' metrics.json as before
        extra.update(average=average, flip_test=flip, stream=config.data.clip.stream)
    return write_split_evaluation(final, run.test_data, run.dir if procs.main else None, extra)
