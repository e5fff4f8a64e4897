"""ntu-train's checkpoints: written whole, read with weights_only=True, and streams started from them.

    save_checkpoint(run / "last.pt", state)          # a temporary file, then os.replace
    state = load_checkpoint("runs/hcn/best.pt")     # CheckpointError if it is not one of ours
    init_stream(ccdfarm_net, "runs/hcn/best.pt", class_names)   # the HCN stream of a fused model

A checkpoint is a dict with `format` = CHECKPOINT_FORMAT and only tensors, numbers, strings, lists and
dicts (the model and optimizer state, the TrainConfig as a dict, the epoch, the step, running sums).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

import model as models
from ntu_pipeline.errors import CheckpointError

CHECKPOINT_FORMAT = "ntu-train/1"


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file beside `path`, then os.replace: `path` is always a whole file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by `fit`, read with weights_only=True; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch's own errors: the user needs the file and the cause
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an ntu-train checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r})")
    return state


def check_checkpoint_fits(state: dict, path: Path, model: str | None, class_names: tuple[str, ...]) -> None:
    """CheckpointError unless the checkpoint is of `model` (when given) and of the store's classes."""
    if model is not None and state["model_name"] != model:
        raise CheckpointError(f"{path} is a {state['model_name']} checkpoint, not {model}")
    if state["num_classes"] != len(class_names):
        raise CheckpointError(f"{path} has {state['num_classes']} classes ({state['dataset']}); the store "
                              f"has {len(class_names)}")


def pretrained_names(net: nn.Module, path: str) -> list[str]:
    """Load the pytorch-i3d checkpoint into the I3D in `net`; the names (in `net`) of the parameters it
    filled. The classifier it re-initialises for another class count is not among them."""
    report = models.load_pytorch_i3d(net, path)
    prefix = next(name for name, m in net.named_modules() if isinstance(m, models.I3D))
    prefix = prefix + "." if prefix else ""
    params = {name for name, _ in net.named_parameters()}
    return sorted(prefix + key for key in report.loaded if prefix + key in params)


def init_stream(net: nn.Module, path: str | Path, class_names: tuple[str, ...]) -> str:
    """Start the stream of `net` that an `hcn` or `i3d` ntu-train checkpoint trained (or all of `net`,
    for a checkpoint of the same single-stream model) from its weights; returns what was loaded.

    How a fused model is usually trained on little data (MMTM, MSAF): each stream alone first, then the
    fusion from both. Parameters the checkpoint lacks (TIAM, fusion modules, heads) keep their init."""
    state = load_checkpoint(path)
    kind = {"hcn": models.HCN, "i3d": models.I3D}.get(state["model_name"])
    if kind is None:
        raise CheckpointError(f"{path}: a {state['model_name']} checkpoint; --init-from takes hcn or i3d "
                              "ones")
    check_checkpoint_fits(state, Path(path), state["model_name"], class_names)
    target = net if isinstance(net, kind) else next((m for m in net.children() if isinstance(m, kind)), None)
    if target is None:
        raise CheckpointError(f"{path}: this model has no {state['model_name']} stream to start from it")
    result = target.load_state_dict(state["model"], strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: its weights do not fit the {state['model_name']} stream: "
                              f"{result.unexpected_keys[:3]}")
    return (f"{state['model_name']} stream from {path} ({len(state['model'])} tensors; "
            f"{len(result.missing_keys)} left at their init)")
