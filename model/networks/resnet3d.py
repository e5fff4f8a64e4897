"""PYSKL's 3D ResNet (Bottleneck3d blocks, SlowOnly stem), its pooled classifier, and its checkpoints.

    from model.networks.resnet3d import ResNet3d, ResNet3dConfig, load_pyskl_state
    backbone = ResNet3d(ResNet3dConfig(in_channels=3))  # SlowOnly-R50 as PYSKL's rgb_only.py
    features = backbone(rgb)                            # (N, 3, 8, 224, 224) -> (N, 2048, 8, 7, 7)
    load_pyskl_state(net, "slowonly_r50.pth")           # net: a network of posec3d.py or rgbpose.py

The layers and constants follow `kennymckormick/pyskl` (`pyskl/models/cnns/resnet3d.py`,
`resnet3d_slowonly.py`, `heads/simple_head.py`), read at commit 3f6795f:
  stem     conv (conv1_kernel, stride (t, s, s), padding (k-1)/2) + BN + ReLU, then max pool (1, 3, 3)
           with stride (t, s, s) and padding (0, 1, 1) (`conv1_stride`, `pool1_stride` = (t, s));
  stage i  stage_blocks[i] Bottleneck3d blocks of width planes = base_channels * 2^i, out 4 * planes;
           the first block takes the stride (temporal_strides[i], spatial_strides[i]) and a projection
           shortcut (1x1x1 conv + BN, same stride) when it strides in space or changes the width;
  block    conv1 1x1x1 (or 3x1x1 where the stage is "inflated") + BN + ReLU -> conv2 1x3x3 strided +
           BN + ReLU -> conv3 1x1x1 + BN; added to the shortcut, then ReLU (PYSKL's "3x1x1" style);
  head     global average over (T, H, W) -> dropout -> linear (PYSKL's I3DHead).
Only the bottleneck (depth >= 50) family is here: no PYSKL config of these networks uses BasicBlock3d.
BatchNorm is PyTorch's default (eps 1e-5, momentum 0.1), as mmcv's BN3d. Initialisation is PYSKL's
from scratch: Kaiming-normal (fan_out) convolutions, BN weight 1 and bias 0, every block's last BN
weight 0 (the residual branch starts as zero), classifier weights N(0, 0.01) and bias 0.

Checkpoints. PYSKL releases `{"state_dict": {...}}` whose keys start `backbone.` / `cls_head.`, with
mmcv's ConvModule names: `backbone.layer1.0.conv1.conv.weight`, `backbone.layer1.0.conv1.bn.running_mean`,
`cls_head.fc_cls.weight`. Each network here states the PYSKL key of each of its state keys
(`pyskl_key_map`); `load_pyskl_state` fills every key through it, checking shapes, and refuses a
checkpoint with a key left over, missing or misshaped in one ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.networks.dropout import SampleDropout
from model.networks.i3d import INPUT_DTYPES

EXPANSION = 4  # Bottleneck3d: a block's output is 4x its width

# Block parts and their layers, named as PYSKL's Bottleneck3d and mmcv's ConvModule name them.
BLOCK_PARTS = ("conv1", "conv2", "conv3", "downsample")
CONV_LAYERS = ("conv", "bn")


class ConvBNReLU3d(nn.Module):
    """Conv3d (no bias) + BatchNorm3d [+ ReLU]: mmcv's ConvModule, with its `conv` / `bn` names.

    (N, C_in, T, H, W) -> (N, C_out, T', H', W') with symmetric padding (k - 1) / 2 per axis.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), relu: bool = True):
        super().__init__()
        padding = tuple((k - 1) // 2 for k in kernel)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class Bottleneck3d(nn.Module):
    """PYSKL's Bottleneck3d ("3x1x1" inflation): (N, C_in, T, H, W) -> (N, 4 * planes, T/t, H/s, W/s).

    inflate: conv1 is 3x1x1 (temporal) instead of 1x1x1; stride (t, s) is taken by conv2 and the
    shortcut. The shortcut is projected (1x1x1 conv + BN) when s != 1 or C_in != 4 * planes.
    """

    def __init__(self, in_channels: int, planes: int, stride: tuple[int, int] = (1, 1),
                 inflate: bool = False):
        super().__init__()
        t, s = stride
        out_channels = planes * EXPANSION
        self.conv1 = ConvBNReLU3d(in_channels, planes, (3, 1, 1) if inflate else (1, 1, 1))
        self.conv2 = ConvBNReLU3d(planes, planes, (1, 3, 3), (t, s, s))
        self.conv3 = ConvBNReLU3d(planes, out_channels, relu=False)
        if s != 1 or in_channels != out_channels:
            self.downsample = ConvBNReLU3d(in_channels, out_channels, stride=(t, s, s), relu=False)
        elif t != 1:
            raise ValueError(f"a block striding {t} in time needs a projection shortcut, which PYSKL only "
                             f"builds when it strides in space or changes width ({in_channels} -> "
                             f"{out_channels})")
        else:
            self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


def _positive_ints(name: str, values: tuple[int, ...], length: int | None = None) -> None:
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {values}")
    if not values or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers, got {values}")


@dataclass(frozen=True)
class ResNet3dConfig:
    """A Bottleneck ResNet3d. Defaults: SlowOnly-R50 (PYSKL `configs/rgbpose_conv3d/rgb_only.py`).

    in_channels: input channels (3 for RGB, one per joint for heatmaps); base_channels: stem width and
    stage 1 planes; stage_blocks: blocks per stage (1 to 4 stages); spatial_strides / temporal_strides:
    of each stage's first block; inflate: 1 where a stage's conv1 is 3x1x1; conv1_kernel: the stem
    kernel (T, H, W), odd; conv1_stride, pool1_stride: (temporal, spatial) strides of the stem conv and
    pool; lateral_channels: channels concatenated onto each stage's input by another pathway (RGBPose;
    empty = none).
    """

    in_channels: int
    base_channels: int = 64
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3)
    spatial_strides: tuple[int, ...] = (1, 2, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 1, 1, 1)
    inflate: tuple[int, ...] = (0, 0, 1, 1)
    conv1_kernel: tuple[int, int, int] = (1, 7, 7)
    conv1_stride: tuple[int, int] = (1, 2)
    pool1_stride: tuple[int, int] = (1, 2)
    lateral_channels: tuple[int, ...] = field(default=())

    def __post_init__(self):
        n = len(self.stage_blocks)
        if not 1 <= n <= 4:
            raise ValueError(f"stage_blocks must give 1 to 4 stages, got {self.stage_blocks}")
        _positive_ints("in_channels", (self.in_channels,))
        _positive_ints("base_channels", (self.base_channels,))
        _positive_ints("stage_blocks", self.stage_blocks)
        _positive_ints("spatial_strides", self.spatial_strides, n)
        _positive_ints("temporal_strides", self.temporal_strides, n)
        _positive_ints("conv1_stride", self.conv1_stride, 2)
        _positive_ints("pool1_stride", self.pool1_stride, 2)
        _positive_ints("conv1_kernel", self.conv1_kernel, 3)
        if any(k % 2 == 0 for k in self.conv1_kernel):
            raise ValueError(f"conv1_kernel must be odd, got {self.conv1_kernel}")
        if len(self.inflate) != n or any(v not in (0, 1) for v in self.inflate):
            raise ValueError(f"inflate must be {n} entries of 0 or 1, got {self.inflate}")
        if self.lateral_channels and (len(self.lateral_channels) != n
                                      or any(c < 0 for c in self.lateral_channels)):
            raise ValueError(f"lateral_channels must be empty or {n} entries >= 0, got "
                             f"{self.lateral_channels}")

    def stage_width(self, i: int) -> int:
        """Output channels of stage i (0-based): 4 * base_channels * 2^i."""
        return EXPANSION * self.base_channels * 2 ** i

    @property
    def out_channels(self) -> int:
        return self.stage_width(len(self.stage_blocks) - 1)


class ResNet3d(nn.Module):
    """Stem + Bottleneck3d stages: (N, C_in, T, H, W) -> (N, out_channels, T', H', W').

    With the default (SlowOnly-R50) config and a (N, 3, 8, 224, 224) clip: stem (N, 64, 8, 56, 56),
    stages (N, 256, 8, 56, 56), (N, 512, 8, 28, 28), (N, 1024, 8, 14, 14), (N, 2048, 8, 7, 7).
    `stages[i]` is PYSKL's `layer{i+1}`; RGBPose runs them one by one to exchange features between.
    """

    def __init__(self, config: ResNet3dConfig):
        super().__init__()
        self.config = config
        c = config
        (t, s), (pt, ps) = c.conv1_stride, c.pool1_stride
        self.stem = ConvBNReLU3d(c.in_channels, c.base_channels, c.conv1_kernel, (t, s, s))
        self.pool = nn.MaxPool3d((1, 3, 3), (pt, ps, ps), (0, 1, 1))
        lateral = c.lateral_channels or (0,) * len(c.stage_blocks)
        stages, channels = [], c.base_channels
        for i, blocks in enumerate(c.stage_blocks):
            planes = c.base_channels * 2 ** i
            stride = (c.temporal_strides[i], c.spatial_strides[i])
            layer = [Bottleneck3d(channels + lateral[i], planes, stride, bool(c.inflate[i]))]
            layer += [Bottleneck3d(planes * EXPANSION, planes, inflate=bool(c.inflate[i]))
                      for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            channels = planes * EXPANSION
        self.stages = nn.ModuleList(stages)
        self.num_features = c.out_channels
        init_pyskl_weights(self)

    def forward_stem(self, x: Tensor) -> Tensor:
        """(N, C_in, T, H, W) -> (N, base_channels, T/(t*pt), H/(s*ps), W/(s*ps)), sizes rounded up."""
        return self.pool(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def init_pyskl_weights(module: nn.Module) -> None:
    """PYSKL's initialisation from scratch of every Conv3d / BN3d / Bottleneck3d / Linear in `module`."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, Bottleneck3d):
            nn.init.zeros_(m.conv3.bn.weight)


class PooledClassifier(nn.Module):
    """PYSKL's I3DHead: (N, C, T, H, W) -> logits (N, num_classes) by average, dropout, linear."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = SampleDropout(dropout)  # a mask per sample: DDP equals one process
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        pooled = features.mean(dim=(2, 3, 4))  # (N, C)
        return self.fc(self.dropout(pooled))


def check_clip(name: str, x: Tensor | None, channels: int, network: str) -> Tensor:
    """Raise ValueError naming `name` unless x is a float (N, channels, T, H, W) tensor; returns x."""
    what = "heatmaps (N, V, T, H, W) = (batch, joints" if name == "heatmaps" else \
        "clip (N, C, T, H, W) = (batch, channels"
    if x is None:
        raise ValueError(f"{network} needs {name}: a float {what}, frames, height, width) with "
                         f"{channels} channels; got {name}=None")
    if x.ndim != 5 or x.shape[1] != channels or x.dtype not in INPUT_DTYPES:
        raise ValueError(f"{name} must be a float32/float16/bfloat16 {what}, frames, height, width) with "
                         f"{channels} channels; got {x.dtype} of shape {tuple(x.shape)}")
    return x


# --- PYSKL checkpoints ---------------------------------------------------------------------------


def pyskl_backbone_key(key: str) -> str:
    """One ResNet3d state key -> PYSKL's name for it, without the `backbone.` prefix.

      stem.<conv|bn>.<leaf>                  -> conv1.<conv|bn>.<leaf>
      stages.<i>.<j>.<part>.<conv|bn>.<leaf> -> layer<i+1>.<j>.<part>.<conv|bn>.<leaf>
    with part one of conv1, conv2, conv3, downsample, and the leaf unchanged (weight, bias,
    running_mean, running_var, num_batches_tracked).
    """
    parts = key.split(".")
    if parts[0] == "stem" and len(parts) == 3 and parts[1] in CONV_LAYERS:
        return "conv1." + ".".join(parts[1:])
    if (parts[0] == "stages" and len(parts) == 6 and parts[3] in BLOCK_PARTS
            and parts[4] in CONV_LAYERS):
        return ".".join([f"layer{int(parts[1]) + 1}", *parts[2:]])
    raise ValueError(f"no PYSKL counterpart for ResNet3d key {key!r}")


class PysklNetwork(Protocol):
    def pyskl_key_map(self) -> dict[str, str]: ...
    def state_dict(self) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class PysklLoadReport:
    """What `load_pyskl_state` did, by our key names."""

    loaded: tuple[str, ...]
    absent_counters: tuple[str, ...]  # BN num_batches_tracked absent from the checkpoint, left as they were
    left_at_init: tuple[str, ...]  # with partial=True: keys the checkpoint lacks, left as initialised


def load_pyskl_state(net: PysklNetwork, checkpoint: str | PathLike | Mapping[str, object], *,
                     partial: bool = False) -> PysklLoadReport:
    """Fill `net` (a network of posec3d.py or rgbpose.py) from a PYSKL checkpoint, key by key.

    checkpoint: a path (read with torch.load on CPU, weights only), or a loaded checkpoint
    `{"state_dict": {...}, ...}` or the state dict itself; keys `backbone.*` and `cls_head.*`. Every
    checkpoint key must fill one of ours with the same shape and every key of ours must be filled,
    except BN num_batches_tracked (older checkpoints lack it; left as they were) and, with
    partial=True, keys the checkpoint lacks (reported; e.g. the lateral connections, which PYSKL's
    `rgbpose_conv3d_init.pth` does not hold). Otherwise one ValueError lists every missing, leftover and
    misshaped key, and nothing is loaded. Note COCO-trained checkpoints have 17 heatmap channels.
    """
    source = str(checkpoint) if isinstance(checkpoint, (str, PathLike)) else "<checkpoint>"
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True) \
        if isinstance(checkpoint, (str, PathLike)) else checkpoint
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected a PYSKL checkpoint {{'state_dict': {{name: tensor}}}} or its "
                         f"state dict, got {type(loaded).__name__}")

    ours = net.state_dict()  # shares storage with the parameters and buffers
    mapping = net.pyskl_key_map()
    if set(mapping) != set(ours) or len(set(mapping.values())) != len(mapping):
        raise RuntimeError(f"{type(net).__name__}.pyskl_key_map does not map its state keys one to one")
    plan, absent, at_init, missing, misshaped = [], [], [], [], []
    for key, theirs in mapping.items():
        if theirs not in state:
            if key.endswith("num_batches_tracked"):
                absent.append(key)
            elif partial:
                at_init.append(key)
            else:
                missing.append(theirs)
        elif state[theirs].shape != ours[key].shape:
            misshaped.append(f"{theirs} {tuple(state[theirs].shape)} != {tuple(ours[key].shape)} ({key})")
        else:
            plan.append((key, state[theirs]))
    leftover = sorted(set(state) - set(mapping.values()))
    if missing or leftover or misshaped:
        problems = [f"{len(missing)} missing, e.g. {missing[:4]}" if missing else "",
                    f"{len(leftover)} with no place in {type(net).__name__}, e.g. {leftover[:4]}"
                    if leftover else "",
                    f"{len(misshaped)} of another shape, e.g. {misshaped[:3]}" if misshaped else ""]
        raise ValueError(f"{source} does not fit {type(net).__name__}: "
                         + "; ".join(p for p in problems if p))
    with torch.no_grad():
        for key, value in plan:
            ours[key].copy_(value)
    return PysklLoadReport(tuple(k for k, _ in plan), tuple(absent), tuple(at_init))

