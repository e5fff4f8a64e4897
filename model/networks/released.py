"""Weights released with the reference code, loaded into this project's networks by name.

    import model
    net = model.build("posec3d", num_classes=60, in_channels=17)
    model.load_released(net, "slowonly_r50_ntu60_xsub_joint.pth")   # PYSKL's release format
    net = model.build("ctrgcn", num_classes=60)
    model.load_released(net, "ntu60_xsub_joint.pt")                  # CTR-GCN's (a plain state dict)

Formats: PYSKL (posec3d, slowonly, rgbpose): `{"state_dict": ...}` with `backbone.` / `cls_head.` keys
and mmcv ConvModule's `conv` / `bn` names (`model.networks.resnet3d.load_pyskl_state`); CTR-GCN: a plain
state dict, `module.`-prefixed or not (`model.networks.ctrgcn.load_ctrgcn_state`); I3D and the fused
networks: pytorch-i3d's files (`model.networks.i3d.load_pytorch_i3d`, the RGB stream only). Every loader
is strict: a key without a place, a place without a key or a shape that differs is one ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike

from torch import nn

from model.networks.ctrgcn import CTRGCN, load_ctrgcn_state
from model.networks.i3d import load_pytorch_i3d
from model.networks.posec3d import PoseC3D, SlowOnly
from model.networks.resnet3d import load_pyskl_state
from model.networks.rgbpose import RGBPoseConv3D


def load_released(net: nn.Module, checkpoint: str | PathLike | Mapping, partial: bool = False) -> object:
    """Fill `net` from `checkpoint` (a path or a loaded checkpoint) in the format its reference released;
    returns the loader's report. partial (PYSKL only): accept a checkpoint that lacks some of `net`'s
    keys (RGBPoseConv3D started from the two single-pathway runs); they keep their init."""
    if isinstance(net, (PoseC3D, SlowOnly, RGBPoseConv3D)):
        return load_pyskl_state(net, checkpoint, partial=partial)
    if partial:
        raise ValueError("partial loading is for PYSKL's networks (posec3d, slowonly, rgbpose)")
    if isinstance(net, CTRGCN):
        return load_ctrgcn_state(net, checkpoint)
    return load_pytorch_i3d(net, checkpoint)
