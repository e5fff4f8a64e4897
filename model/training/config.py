"""`TrainConfig`: one `ntu-train fit` run, what it saves as config.json and checkpoints carry; and the
default recipe of each model family.

    config = TrainConfig(store="ntu60.zarr", protocol="xsub", model="ccdfarm", out="runs/ccdfarm")
    config.recipe             # "ccdfarm": the CC-DFARM paper's (every recipe field left None came from it)
    config.base_lr()          # lr scaled to the global batch
    config.model_options()    # what `model.build` gets

Recipes (every option still overrides its field; `describe_recipe` is what a run prints first):
- hcn, the HCN paper's (Li et al. 2018): Adam, lr 0.001 at batch 64 (0.0005 at the reference batch
  of 32), weight decay 1e-4, the rate times 0.99 every epoch, no warm-up; 400 epochs, as the public
  PyTorch reproduction of HCN trains NTU (the paper gives no count).
- i3d and every fused model, the CC-DFARM paper's: SGD momentum 0.9, lr 0.1 at batch 32, cosine
  annealing, 50 epochs; weight decay 5e-4 and 5 warm-up epochs as PYSKL/CTR-GCN (the paper says
  neither); pretrained I3D parameters at 0.1 x lr.
Validated when built; the fields in RUNTIME_FIELDS say only how a run executes, so a resumed run may
change them and nothing else.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from model.data.split import ClipSpec
from model.networks.build import MODEL_NAMES, network_spec
from ntu_pipeline.errors import ConfigError

REFERENCE_BATCH = 32  # the batch size at which `lr` applies (linear scaling)
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["cosine", "exp"]
OPTIMIZERS, SCHEDULES = get_args(Optimizer), get_args(Schedule)
# Fields that only say how a run is executed: a resumed run may change them.
RUNTIME_FIELDS = ("out", "device", "workers", "compile", "checkpoint_every", "progress", "test_clips")


@dataclass(frozen=True)
class Recipe:
    """A model family's default training recipe (see the module docstring)."""

    source: str
    epochs: int
    batch_size: int
    lr: float  # at REFERENCE_BATCH
    optimizer: Optimizer
    momentum: float
    weight_decay: float
    warmup_epochs: float
    schedule: Schedule
    lr_decay: float  # per epoch, for the "exp" schedule
    clip_norm: float


RECIPES = {
    "hcn": Recipe("the HCN paper (Li et al. 2018)", epochs=400, batch_size=64, lr=0.0005, optimizer="adam",
                  momentum=0.9, weight_decay=1e-4, warmup_epochs=0.0, schedule="exp", lr_decay=0.99,
                  clip_norm=40.0),
    "ccdfarm": Recipe("the CC-DFARM paper", epochs=50, batch_size=32, lr=0.1, optimizer="sgd", momentum=0.9,
                      weight_decay=5e-4, warmup_epochs=5.0, schedule="cosine", lr_decay=1.0, clip_norm=40.0),
}
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "source")


def recipe_name(model: str) -> str:
    """The recipe a model trains with by default: its own where RECIPES has one (hcn), else CC-DFARM's."""
    return model if model in RECIPES else "ccdfarm"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. store, protocol: the data; model: a name of model.MODEL_NAMES; out: the run
    directory. Recipe (None: the model family's, `RECIPES`): epochs, batch_size (global, over all
    processes), lr (at batch 32, scaled by batch_size / 32), optimizer ("sgd" with `momentum`, or
    "adam"), weight_decay, warmup_epochs (linear from 0), schedule ("cosine" to 0, or "exp": lr times
    lr_decay each epoch), clip_norm (0: off). seed. Model and clip: frames T (a multiple of 16 for
    models with HCN), crop (RGB side, from the stored S x S frames), flip (probability), normalize
    (skeletons: none | spine | spine_axes), dropout and bn_momentum (I3D's BatchNorm; None: the
    model's defaults), i3d_checkpoint (a pytorch-i3d file) and pretrained_lr (its parameters' lr
    factor), init_from (hcn/i3d runs to start streams from). Execution: device, workers (RGB
    DataLoader processes), bf16 (autocast, CUDA only), compile, sync_bn (DDP), half_skeletons (float16
    resident skeletons), checkpoint_every (steps; 0: per epoch), progress (the bar), test_clips (clips
    per test sample of the final evaluation)."""

    store: str
    protocol: str
    model: str
    out: str
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: Optimizer | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    schedule: Schedule | None = None
    lr_decay: float | None = None
    clip_norm: float | None = None
    seed: int = 0
    frames: int = 32
    crop: int = 224
    flip: float = 0.5
    normalize: str = "spine_axes"
    dropout: float | None = None
    bn_momentum: float | None = None
    i3d_checkpoint: str | None = None
    pretrained_lr: float = 0.1
    init_from: tuple[str, ...] = ()
    device: str = dataclasses.field(default_factory=default_device)
    workers: int = dataclasses.field(default_factory=default_workers)
    bf16: bool = True
    compile: bool = False
    sync_bn: bool = False
    half_skeletons: bool = False
    checkpoint_every: int = 0
    progress: bool = True
    test_clips: int = 1
    recipe: str = ""  # filled in: the recipe the None fields came from

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {self.model!r}; known models: {', '.join(MODEL_NAMES)}")
        recipe = RECIPES[recipe_name(self.model)]
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(recipe, name))
        object.__setattr__(self, "recipe", recipe_name(self.model))
        object.__setattr__(self, "init_from", tuple(self.init_from))  # a list after a JSON round trip
        self._validate()

    def _validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "test_clips"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "pretrained_lr", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("momentum", "weight_decay", "warmup_epochs", "clip_norm", "workers", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        multiple = self.network.frames_multiple
        if self.frames < 1 or self.frames % multiple:
            raise ConfigError(f"frames must be a positive multiple of {multiple} for {self.model}, got "
                              f"{self.frames}")
        if self.i3d_checkpoint is not None and not self.uses_rgb:
            raise ConfigError(f"--i3d-checkpoint needs a model with an RGB stream; {self.model} has none")
        if self.sync_bn and not self.device.startswith("cuda"):
            raise ConfigError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
        ClipSpec(frames=self.frames, crop=self.crop, flip=self.flip, normalize=self.normalize)

    @property
    def network(self):
        """The network's entry in `model.networks.build.NETWORKS`: what it takes, its options."""
        return network_spec(self.model)

    @property
    def uses_rgb(self) -> bool:
        return self.network.takes("rgb")

    @property
    def uses_skeleton(self) -> bool:
        return self.network.takes("skeleton")

    def clip_spec(self) -> ClipSpec:
        return ClipSpec(frames=self.frames, skeleton=self.uses_skeleton, rgb=self.uses_rgb, crop=self.crop,
                        flip=self.flip, normalize=self.normalize, half=self.half_skeletons)

    def model_options(self) -> dict:
        given = {"frames": self.frames, "dropout": self.dropout, "bn_momentum": self.bn_momentum}
        return {name: value for name, value in given.items()
                if value is not None and name in self.network.options}

    def base_lr(self) -> float:
        return self.lr * self.batch_size / REFERENCE_BATCH

    def for_evaluation(self, device: str, workers: int) -> TrainConfig:
        """The same model and clips, executed elsewhere: on `device` (a CPU too: SyncBatchNorm, a
        training-only setting, is dropped) with `workers`, not compiled."""
        return dataclasses.replace(self, device=device, workers=workers, sync_bn=False, compile=False)

    def describe_recipe(self) -> str:
        """One line: what the run trains with, and where the defaults came from."""
        recipe = RECIPES[self.recipe]
        changed = [name for name in RECIPE_FIELDS if getattr(self, name) != getattr(recipe, name)]
        schedule = ("cosine annealing" if self.schedule == "cosine" else f"x{self.lr_decay:g} per epoch")
        optimizer = (f"SGD momentum {self.momentum:g}" if self.optimizer == "sgd" else "Adam")
        return (f"recipe {self.recipe} ({recipe.source}): {optimizer}, lr {self.base_lr():.4g} at batch "
                f"{self.batch_size} ({self.lr:g} at {REFERENCE_BATCH}), weight decay {self.weight_decay:g}, "
                f"{self.warmup_epochs:g} warm-up epochs, {schedule}, {self.epochs} epochs, gradient norm "
                f"clip {self.clip_norm:g}" + (f"; changed: {', '.join(changed)}" if changed else ""))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "init_from": list(self.init_from)}  # as JSON holds it
