"""ntu-train's checkpoints: the run state and the weights, written whole, read with weights_only=True.

    save_checkpoint(run / "last.pt", checkpoint)        # atomically (ntu_pipeline/atomic.py)
    checkpoint = load_checkpoint("runs/hcn/best.pt")    # CheckpointError if it is not one of ours
    checkpoint.state.epoch, checkpoint.model            # where the run is; the weights
    checkpoint.train_config()                           # its TrainConfig (from either config layout)
    init_stream(ccdfarm_net, "runs/hcn/best.pt", class_names)   # the HCN stream of a fused model
    checkpoint = resumable_checkpoint(config, resume=True)   # runs/x/last.pt, its settings checked
    check_trained_on(checkpoint.trained_on, trained_on(train, test, stages, world), run_dir, say)

On disk a checkpoint is a flat dict (`Checkpoint.to_dict`) with `format` = CHECKPOINT_FORMAT and only
tensors, numbers, strings, lists and dicts, so `torch.load(path, weights_only=True)` reads it. Formats:
/3 holds the config in parts (`TrainConfig.to_dict`) and `trained_on` (the store's identity and the
process count, which a resumed run must match); /2 the config flat, nothing of the store (it resumes
unchecked, saying so); /1 loads its weights (eval, --init-from) but does not resume.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from model.data.split import SplitInfo
from model.networks.hcn import HCN
from model.networks.i3d import I3D, load_pytorch_i3d
from model.networks.rgbpose import RGBPoseConv3D
from model.training.config import TrainConfig
from ntu_pipeline.atomic import atomic_path
from ntu_pipeline.errors import CheckpointError, ConfigError, TrainingError
from ntu_pipeline.store import open_store

CHECKPOINT_FORMAT = "ntu-train/3"
RESUMABLE_FORMATS = ("ntu-train/2", CHECKPOINT_FORMAT)
READABLE_FORMATS = ("ntu-train/1", *RESUMABLE_FORMATS)  # /1: its weights load; its run does not resume
SUMS = ("loss", "correct", "heads_loss", "clips")  # the epoch's running sums, over every process


@dataclass
class RunState:
    """Where a run is: `epoch` epochs done and `step` steps into the next; `history` (one metrics line
    per epoch done), the best test top-1 and its epoch, and the running sums of the epoch in progress
    (`sums`, SUMS, float64 (4,), summed over every process: a resumed run gives them to rank 0 only)."""

    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best_top1: float = -1.0
    best_epoch: int = 0
    sums: Tensor = field(default_factory=lambda: torch.zeros(len(SUMS), dtype=torch.float64))


@dataclass
class Checkpoint:
    """A checkpoint: what was trained (model_name, class names, dataset, the TrainConfig as a dict), the
    weights and the optimizer, the run state, the pretrained parameter names, the RNG states, how the
    store prepared the inputs, and what the run trained on (`trained_on`; {} before format /3)."""

    model_name: str
    class_names: list[str]
    dataset: str
    config: dict
    model: dict
    optimizer: dict
    state: RunState
    pretrained: list[str]
    rng: dict
    format: str = CHECKPOINT_FORMAT
    inputs: dict = field(default_factory=dict)  # how the store prepared them: {"rgb": the stage's options}
    trained_on: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig (either layout of `config`); CheckpointError for one that is not."""
        try:
            return TrainConfig.from_dict(self.config)
        except ConfigError as err:
            raise CheckpointError(f"a {self.model_name} checkpoint whose config does not read: {err}") \
                from err

    def to_dict(self) -> dict:
        state = self.state
        return {"format": self.format, "model_name": self.model_name, "num_classes": self.num_classes,
                "class_names": list(self.class_names), "dataset": self.dataset, "config": self.config,
                "model": self.model, "optimizer": self.optimizer, "epoch": state.epoch, "step": state.step,
                "history": state.history, "best_top1": state.best_top1, "best_epoch": state.best_epoch,
                "epoch_sums": state.sums.cpu(), "pretrained": list(self.pretrained),
                "seed": self.config.get("seed", 0), "rng": self.rng, "inputs": self.inputs,
                "trained_on": self.trained_on}

    @classmethod
    def from_dict(cls, saved: dict) -> Checkpoint:
        history = list(saved.get("history", []))
        best_epoch = saved.get("best_epoch")
        if best_epoch is None and history:  # format /1: the epoch of the best test top-1 recorded
            best_epoch = max(history, key=lambda line: line["test_top1"])["epoch"]
        sums = saved.get("epoch_sums")
        state = RunState(saved.get("epoch", 0), saved.get("step", 0), history, saved.get("best_top1", -1.0),
                         best_epoch or 0, sums if sums is not None and len(sums) == len(SUMS)
                         else torch.zeros(len(SUMS), dtype=torch.float64))
        return cls(saved["model_name"], list(saved["class_names"]), saved.get("dataset", ""), saved["config"],
                   saved["model"], saved.get("optimizer", {}), state, list(saved.get("pretrained", [])),
                   saved.get("rng", {}), saved["format"], dict(saved.get("inputs", {})),
                   dict(saved.get("trained_on", {})))


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """torch.save to a temporary file beside `path`, then os.replace: `path` is always a whole file."""
    with atomic_path(Path(path)) as tmp:
        torch.save(checkpoint.to_dict(), tmp)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint written by `fit`, read with weights_only=True; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch's own errors: ours is one line, theirs is advice to
        # load it with weights_only=False, which would run whatever code the file holds: never given
        raise CheckpointError(f"{path}: not a readable checkpoint: not a file `ntu-train fit` wrote, or a "
                              f"damaged one ({type(err).__name__})") from err
    if not isinstance(saved, dict) or saved.get("format") not in READABLE_FORMATS:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(f"{path}: not an ntu-train checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r})")
    try:
        return Checkpoint.from_dict(saved)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: an ntu-train checkpoint without its {err}") from err


def check_checkpoint_fits(checkpoint: Checkpoint, path: Path, model: str | None,
                          class_names: tuple[str, ...]) -> None:
    """CheckpointError unless the checkpoint is of `model` (when given) and of the store's classes."""
    if model is not None and checkpoint.model_name != model:
        raise CheckpointError(f"{path} is a {checkpoint.model_name} checkpoint, not {model}")
    if checkpoint.num_classes != len(class_names):
        raise CheckpointError(f"{path} has {checkpoint.num_classes} classes ({checkpoint.dataset}); the "
                              f"store has {len(class_names)}")


def load_weights(net: nn.Module, checkpoint: Checkpoint, path: Path) -> None:
    """The checkpoint's weights into `net` (a run trained with SyncBatchNorm too: its state has
    BatchNorm's keys); CheckpointError where they do not fit."""
    try:
        net.load_state_dict(checkpoint.model)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit {checkpoint.model_name}: "
                              f"{str(err).splitlines()[0]}") from err


def pretrained_names(net: nn.Module, path: str) -> list[str]:
    """Load the pytorch-i3d checkpoint into the I3D in `net`; the names (in `net`) of the parameters it
    filled. The classifier it re-initialises for another class count is not among them. CheckpointError,
    naming the file, for one that is not a pytorch-i3d checkpoint."""
    try:
        report = load_pytorch_i3d(net, path)
    except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"--i3d-checkpoint {path}: not a pytorch-i3d checkpoint: "
                              f"{_cause(err)}") from err
    prefix = next(name for name, m in net.named_modules() if isinstance(m, I3D))
    prefix = prefix + "." if prefix else ""
    params = {name for name, _ in net.named_parameters()}
    return sorted(prefix + key for key in report.loaded if prefix + key in params)


def _cause(err: BaseException) -> str:
    """The first line of an error from loading a file, or its type alone where PyTorch's text advises
    loading with weights_only=False (which runs any code the file holds)."""
    text = str(err)
    return type(err).__name__ if not text or "weights_only" in text else text.splitlines()[0]


def init_stream(net: nn.Module, path: str | Path, class_names: tuple[str, ...],
                frames: int | None = None) -> str:
    """Start the stream of `net` that an `hcn` or `i3d` ntu-train checkpoint trained (or all of `net`,
    for a checkpoint of the same single-stream model) from its weights; returns what was loaded.

    How a fused model is usually trained on little data (MMTM, MSAF): each stream alone first, then the
    fusion from both. Parameters the checkpoint lacks (TIAM, fusion modules, heads) keep their init.
    `frames`: this run's, named in the ConfigError where the weights were trained for another count."""
    return load_stream(net, load_checkpoint(path), path, class_names, frames)


# RGBPose's pathways, each started from a single run (PYSKL's rgbpose_conv3d_init.pth is the two runs'
# weights): the run's names -> the pathway's (backbone., head. -> prefix)
PATHWAYS = {"posec3d": ("pose.", "pose_head."), "slowonly": ("rgb.", "rgb_head.")}


def load_pathway(net: RGBPoseConv3D, checkpoint: Checkpoint, path: str | Path,
                 class_names: tuple[str, ...]) -> str:
    """RGBPose's pose (a posec3d run) or RGB (a slowonly run) pathway and its head from `checkpoint`. The
    first convolution of each stage after a lateral connection takes the other pathway's maps too
    (concatenated after its own): the run's weights fill its own input channels, the lateral ones keep
    their init."""
    check_checkpoint_fits(checkpoint, Path(path), checkpoint.model_name, class_names)
    backbone, head = PATHWAYS[checkpoint.model_name]
    own = net.state_dict()
    renamed = {(backbone + name.removeprefix("backbone.") if name.startswith("backbone.")
                else head + name.removeprefix("head.")): tensor for name, tensor in checkpoint.model.items()}
    unknown = [name for name in renamed if name not in own]
    if unknown:
        raise CheckpointError(f"{path}: its weights do not fit RGBPose's {backbone[:-1]} pathway: "
                              f"{unknown[:3]}")
    widened = 0
    for name, tensor in renamed.items():
        mine = own[name]
        if tensor.shape != mine.shape:
            kept = (tensor.shape[:1] + tensor.shape[2:], mine.shape[:1] + mine.shape[2:])
            if tensor.dim() != mine.dim() or kept[0] != kept[1]:
                raise CheckpointError(f"{path}: {name} is {tuple(tensor.shape)} there, "
                                      f"{tuple(mine.shape)} here")
            tensor = torch.cat([tensor, mine[:, tensor.shape[1]:]], dim=1)  # (C_out, C_own + C_lateral, ...)
            widened += 1
        renamed[name] = tensor
    net.load_state_dict(renamed, strict=False)
    return (f"{checkpoint.model_name} run {path} -> RGBPose's {backbone[:-1]} pathway ({len(renamed)} "
            f"tensors, {widened} convolutions with lateral input channels left at their init)")


def load_stream(net: nn.Module, checkpoint: Checkpoint, path: str | Path, class_names: tuple[str, ...],
                frames: int | None = None) -> str:
    """`init_stream` of a checkpoint already loaded from `path`: an hcn or i3d stream of a fused model,
    or a pathway of rgbpose (a posec3d or slowonly run, `load_pathway`)."""
    if isinstance(net, RGBPoseConv3D):
        if checkpoint.model_name not in PATHWAYS:
            raise CheckpointError(f"{path}: a {checkpoint.model_name} checkpoint; rgbpose starts from "
                                  "posec3d and slowonly ones")
        return load_pathway(net, checkpoint, path, class_names)
    kind = {"hcn": HCN, "i3d": I3D}.get(checkpoint.model_name)
    if kind is None:
        raise CheckpointError(f"{path}: a {checkpoint.model_name} checkpoint; --init-from takes hcn or i3d "
                              "ones (posec3d and slowonly ones for rgbpose)")
    check_checkpoint_fits(checkpoint, Path(path), checkpoint.model_name, class_names)
    target = net if isinstance(net, kind) else next((m for m in net.children() if isinstance(m, kind)), None)
    if target is None:
        raise CheckpointError(f"{path}: this model has no {checkpoint.model_name} stream to start from it")
    try:
        result = target.load_state_dict(checkpoint.model, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        theirs = checkpoint.train_config().data.clip.frames
        if frames is not None and theirs != frames:
            raise ConfigError(f"--init-from {path}: its {checkpoint.model_name} was trained on {theirs}-"
                              f"frame clips, whose weights do not fit this run's --frames {frames}; use "
                              f"--frames {theirs}, or a checkpoint trained with --frames {frames}") from err
        raise CheckpointError(f"{path}: its weights do not fit the {checkpoint.model_name} stream: "
                              f"{str(err).splitlines()[-1].strip()}") from err
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: its weights do not fit the {checkpoint.model_name} stream: "
                              f"{result.unexpected_keys[:3]}")
    return (f"{checkpoint.model_name} stream from {path} ({len(checkpoint.model)} tensors; "
            f"{len(result.missing_keys)} left at their init)")


# --- resuming -----------------------------------------------------------------------------------------

def resumable_checkpoint(config: TrainConfig, resume: bool) -> Checkpoint | None:
    """The checkpoint to resume, its settings checked against `config` (all but how it executes, and
    more epochs than it has done), or None for a new run."""
    run_dir = Path(config.run.out)
    last = run_dir / "last.pt"
    if not resume:
        if last.exists():
            raise TrainingError(f"{run_dir} already holds a run (last.pt); continue it with --resume, or "
                                "choose another --out")
        return None
    if not last.is_file():
        raise TrainingError(f"{run_dir}: nothing to resume (no last.pt); start without --resume")
    previous = load_checkpoint(last)
    if previous.format not in RESUMABLE_FORMATS:
        raise TrainingError(f"{last}: written by an older ntu-train ({previous.format}): its weights load "
                            "(eval, --init-from) but its run cannot be resumed; train into a new --out")
    theirs = previous.train_config()
    differ = [name for name in config.differences(theirs) if name != "epochs"]
    if differ:
        diffs = ", ".join(f"{k}: {getattr(theirs, k)!r} there, {getattr(config, k)!r} now" for k in differ)
        raise TrainingError(f"{run_dir} was started with other settings ({diffs}); resume with the same ones "
                            "or train into a new --out")
    done, epochs = previous.state.epoch, config.recipe.epochs
    if epochs != theirs.recipe.epochs and epochs <= done:
        raise ConfigError(f"{run_dir} has trained {done} epochs; --epochs {epochs} cannot continue it: give "
                          f"more than {done} to train on, or {theirs.recipe.epochs} as it was started")
    return previous


# --- what a run trained on -------------------------------------------------------------------------

def trained_on(train: SplitInfo, test: SplitInfo, stages: tuple[str, ...], processes: int) -> dict:
    """What a run's numbers depend on beyond its settings: the process count (each takes its share of a
    step's batch, so another count gives other steps) and the store's identity as it records it
    (`ntu-prep info`): the dataset, each stage the model reads with the digest of its input files and
    its options, and the samples of the split (a digest of their indices)."""
    recorded = dict(open_store(train.store).attrs.get("stages", {}))
    samples = np.concatenate([train.indices, [-1], test.indices]).astype(np.int64)
    store = {"dataset": train.dataset, "split samples": hashlib.sha256(samples.tobytes()).hexdigest()[:16]}
    for stage in stages:
        store[f"{stage} input"] = recorded[stage]["source"]["digest"][:16]
        store[f"{stage} options"] = dict(recorded[stage]["options"])
    return {"processes": processes, "store": store}


def check_trained_on(previous: dict, now: dict, run_dir: Path, say: Callable[[str], None]) -> None:
    """TrainingError in one line where a resumed run would train on another store or process count than
    `previous` (its checkpoint's `trained_on`); a checkpoint that did not record them (format /2) is
    resumed unchecked, saying so."""
    if not previous:
        say(f"{run_dir}/last.pt was written before runs recorded their store and process count: resuming "
            "without checking them")
        return
    was, runs = previous["processes"], now["processes"]
    if was != runs:
        raise TrainingError(f"{run_dir} was trained by {was} process{'es' if was > 1 else ''}; this resume "
                            f"runs {runs} (WORLD_SIZE): each process takes its share of a step, so another "
                            f"count continues neither run; resume with {was}, or train into a new --out")
    before, after = previous["store"], now["store"]
    changed = [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
    if changed:
        key = changed[0]
        raise TrainingError(f"{run_dir} was trained on other store contents: its {', '.join(changed)} "
                            f"changed since ({key}: {before.get(key)} then, {after.get(key)} now); resume "
                            "with the store it was trained on, or train into a new --out")
