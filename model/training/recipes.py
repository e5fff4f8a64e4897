"""The default recipe of each model family: how a run optimises unless its options say otherwise.

    recipe = recipe_for("ccdfarm", epochs=10)   # the family's Recipe with changes
    recipe.base_lr()                             # lr scaled to the global batch (linear, from 32)

Recipes (every option still overrides its field; `describe_recipe` is what a run prints first):
- for hcn, the HCN paper's (Li et al. 2018): Adam, lr 0.001 at batch 64 (0.0005 at the reference batch
  of 32), weight decay 1e-4, the rate times 0.99 every epoch, no warm-up; 400 epochs, as the public
  PyTorch reproduction of HCN trains NTU (the paper gives no count).
- for i3d and every fused model, the CC-DFARM paper's: SGD momentum 0.9, lr 0.1 at batch 32, cosine
  annealing, 50 epochs; weight decay 5e-4 and 5 warm-up epochs as PYSKL/CTR-GCN (the paper says
  neither); pretrained I3D parameters at 0.1 x lr.
- for the reference models, their released configs (`RECIPES`), lr rescaled to the batch of 32 and each
  one's global batch the default: posec3d (PYSKL joint.py) SGD 0.4 at 256, weight decay 3e-4, cosine,
  gradient clip 40, 240 epochs (its 24 epochs of a 10x-repeated train set); slowonly (PYSKL
  rgb_only.py) SGD 0.15 at 96, weight decay 1e-4, cosine, clip 40, 180 epochs (18 x 10); rgbpose (PYSKL
  rgbpose_conv3d.py) SGD 0.0075 at 48, weight decay 1e-4, x0.1 at epochs 12 and 16 of 20, clip 40,
  started from a posec3d and a slowonly run (--init-from both); ctrgcn (CTR-GCN default.yaml) SGD
  Nesterov 0.1 at 64, weight decay 4e-4, 5 warm-up epochs, x0.1 at epochs 35 and 55 of 65, no clip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from ntu_pipeline.errors import ConfigError

REFERENCE_BATCH = 32  # the batch size at which `lr` applies (linear scaling)
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["cosine", "exp", "step"]
OPTIMIZERS, SCHEDULES = get_args(Optimizer), get_args(Schedule)


@dataclass(frozen=True)
class Recipe:
    """How a run optimises: epochs, batch_size (global, over all processes), lr (at REFERENCE_BATCH,
    scaled by batch_size / 32), optimizer ("sgd" with `momentum`, or "adam"), weight_decay,
    warmup_epochs (linear from 0), schedule ("cosine" to 0; "exp": lr times lr_decay each epoch; "step":
    lr times lr_decay at each of `milestones`, epochs counted from the start), nesterov (SGD's Nesterov
    momentum), clip_norm (0: off), pretrained_lr (the lr factor of --i3d-checkpoint's parameters).
    `name`: the default it started from (a key of RECIPES). milestones and nesterov have defaults so
    that a config.json written before them reads as it ran."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: Optimizer
    momentum: float
    weight_decay: float
    warmup_epochs: float
    schedule: Schedule
    lr_decay: float  # per epoch ("exp"), per milestone ("step")
    clip_norm: float
    pretrained_lr: float = 0.1
    milestones: tuple[int, ...] = ()  # epochs at which the "step" schedule multiplies by lr_decay
    nesterov: bool = False

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(self.milestones))  # a list after a JSON round trip
        if self.name not in RECIPE_ORIGINS:
            raise ConfigError(f"unknown recipe {self.name!r}; known: {', '.join(RECIPE_ORIGINS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "pretrained_lr", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("momentum", "weight_decay", "warmup_epochs", "clip_norm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        milestones = self.milestones
        if self.schedule == "step" and (not milestones or min(milestones) < 1
                                        or list(milestones) != sorted(set(milestones))):
            raise ConfigError(f"the step schedule needs milestones: increasing epochs >= 1 (--milestones "
                              f"35,55), got {list(milestones)}")
        if self.schedule != "step" and milestones:
            raise ConfigError(f"milestones are the step schedule's; the {self.schedule} schedule has none")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov needs SGD with momentum > 0")

    def base_lr(self) -> float:
        """lr scaled to the global batch."""
        return self.lr * self.batch_size / REFERENCE_BATCH

    def changed(self) -> list[str]:
        """The fields that differ from the default it started from."""
        default = RECIPES[self.name]
        return [name for name in FAMILY_FIELDS if getattr(self, name) != getattr(default, name)]

    def describe(self, model: str | None = None) -> str:
        """One line: what the run (of `model`) trains with, and where the defaults came from."""
        family, source = RECIPE_ORIGINS[self.name]
        if model is not None and model not in RECIPE_MODELS[self.name]:  # a reference model: none here
            source += f"; {model} has no recipe of its own here"
        changed = self.changed()
        milestones = ", ".join(map(str, self.milestones))
        schedule = {"cosine": "cosine annealing", "exp": f"x{self.lr_decay:g} per epoch",
                    "step": f"x{self.lr_decay:g} at epochs {milestones}"}[self.schedule]
        optimizer = (f"SGD momentum {self.momentum:g}" + (" Nesterov" if self.nesterov else "")
                     if self.optimizer == "sgd" else "Adam")
        return (f"recipe for {family} ({source}): {optimizer}, lr {self.base_lr():.4g} at batch "
                f"{self.batch_size} ({self.lr:g} at {REFERENCE_BATCH}), weight decay {self.weight_decay:g}, "
                f"{self.warmup_epochs:g} warm-up epochs, {schedule}, {self.epochs} epochs, gradient norm "
                f"clip {self.clip_norm:g}" + (f"; changed: {', '.join(changed)}" if changed else ""))


# name: (the models it is for, where it comes from)
RECIPE_ORIGINS = {
    "hcn": ("hcn", "the HCN paper (Li et al. 2018)"),
    "ccdfarm": ("i3d and the fused models", "the CC-DFARM paper"),
    "posec3d": ("posec3d", "PYSKL configs/posec3d/slowonly_r50_ntu60_xsub/joint.py: 0.4 at batch 256; its "
                "24 epochs of a 10x RepeatDataset are 240 passes here"),
    "slowonly": ("slowonly", "PYSKL configs/rgbpose_conv3d/rgb_only.py: 0.15 at batch 96; its 18 epochs of "
                 "a 10x RepeatDataset are 180 passes here"),
    "rgbpose": ("rgbpose", "PYSKL configs/rgbpose_conv3d/rgbpose_conv3d.py: 0.0075 at batch 48, started "
                "from a posec3d and a slowonly run (--init-from)"),
    "ctrgcn": ("ctrgcn", "CTR-GCN config/nturgbd-cross-subject/default.yaml: 0.1 at batch 64"),
}
RECIPES = {
    "hcn": Recipe("hcn", epochs=400, batch_size=64, lr=0.0005, optimizer="adam", momentum=0.9,
                  weight_decay=1e-4, warmup_epochs=0.0, schedule="exp", lr_decay=0.99, clip_norm=40.0),
    "ccdfarm": Recipe("ccdfarm", epochs=50, batch_size=32, lr=0.1, optimizer="sgd", momentum=0.9,
                      weight_decay=5e-4, warmup_epochs=5.0, schedule="cosine", lr_decay=1.0, clip_norm=40.0),
    # PYSKL's lr is the whole batch's (8 GPUs x videos_per_gpu); here lr is at REFERENCE_BATCH (x 32/256).
    # Its cosine is per iteration (by_epoch=False), as here; its RepeatDataset(times=10) epochs are 10
    # passes over the train split each, and an epoch here is one pass, hence 10 x its total_epochs.
    "posec3d": Recipe("posec3d", epochs=240, batch_size=256, lr=0.4 * REFERENCE_BATCH / 256, optimizer="sgd",
                      momentum=0.9, weight_decay=3e-4, warmup_epochs=0.0, schedule="cosine", lr_decay=1.0,
                      clip_norm=40.0),
    "slowonly": Recipe("slowonly", epochs=180, batch_size=96, lr=0.15 * REFERENCE_BATCH / 96, optimizer="sgd",
                       momentum=0.9, weight_decay=1e-4, warmup_epochs=0.0, schedule="cosine", lr_decay=1.0,
                       clip_norm=40.0),
    # no RepeatDataset: its 20 epochs are 20 passes; mmcv's step policy counts epochs (by_epoch)
    "rgbpose": Recipe("rgbpose", epochs=20, batch_size=48, lr=0.0075 * REFERENCE_BATCH / 48, optimizer="sgd",
                      momentum=0.9, weight_decay=1e-4, warmup_epochs=0.0, schedule="step", lr_decay=0.1,
                      clip_norm=40.0, milestones=(12, 16)),
    # CTR-GCN warms up per epoch (lr x (epoch + 1) / 5), here per step; it clips no gradient
    "ctrgcn": Recipe("ctrgcn", epochs=65, batch_size=64, lr=0.1 * REFERENCE_BATCH / 64, optimizer="sgd",
                     momentum=0.9, weight_decay=4e-4, warmup_epochs=5.0, schedule="step", lr_decay=0.1,
                     clip_norm=0.0, milestones=(35, 55), nesterov=True),
}
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "name")
# what a family's default sets (RECIPES): every field but the name and the pretrained parameters' factor
FAMILY_FIELDS = tuple(name for name in RECIPE_FIELDS if name != "pretrained_lr")


# The models each recipe is for (the README's table); any other model takes CC-DFARM's, saying so.
RECIPE_MODELS = {"hcn": ("hcn",), "ccdfarm": ("i3d", "mmtm", "dsfm", "dsfm_mffm", "tiam_dsfm", "ccdfarm",
                                              "dsfm1_only", "dsfm2_only"),
                 **{name: (name,) for name in ("posec3d", "slowonly", "rgbpose", "ctrgcn")}}


def recipe_name(model: str) -> str:
    """The recipe a model trains with by default: the one for it (RECIPE_MODELS), else CC-DFARM's."""
    return next((name for name, models in RECIPE_MODELS.items() if model in models), "ccdfarm")


def recipe_for(model: str, **changes) -> Recipe:
    """The default recipe of `model`'s family with `changes` (Recipe fields; None: the default's). A
    schedule other than "step" given without milestones drops the default's (CTR-GCN's with cosine)."""
    changes = {name: value for name, value in changes.items() if value is not None}
    if changes.get("schedule", "step") != "step" and "milestones" not in changes:
        changes["milestones"] = ()
    return dataclasses.replace(RECIPES[recipe_name(model)], **changes)
