"""ntu-train's checkpoints: the run state and the weights, written whole, read with weights_only=True.

    save_checkpoint(run / "last.pt", checkpoint)        # atomically (ntu_pipeline/atomic.py)
    checkpoint = load_checkpoint("runs/hcn/best.pt")    # CheckpointError if it is not one of ours
    checkpoint.state.epoch, checkpoint.model            # where the run is; the weights
    init_stream(ccdfarm_net, "runs/hcn/best.pt", class_names)   # the HCN stream of a fused model

On disk a checkpoint is a flat dict (`Checkpoint.to_dict`) with `format` = CHECKPOINT_FORMAT and only
tensors, numbers, strings, lists and dicts, so `torch.load(path, weights_only=True)` reads it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from model.networks.hcn import HCN
from model.networks.i3d import I3D, load_pytorch_i3d
from ntu_pipeline.atomic import atomic_path
from ntu_pipeline.errors import CheckpointError

CHECKPOINT_FORMAT = "ntu-train/2"
READABLE_FORMATS = ("ntu-train/1", CHECKPOINT_FORMAT)  # /1: its weights load; its run does not resume
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
    weights and the optimizer, the run state, the pretrained parameter names, the RNG states."""

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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        state = self.state
        return {"format": self.format, "model_name": self.model_name, "num_classes": self.num_classes,
                "class_names": list(self.class_names), "dataset": self.dataset, "config": self.config,
                "model": self.model, "optimizer": self.optimizer, "epoch": state.epoch, "step": state.step,
                "history": state.history, "best_top1": state.best_top1, "best_epoch": state.best_epoch,
                "epoch_sums": state.sums.cpu(), "pretrained": list(self.pretrained),
                "seed": self.config.get("seed", 0), "rng": self.rng, "inputs": self.inputs}

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
                   saved.get("rng", {}), saved["format"], dict(saved.get("inputs", {})))


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
    except Exception as err:  # pickle, zip and torch's own errors: the user needs the file and the cause
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from err
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
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    prefix = next(name for name, m in net.named_modules() if isinstance(m, I3D))
    prefix = prefix + "." if prefix else ""
    params = {name for name, _ in net.named_parameters()}
    return sorted(prefix + key for key in report.loaded if prefix + key in params)


def init_stream(net: nn.Module, path: str | Path, class_names: tuple[str, ...]) -> str:
    """Start the stream of `net` that an `hcn` or `i3d` ntu-train checkpoint trained (or all of `net`,
    for a checkpoint of the same single-stream model) from its weights; returns what was loaded.

    How a fused model is usually trained on little data (MMTM, MSAF): each stream alone first, then the
    fusion from both. Parameters the checkpoint lacks (TIAM, fusion modules, heads) keep their init."""
    checkpoint = load_checkpoint(path)
    kind = {"hcn": HCN, "i3d": I3D}.get(checkpoint.model_name)
    if kind is None:
        raise CheckpointError(f"{path}: a {checkpoint.model_name} checkpoint; --init-from takes hcn or i3d "
                              "ones")
    check_checkpoint_fits(checkpoint, Path(path), checkpoint.model_name, class_names)
    target = net if isinstance(net, kind) else next((m for m in net.children() if isinstance(m, kind)), None)
    if target is None:
        raise CheckpointError(f"{path}: this model has no {checkpoint.model_name} stream to start from it")
    result = target.load_state_dict(checkpoint.model, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: its weights do not fit the {checkpoint.model_name} stream: "
                              f"{result.unexpected_keys[:3]}")
    return (f"{checkpoint.model_name} stream from {path} ({len(checkpoint.model)} tensors; "
            f"{len(result.missing_keys)} left at their init)")
