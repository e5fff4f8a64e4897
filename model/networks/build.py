"""Every network by name, and what each one takes: the table the data path and training ask.

    import model
    net = model.build("ccdfarm", num_classes=60, frames=32)
    model.network_spec("ccdfarm").inputs       # ("rgb", "skeleton"): what its forward needs
    model.network_spec("hcn").frames_multiple  # 16: HCN pools the time axis four times

Names `build` knows (MODEL_SPEC.md, the paper's tables 4-6):
    hcn, i3d                single streams
    mmtm                    baseline: MMTM at both fusion points
    dsfm                    MMTM replaced by DSFM
    dsfm_mffm, tiam_dsfm    one of TIAM / MFFM added
    ccdfarm                 TIAM + DSFM + MFFM
    dsfm1_only, dsfm2_only  CC-DFARM with only the first / only the second DSFM (table 4)
The field's reference models, each equal to its released code's forward (tests/test_net_*.py):
    ctrgcn                  CTR-GCN (Chen et al. 2021), 3D joints
    posec3d                 PoseC3D (Duan et al. 2022), SlowOnly on joint heatmaps
    slowonly                SlowOnly-R50 on the person-cropped RGB clip (PYSKL's RGB-only)
    rgbpose                 RGBPoseConv3D (PYSKL): RGB and heatmap pathways with lateral connections
Every network is called with keywords, `net(rgb=..., skeleton=..., motion=None, heatmaps=...)`, and returns
a dict with "logits"; a network ignores the inputs it does not take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from model.networks.ccdfarm import TwoStreamConfig, TwoStreamNet
from model.networks.ctrgcn import CTRGCN, CTRGCNConfig
from model.networks.hcn import HCN, HCNConfig
from model.networks.i3d import I3D, I3DConfig
from model.networks.posec3d import PoseC3D, PoseC3DConfig, SlowOnly, SlowOnlyConfig
from model.networks.rgbpose import RGBPoseConfig, RGBPoseConv3D

INPUTS = ("rgb", "skeleton", "heatmaps")  # the inputs a network can take, as forward's keywords


@dataclass(frozen=True)
class NetworkSpec:
    """A network's entry: its class and config, the config fields its name sets (`variant`), the inputs
    its forward needs (of INPUTS), and the multiple its skeleton frame count must be (1: any)."""

    network: type[nn.Module]
    config: type
    inputs: tuple[str, ...]
    frames_multiple: int = 1
    variant: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.inputs) - set(INPUTS)
        if not self.inputs or unknown:
            raise ValueError(f"inputs must be a non-empty subset of {INPUTS}, got {self.inputs}")

    @property
    def options(self) -> frozenset[str]:
        """The names `build` accepts as options: the config's fields but num_classes."""
        return frozenset(f.name for f in dataclasses.fields(self.config)) - {"num_classes"}

    def takes(self, name: str) -> bool:
        """Whether the network's forward needs input `name` (one of INPUTS)."""
        return name in self.inputs


def _two_stream(**variant) -> NetworkSpec:
    return NetworkSpec(TwoStreamNet, TwoStreamConfig, ("rgb", "skeleton"), frames_multiple=16,
                       variant=variant)


NETWORKS: dict[str, NetworkSpec] = {
    "hcn": NetworkSpec(HCN, HCNConfig, ("skeleton",), frames_multiple=16),
    "i3d": NetworkSpec(I3D, I3DConfig, ("rgb",)),
    "mmtm": _two_stream(fusion="mmtm"),
    "dsfm": _two_stream(fusion="dsfm"),
    "dsfm_mffm": _two_stream(fusion="dsfm", mffm=True),
    "tiam_dsfm": _two_stream(fusion="dsfm", tiam=True),
    "ccdfarm": _two_stream(fusion="dsfm", tiam=True, mffm=True),
    "dsfm1_only": _two_stream(fusion="dsfm", tiam=True, mffm=True, fuse_high=False),
    "dsfm2_only": _two_stream(fusion="dsfm", tiam=True, mffm=True, fuse_mid=False),
    "ctrgcn": NetworkSpec(CTRGCN, CTRGCNConfig, ("skeleton",)),
    "posec3d": NetworkSpec(PoseC3D, PoseC3DConfig, ("heatmaps",)),
    "slowonly": NetworkSpec(SlowOnly, SlowOnlyConfig, ("rgb",)),
    "rgbpose": NetworkSpec(RGBPoseConv3D, RGBPoseConfig, ("rgb", "heatmaps")),
}
MODEL_NAMES = tuple(NETWORKS)


def network_spec(name: str) -> NetworkSpec:
    """The entry of network `name`; a ValueError naming the known ones for an unknown name."""
    if name not in NETWORKS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return NETWORKS[name]


def build(name: str, num_classes: int, **options) -> nn.Module:
    """The network called `name` (one of MODEL_NAMES) for `num_classes` classes.

    options are fields of its config (`network_spec(name).options`: e.g. frames=16, dropout=0.0),
    overriding the variant's settings; an unknown one raises ValueError naming the known ones.
    """
    spec = network_spec(name)
    unknown = set(options) - spec.options
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for {spec.config.__name__}; known: "
                         f"{sorted(spec.options)}")
    return spec.network(spec.config(num_classes=num_classes, **{**spec.variant, **options}))
