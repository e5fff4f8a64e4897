"""`TrainConfig`: one `ntu-train fit` run, what it saves as config.json and checkpoints carry.

    config = TrainConfig(store="ntu60.zarr", protocol="xsub", model="ccdfarm", out="runs/ccdfarm")
    config.base_lr()          # lr scaled to the global batch
    config.model_options()    # what `model.build` gets

Validated when built; the fields in RUNTIME_FIELDS say only how a run executes, so a resumed run may
change them and nothing else.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

import model as models
from model.data import ClipSpec
from ntu_pipeline.errors import ConfigError

REFERENCE_BATCH = 32  # the batch size at which `lr` applies (linear scaling)
OPTIMIZERS = ("sgd", "adam")
# Fields that only say how a run is executed: a resumed run may change them.
RUNTIME_FIELDS = ("out", "device", "workers", "compile", "checkpoint_every", "progress")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. store, protocol: the data; model: a name of model.MODEL_NAMES; out: the run
    directory. Recipe: epochs, batch_size (global, over all processes), lr (at batch 32, scaled by
    batch_size / 32), optimizer ("sgd" with `momentum`, or "adam": HCN's own recipe), weight_decay,
    warmup_epochs (linear from 0), clip_norm (0: off), seed. Model and clip: frames T (a multiple of 16
    for models with HCN), crop (RGB side, from the stored S x S frames), flip (probability), normalize
    (skeletons: none | spine | spine_axes), dropout and bn_momentum (I3D's BatchNorm; None: the model's
    defaults), i3d_checkpoint (a
    pytorch-i3d file) and pretrained_lr (its parameters' lr factor). Execution: device, workers (RGB
    DataLoader processes), bf16 (autocast, CUDA only), compile, sync_bn (DDP), half_skeletons (float16
    resident skeletons), checkpoint_every (steps; 0: per epoch), progress (the bar)."""

    store: str
    protocol: str
    model: str
    out: str
    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0
    clip_norm: float = 40.0
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

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.model not in models.MODEL_NAMES:
            raise ConfigError(f"unknown model {self.model!r}; known models: {', '.join(models.MODEL_NAMES)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "pretrained_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("momentum", "weight_decay", "warmup_epochs", "clip_norm", "workers", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.model == "i3d" and self.frames < 1 or self.model != "i3d" and self.frames % 16:
            raise ConfigError(f"frames must be a positive multiple of 16 for {self.model} (HCN pools it "
                             f"four times), got {self.frames}")
        object.__setattr__(self, "init_from", tuple(self.init_from))  # a list after a JSON round trip
        if self.i3d_checkpoint is not None and self.model == "hcn":
            raise ConfigError("--i3d-checkpoint needs a model with an RGB stream; hcn has none")
        if self.sync_bn and not self.device.startswith("cuda"):
            raise ConfigError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
        ClipSpec(frames=self.frames, crop=self.crop, flip=self.flip, normalize=self.normalize)

    @property
    def uses_rgb(self) -> bool:
        return self.model != "hcn"

    @property
    def uses_skeleton(self) -> bool:
        return self.model != "i3d"

    def clip_spec(self) -> ClipSpec:
        return ClipSpec(frames=self.frames, skeleton=self.uses_skeleton, rgb=self.uses_rgb, crop=self.crop,
                        flip=self.flip, normalize=self.normalize, half=self.half_skeletons)

    def model_options(self) -> dict:
        options = {} if self.model == "i3d" else {"frames": self.frames}
        if self.dropout is not None:
            options["dropout"] = self.dropout
        if self.bn_momentum is not None and self.model != "hcn":
            options["bn_momentum"] = self.bn_momentum
        return options

    def base_lr(self) -> float:
        return self.lr * self.batch_size / REFERENCE_BATCH

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "init_from": list(self.init_from)}  # as JSON holds it
