"""One `ntu-train fit` run's settings in four small frozen parts.

    config = TrainConfig.from_options(store="ntu60.zarr", protocol="xsub", model="ccdfarm", out="runs/x")
    config.data      # DataConfig: the store, the protocol, each clip (`ClipSpec`: frames, crop, flip, ...)
    config.network   # NetworkConfig: the model, dropout, bn_momentum, bf16, sync_bn, where it starts from
    config.recipe    # Recipe: the optimisation (every field left None came from the model family's)
    config.run       # RunConfig: how it executes: out, device, workers, compile, checkpoints, progress
    config.seed      # data order, augmentation, dropout and the initial weights
    config.to_dict() # what config.json and the checkpoints hold, one section per part

`from_options` takes the flat names: the `fit` options, and the keys of a config.json written before the
parts (format ntu-train/2), which `from_dict` reads too. `FIELDS` says where each name lives. The flat
names also read through (`config.epochs` is `config.recipe.epochs`): what code not yet moved to the parts
reads (`epoch.py`, `model.predict`).

Recipes: `model.training.recipes` (every option still overrides its field).
Each part is validated when built, the combination by TrainConfig. A resumed run must have every part
as it was but `run` (how it executes) and `recipe.epochs` (more epochs continue a run: `model.training.fit`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from model.data.clip_recipes import reference_clip
from model.data.clip_spec import ClipSpec
from model.networks.build import INPUTS, MODEL_NAMES, NetworkSpec, network_spec
from model.networks.rgbpose import SPATIAL_RATIO, SPEED_RATIO
from model.training.recipes import RECIPE_FIELDS, Recipe, recipe_for
from ntu_pipeline.errors import ConfigError
from ntu_pipeline.store import MAX_FRAMES

MAX_SEED = 2**63 - 1  # torch.manual_seed's and numpy's seeds both take it
# "meta" is for the library alone: the CUDA paths' tests run a whole epoch there (no data, no arithmetic);
# `ntu-train fit --device` refuses it.
DEVICES = ("cpu", "cuda", "meta")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


# --- the data, the network, the execution ------------------------------------------------------------

@dataclass(frozen=True)
class DataConfig:
    """What a run reads: `store`, the split of `protocol`, and each clip as the network takes it."""

    store: str
    protocol: str
    clip: ClipSpec


@dataclass(frozen=True)
class NetworkConfig:
    """The network and how it computes: model (a name of model.MODEL_NAMES), dropout and bn_momentum
    (None: the model's defaults; ignored by a model without them), bf16 (autocast; CUDA only:
    TrainConfig records False elsewhere), sync_bn (SyncBatchNorm under DDP), i3d_checkpoint (a
    pytorch-i3d file to start I3D from), init_from (hcn/i3d runs to start streams from; a posec3d and a
    slowonly run for rgbpose's pathways). Its frames are the clip's (DataConfig)."""

    model: str
    dropout: float | None = None
    bn_momentum: float | None = None
    bf16: bool = True
    sync_bn: bool = False
    i3d_checkpoint: str | None = None
    init_from: tuple[str, ...] = ()

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {self.model!r}; known models: {', '.join(MODEL_NAMES)}")
        object.__setattr__(self, "init_from", tuple(self.init_from))  # a list after a JSON round trip
        files = [Path(path).resolve() for path in self.init_from]
        twice = next((path for path, file in zip(self.init_from, files, strict=True)
                      if files.count(file) > 1), None)
        if twice is not None:
            raise ConfigError(f"--init-from {twice} is given twice; give each stream's checkpoint once")
        if self.i3d_checkpoint is not None and not self.uses_rgb:
            raise ConfigError(f"--i3d-checkpoint needs a model with an RGB stream; {self.model} has none")
        try:  # the network's own checks (dropout, bn_momentum ranges), before anything is built
            self.spec.config(num_classes=1, **{**self.spec.variant, **self.options()})
        except ValueError as err:
            raise ConfigError(f"{self.model}: {err}") from err

    @property
    def spec(self) -> NetworkSpec:
        """The network's entry in `model.networks.build`: what it takes, its options."""
        return network_spec(self.model)

    @property
    def uses_rgb(self) -> bool:
        return self.spec.takes("rgb")

    @property
    def uses_skeleton(self) -> bool:
        return self.spec.takes("skeleton")

    def options(self, frames: int | None = None) -> dict:
        """What `model.build` gets: the options given that the network has."""
        given = {"frames": frames, "dropout": self.dropout, "bn_momentum": self.bn_momentum}
        return {name: value for name, value in given.items()
                if value is not None and name in self.spec.options}


@dataclass(frozen=True)
class RunConfig:
    """How a run executes, which a resumed run may change: out (the run directory), device ("cpu",
    "cuda" or "cuda:N"; under torchrun cuda:LOCAL_RANK), workers (RGB decoding processes per training
    process), compile, checkpoint_every (steps; 0: after each epoch only), progress (the bar),
    test_clips (clips per test sample of the final evaluation)."""

    out: str
    device: str = dataclasses.field(default_factory=default_device)
    workers: int = dataclasses.field(default_factory=default_workers)
    compile: bool = False
    checkpoint_every: int = 0
    progress: bool = True
    test_clips: int = 1
    test_average: str = "logits"
    flip_test: bool = False

    def __post_init__(self):
        kind, _, index = self.device.partition(":")
        if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("workers", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.test_clips < 1:
            raise ConfigError(f"test_clips must be >= 1, got {self.test_clips}")
        if self.test_average not in AVERAGES:
            raise ConfigError(f"test_average must be one of {AVERAGES}, got {self.test_average!r}")

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


AVERAGES = ("logits", "prob")  # what a test's clips average (`evaluate.predict`)
# How each model's reference tests it, where that is not RunConfig's default (logits, no flip): PYSKL's
# test_cfg average_clips='prob' for its three; PoseC3D's test pipeline draws each clip's heatmaps and
# their mirror (GeneratePoseTarget double=True); RGBPose's and SlowOnly's do not flip.
TEST_DEFAULTS = {"posec3d": {"test_average": "prob", "flip_test": True},
                 "slowonly": {"test_average": "prob"}, "rgbpose": {"test_average": "prob"}}


# --- the run ------------------------------------------------------------------------------------------

# Where each flat name (a `fit` option, a key of a /2 config.json) lives: (part, field); "clip" is
# data.clip, whose fields are all here but the inputs (the network's to say; `half` is --half-skeletons).
# `seed` is TrainConfig's own.
_CLIP_NAMES = {("half_skeletons" if f.name == "half" else f.name): f.name
               for f in dataclasses.fields(ClipSpec) if f.name not in INPUTS}
FIELDS: dict[str, tuple[str, str]] = {
    "store": ("data", "store"), "protocol": ("data", "protocol"),
    **{name: ("clip", field) for name, field in _CLIP_NAMES.items()},
    **{f.name: ("network", f.name) for f in dataclasses.fields(NetworkConfig)},
    **{name: ("recipe", name) for name in RECIPE_FIELDS},
    **{f.name: ("run", f.name) for f in dataclasses.fields(RunConfig)},
}
PARTS = {"data": DataConfig, "clip": ClipSpec, "network": NetworkConfig, "recipe": Recipe, "run": RunConfig}


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, network, recipe, run (the parts above) and the seed; validated as a
    whole when built (the clip takes the network's inputs, frames fit the network, --sync-bn has CUDA,
    bf16 only where it runs)."""

    data: DataConfig
    network: NetworkConfig
    recipe: Recipe
    run: RunConfig
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        network, clip = self.network, self.data.clip
        if clip_inputs(clip) != network.spec.inputs:
            raise ConfigError(f"the clip gives {' and '.join(clip_inputs(clip))}; {network.model} takes "
                              f"{' and '.join(network.spec.inputs)}")
        multiple = network.spec.frames_multiple
        if not 1 <= clip.frames <= MAX_FRAMES or clip.frames % multiple:
            kind = f"a multiple of {multiple} " if multiple > 1 else ""
            raise ConfigError(f"frames must be {kind}in 1..{MAX_FRAMES} (the longest sequence a store holds) "
                              f"for {network.model}, got {clip.frames}")
        if network.sync_bn and not self.run.cuda:
            raise ConfigError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
        if self.run.flip_test and not clip.heatmaps:
            raise ConfigError(f"the flip test mirrors the heatmaps: {network.model} takes none")
        if network.bf16 and not self.run.cuda:  # what runs: autocast is CUDA's alone
            object.__setattr__(self, "network", dataclasses.replace(network, bf16=False))

    @classmethod
    def from_options(cls, **options) -> TrainConfig:
        """The run of the flat names (`FIELDS`: the `fit` options; recipe fields None: the family's;
        clip fields None: the model's reference clip, `clip_recipes.reference_clip`, else ClipSpec's
        defaults); an unknown name is a ConfigError. Also reads a /2 config.json's dict (its `recipe` is
        ignored: the model decides it)."""
        options = {name: value for name, value in options.items() if name != "recipe"}
        unknown = sorted(set(options) - set(FIELDS) - {"seed"})
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; known: {sorted(FIELDS)}")
        part = {name: {} for name in PARTS}
        for name, value in options.items():
            if name != "seed":
                where, field = FIELDS[name]
                part[where][field] = value
        try:
            network = NetworkConfig(**part["network"])
            given = {name: value for name, value in part["clip"].items() if value is not None}
            clip = ClipSpec(**{name: network.spec.takes(name) for name in INPUTS},
                            **{**reference_clip(network.model), **_pathway_sizes(network.model, given),
                               **given})
            data = DataConfig(clip=clip, **part["data"])
            run = RunConfig(**{**TEST_DEFAULTS.get(network.model, {}),
                               **{name: value for name, value in part["run"].items() if value is not None}})
        except TypeError as err:  # a required name missing
            raise ConfigError(f"a run needs store, protocol, model and out: {err}") from err
        return cls(data, network, recipe_for(network.model, **part["recipe"]), run, options.get("seed", 0))

    @classmethod
    def from_dict(cls, saved: dict) -> TrainConfig:
        """The run of `to_dict`'s dict (config.json, a checkpoint's config), or of a flat one written
        before the parts (ntu-train/2). ConfigError for a dict that is neither."""
        if not isinstance(saved.get("network"), dict):
            return cls.from_options(**{k: v for k, v in saved.items() if k != "trained_on"})
        try:
            data = dict(saved["data"])
            clip = ClipSpec(**data.pop("clip"))
            return cls(DataConfig(clip=clip, **data), NetworkConfig(**saved["network"]),
                       Recipe(**saved["recipe"]), RunConfig(**saved["run"]), saved.get("seed", 0))
        except (KeyError, TypeError) as err:
            raise ConfigError(f"not a run's settings (a part or field missing or unknown: {err})") from err

    def to_dict(self) -> dict:
        """One section per part (the clip inside data), as JSON holds it."""
        saved = dataclasses.asdict(self)
        saved["network"]["init_from"] = list(self.network.init_from)
        return saved

    def __getattr__(self, name: str):
        """The flat names (`FIELDS`) read through to their part: `config.epochs` is config.recipe.epochs."""
        if name.startswith("__") or name not in FIELDS:
            raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")
        where, field = FIELDS[name]
        return getattr(self.part(where), field)

    def part(self, name: str):
        """The part called `name` (of PARTS; "clip" is data.clip)."""
        return self.data.clip if name == "clip" else getattr(self, name)

    @property
    def uses_rgb(self) -> bool:
        return self.network.uses_rgb

    @property
    def uses_skeleton(self) -> bool:
        return self.network.uses_skeleton

    def clip_spec(self) -> ClipSpec:
        return self.data.clip

    @property
    def stages(self) -> tuple[str, ...]:
        """The store stages the clips are made from (heatmaps: the skeleton stage's 2D joints)."""
        need_rgb, need_skeleton = self.data.clip.needs
        return (("skeleton",) if need_skeleton else ()) + (("rgb",) if need_rgb else ())

    def model_options(self) -> dict:
        return self.network.options(self.data.clip.frames)

    def base_lr(self) -> float:
        return self.recipe.base_lr()

    def describe_recipe(self) -> str:
        return self.recipe.describe(self.network.model)

    def for_evaluation(self, device: str, workers: int) -> TrainConfig:
        """The same model and clips, executed elsewhere: on `device` (a CPU too: SyncBatchNorm, a
        training-only setting, is dropped) with `workers`, not compiled."""
        return dataclasses.replace(self, network=dataclasses.replace(self.network, sync_bn=False),
                                   run=dataclasses.replace(self.run, device=device, workers=workers,
                                                           compile=False))

    def differences(self, other: TrainConfig, changeable: tuple[str, ...] = ("run",)) -> list[str]:
        """The flat names whose values differ between the two runs, but those of the `changeable` parts."""
        names = [name for name, (where, _) in FIELDS.items() if where not in changeable]
        return [name for name in [*names, "seed"] if getattr(self, name) != getattr(other, name)]


def _pathway_sizes(model: str, given: dict) -> dict:
    """RGBPose's pose pathway at its ratios to the RGB one (`rgbpose.SPEED_RATIO`, `SPATIAL_RATIO`: 32
    heatmap frames of 56 x 56 for 8 RGB frames of 224): what follows a given --frames or --crop that the
    reference clip's fixed values would not fit."""
    if model != "rgbpose":
        return {}
    follows = {}
    if "frames" in given:
        follows["heatmap_frames"] = SPEED_RATIO * given["frames"]
    if "crop" in given:
        follows["heatmap_size"] = max(given["crop"] // SPATIAL_RATIO, 1)
    return follows


def clip_inputs(clip: ClipSpec) -> tuple[str, ...]:
    """The inputs a clip gives (of INPUTS, in their order)."""
    return tuple(name for name in INPUTS if getattr(clip, name))
