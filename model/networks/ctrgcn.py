"""CTR-GCN: channel-wise topology refinement graph convolution network (Chen et al., ICCV 2021), a
skeleton stream.

    from model.networks.ctrgcn import CTRGCN, CTRGCNConfig, load_ctrgcn_state
    net = CTRGCN(CTRGCNConfig(num_classes=60))
    load_ctrgcn_state(net, "ntu60_xsub_joint.pt")  # optional: weights released with the reference code
    out = net(skeleton=skeleton)  # skeleton (N, 3, T, 25, 2), any T >= 1 (the reference trains at 64)
    out["logits"]                 # (N, 60)

Input: float32 (or float16/bfloat16) skeletons (N, in_channels, T, num_joints, num_persons); anything
else is refused with a ValueError naming `skeleton`. The paper's joint, bone and motion streams are
this same network fed other arrays, which the data path makes; `rgb` and `motion` are ignored here.

Layer for layer the reference code (`model/ctrgcn.py` of Uason-Chen/CTR-GCN), so its released weights
load by name (`ctrgcn_key_map`, `load_ctrgcn_state`) and give its logits (tests/test_net_ctrgcn.py):
  data_bn     BatchNorm over the M*V*C coordinates of each frame
  blocks 1-10 out channels 64 64 64 64 128 128 128 256 256 256 (scaled by base_channels / 64), time
              stride 2 in blocks 5 and 8; each block is ReLU(tcn(gcn(x)) + residual(x)), with no residual
              in block 1, the identity where the shape is kept, a strided 1x1 conv + BN otherwise
  head        mean over time and joints, then over persons; dropout; fc
gcn (`SpatialGraphConv`): one CTR-GC per subset of the NTU graph (self, inward, outward), summed, BN,
plus x (through a 1x1 conv + BN where the channels change), ReLU.
CTR-GC: each output channel c aggregates the joints with its own topology R_c = A + alpha * Q_c, A (V, V)
the subset's shared topology (learned from the normalised graph when `adaptive`, else fixed) and
Q_c = expand(tanh(query_u - key_v)) the channel-specific correlation of joints u and v, from the
time-averaged features: z_u = sum_v R_c[u, v] value(x)_v.
tcn (`MultiScaleTemporalConv`): four branches of C/4 channels, concatenated: 1x1 conv + BN + ReLU then a
5x1 conv + BN of dilation 1, the same of dilation 2, 1x1 conv + BN + ReLU then 3x1 max-pool + BN, and a
1x1 conv + BN; every branch carries the stride.
1,446,672 parameters for 60 classes (the reference's count; 1,427,922 with `adaptive=False`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.networks.dropout import SampleDropout

# Input dtypes the networks accept (as HCN and I3D): float64 would fail inside the first convolution.
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# NTU's 24 bones as 0-based (child, parent) pairs, the parent nearer joint 20 (spine at the shoulders),
# the root; the reference's `inward` edges, in its order.
NTU_INWARD = (
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9), (11, 10),
    (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (21, 22), (22, 7),
    (23, 24), (24, 11),
)
NTU_JOINTS = 25

# (out channels / base_channels, time stride) of blocks 1..10.
BLOCK_LAYOUT = ((1, 1), (1, 1), (1, 1), (1, 1), (2, 2), (2, 1), (2, 1), (4, 2), (4, 1), (4, 1))


def ntu_adjacency() -> Tensor:
    """(3, 25, 25) float32: the self, inward and outward subsets of the NTU graph.

    For an edge i -> j (inward: child to parent; outward: parent to child) entry [j, i] is 1 / (edges
    leaving i), so every column with an edge sums to 1; self is the identity. A CTR-GC aggregates
    z_u = sum_v A[u, v] x_v: inward, a parent takes its children whole; outward, a child takes its parent
    shared among the parent's children.
    """
    def normalised(edges: tuple[tuple[int, int], ...]) -> Tensor:
        a = torch.zeros(NTU_JOINTS, NTU_JOINTS, dtype=torch.float64)
        for i, j in edges:
            a[j, i] = 1.0
        return a / a.sum(0).clamp(min=1)  # columns of joints with no such edge stay zero

    outward = tuple((j, i) for i, j in NTU_INWARD)
    eye = torch.eye(NTU_JOINTS, dtype=torch.float64)
    return torch.stack([eye, normalised(NTU_INWARD), normalised(outward)]).float()


@dataclass(frozen=True)
class CTRGCNConfig:
    """num_classes; persons M; joints V (25: the NTU graph); input channels C (3 for xyz; 3, 9 or >= 8,
    the widths the reference's first CTR-GC takes); base_channels (64; a multiple of 8, the width of
    blocks 1-4); dropout before fc; adaptive: learn the shared topologies (else they stay the graph's)."""

    num_classes: int
    num_persons: int = 2
    num_joints: int = 25
    in_channels: int = 3
    base_channels: int = 64
    dropout: float = 0.0
    adaptive: bool = True

    def __post_init__(self):
        if self.num_classes < 1 or self.num_persons < 1:
            raise ValueError(f"num_classes and num_persons must be >= 1, got {self.num_classes}, "
                             f"{self.num_persons}")
        if self.num_joints != NTU_JOINTS:
            raise ValueError(f"num_joints must be {NTU_JOINTS} (the NTU graph), got {self.num_joints}")
        if self.in_channels not in (3, 9) and self.in_channels < 8:
            raise ValueError(f"in_channels must be 3, 9 or >= 8 (CTR-GC correlates in_channels // 8 "
                             f"channels otherwise), got {self.in_channels}")
        if self.base_channels < 8 or self.base_channels % 8:
            raise ValueError(f"base_channels must be a positive multiple of 8, got {self.base_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _kaiming(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    nn.init.zeros_(conv.bias)


class TemporalConv(nn.Module):
    """(k x 1) convolution over time + BN: (N, C_in, T, V) -> (N, C_out, ceil(T / stride), V).
    The reference's `unit_tcn` (k = 1 as a residual) and `TemporalConv` (the dilated branches)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 dilation: int = 1):
        super().__init__()
        pad = (kernel_size - 1) * dilation // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), stride=(stride, 1),
                              padding=(pad, 0), dilation=(dilation, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        _kaiming(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class CTRGC(nn.Module):
    """Channel-wise topology refinement graph convolution for one graph subset:
    (N, C_in, T, V) -> (N, C_out, T, V)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # The reference correlates 8 channels of raw coordinates (3, or 9 for its 3-frame inputs), and
        # in_channels / 8 of features.
        rel = 8 if in_channels in (3, 9) else in_channels // 8
        self.query = nn.Conv2d(in_channels, rel, 1)
        self.key = nn.Conv2d(in_channels, rel, 1)
        self.value = nn.Conv2d(in_channels, out_channels, 1)
        self.expand = nn.Conv2d(rel, out_channels, 1)
        for conv in (self.query, self.key, self.value, self.expand):
            _kaiming(conv)

    def forward(self, x: Tensor, adjacency: Tensor, alpha: Tensor) -> Tensor:
        """x (N, C_in, T, V), the subset's shared topology adjacency (V, V), alpha (1,) ->
        (N, C_out, T, V)."""
        q = self.query(x).mean(2)  # (N, R, V): averaged over time
        k = self.key(x).mean(2)  # (N, R, V)
        correlation = torch.tanh(q.unsqueeze(-1) - k.unsqueeze(-2))  # (N, R, V, V): [u, v] = q_u - k_v
        topology = self.expand(correlation) * alpha + adjacency  # (N, C_out, V, V): R_c = A + alpha Q_c
        return torch.einsum("ncuv,nctv->nctu", topology, self.value(x))  # (N, C_out, T, V)


class SpatialGraphConv(nn.Module):
    """The reference's `unit_gcn`: CTR-GCs over the subsets of `adjacency`, summed, BN, plus x, ReLU:
    (N, C_in, T, V) -> (N, C_out, T, V).

    adjacency (S, V, V): a learned parameter when `adaptive` (the reference's `PA`), else a buffer left
    out of the state dict (the reference keeps it as a plain tensor attribute), so both count parameters
    and name state alike. alpha (1,): the refinement's scale, shared by the subsets, starts at 0.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor, adaptive: bool = True):
        super().__init__()
        self.convs = nn.ModuleList(CTRGC(in_channels, out_channels) for _ in range(len(adjacency)))
        self.residual = (nn.Identity() if in_channels == out_channels
                         else TemporalConv(in_channels, out_channels))
        if adaptive:
            self.adjacency = nn.Parameter(adjacency.clone())
        else:
            self.register_buffer("adjacency", adjacency.clone(), persistent=False)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(self.bn.weight, 1e-6)  # the block starts as its residual

    def forward(self, x: Tensor) -> Tensor:
        y = sum(conv(x, a, self.alpha) for conv, a in zip(self.convs, self.adjacency, strict=True))
        return F.relu(self.bn(y) + self.residual(x))  # (N, C_out, T, V)


class DilatedBranch(nn.Module):
    """1x1 conv + BN + ReLU, then a dilated (k x 1) conv + BN: (N, C_in, T, V) -> (N, C, T/stride, V)."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, stride: int, dilation: int):
        super().__init__()
        self.reduce = TemporalConv(in_channels, channels)
        self.temporal = TemporalConv(channels, channels, kernel_size, stride, dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal(F.relu(self.reduce(x)))


class MaxPoolBranch(nn.Module):
    """1x1 conv + BN + ReLU, then a 3x1 max-pool + BN: (N, C_in, T, V) -> (N, C, T/stride, V)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.reduce = TemporalConv(in_channels, channels)
        self.pool = nn.MaxPool2d((3, 1), stride=(stride, 1), padding=(1, 0))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.pool(F.relu(self.reduce(x))))


class MultiScaleTemporalConv(nn.Module):
    """Dilated branches, a max-pool branch and a strided 1x1 branch of C_out / (dilations + 2) channels
    each, concatenated: (N, C_in, T, V) -> (N, C_out, ceil(T / stride), V). No residual of its own (the
    block adds one)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 1,
                 dilations: tuple[int, ...] = (1, 2)):
        super().__init__()
        branches = len(dilations) + 2
        if out_channels % branches:
            raise ValueError(f"out_channels must be a multiple of {branches} branches, got {out_channels}")
        c = out_channels // branches
        self.dilated = nn.ModuleList(DilatedBranch(in_channels, c, kernel_size, stride, d) for d in dilations)
        self.pooled = MaxPoolBranch(in_channels, c, stride)
        self.pointwise = TemporalConv(in_channels, c, 1, stride)
        for module in self.modules():  # the reference's BN init for the temporal module
            if isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        branches = [branch(x) for branch in self.dilated] + [self.pooled(x), self.pointwise(x)]
        return torch.cat(branches, dim=1)  # (N, C_out, T', V)


class GraphTemporalBlock(nn.Module):
    """The reference's `TCN_GCN_unit`: ReLU(tcn(gcn(x)) + residual(x)):
    (N, C_in, T, V) -> (N, C_out, ceil(T / stride), V)."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor, stride: int = 1,
                 residual: bool = True, adaptive: bool = True):
        super().__init__()
        self.gcn = SpatialGraphConv(in_channels, out_channels, adjacency, adaptive)
        self.tcn = MultiScaleTemporalConv(out_channels, out_channels, stride=stride)
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = TemporalConv(in_channels, out_channels, 1, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = self.tcn(self.gcn(x))  # (N, C_out, T', V)
        return F.relu(y if self.residual is None else y + self.residual(x))


class CTRGCN(nn.Module):
    """CTR-GCN over (N, C, T, V, M) skeletons; persons share the weights and are averaged at the end.

    Stream interface shared with HCN and I3D: `forward_features` (-> (N, num_features) pooled features),
    `forward_head` (dropout + fc), `num_features` (4 * base_channels)."""

    def __init__(self, config: CTRGCNConfig):
        super().__init__()
        self.config = config
        cfg = config
        self.num_features = 4 * cfg.base_channels
        self.data_bn = nn.BatchNorm1d(cfg.num_persons * cfg.num_joints * cfg.in_channels)
        adjacency = ntu_adjacency()
        blocks, c_in = [], cfg.in_channels
        for i, (width, stride) in enumerate(BLOCK_LAYOUT):
            c_out = width * cfg.base_channels
            blocks.append(GraphTemporalBlock(c_in, c_out, adjacency, stride, residual=i > 0,
                                             adaptive=cfg.adaptive))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.dropout = SampleDropout(cfg.dropout)  # a mask per sample: DDP equals one process
        self.fc = nn.Linear(self.num_features, cfg.num_classes)
        nn.init.normal_(self.fc.weight, 0.0, math.sqrt(2.0 / cfg.num_classes))  # the bias keeps torch's

    def check_inputs(self, skeleton: Tensor) -> None:
        """Raise ValueError unless skeleton is a float (N, C, T, V, M) of this config's C, V, M, T >= 1."""
        cfg = self.config
        if (not isinstance(skeleton, Tensor) or skeleton.ndim != 5 or skeleton.shape[1] != cfg.in_channels
                or tuple(skeleton.shape[3:]) != (cfg.num_joints, cfg.num_persons) or skeleton.shape[2] < 1
                or skeleton.dtype not in INPUT_DTYPES):
            found = (f"{skeleton.dtype} of shape {tuple(skeleton.shape)}" if isinstance(skeleton, Tensor)
                     else type(skeleton).__name__)
            raise ValueError(f"skeleton must be a float32/float16/bfloat16 tensor (N, {cfg.in_channels}, T, "
                             f"{cfg.num_joints}, {cfg.num_persons}) = (batch, xyz, frames >= 1, joints, "
                             f"persons) for this CTR-GCN; got {found}")

    def forward_features(self, skeleton: Tensor) -> Tensor:
        """(N, C, T, V, M) skeleton -> (N, num_features), averaged over time, joints and persons."""
        self.check_inputs(skeleton)
        n, c, t, v, m = skeleton.shape
        x = skeleton.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)  # (N, M*V*C, T)
        x = self.data_bn(x).view(n, m, v, c, t)  # (N, M, V, C, T)
        x = x.permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)  # (N*M, C, T, V)
        for block in self.blocks:
            x = block(x)  # (N*M, C', T', V)
        return x.reshape(n, m, x.shape[1], -1).mean(3).mean(1)  # (N, C')

    def forward_head(self, features: Tensor) -> Tensor:
        """(N, num_features) -> logits (N, num_classes)."""
        return self.fc(self.dropout(features))

    def forward(self, rgb: Tensor | None = None, skeleton: Tensor | None = None,
                motion: Tensor | None = None) -> dict[str, Tensor]:
        """Same call as the other networks; `rgb` and `motion` are ignored. skeleton: (N, C, T, V, M).

        Returns {"logits": (N, K), "skeleton": (N, K)} (the same tensor under both names).
        """
        if skeleton is None:
            cfg = self.config
            raise ValueError(f"CTR-GCN needs the skeleton (N, {cfg.in_channels}, T, {cfg.num_joints}, "
                             f"{cfg.num_persons}); got skeleton=None")
        logits = self.forward_head(self.forward_features(skeleton))
        return {"logits": logits, "skeleton": logits}


# Our key inside blocks.<i> -> the reference's inside l<i+1>, (pattern, replacement), first match wins.
# The reference's tcn1.branches are the dilated ones (0, 1), the max-pool one (2: 1x1 conv, BN, ReLU,
# pool, BN), the 1x1 one (3); its unit_gcn residual is `down`, its CTR-GC convs are numbered.
_BLOCK_KEYS = (
    (r"gcn\.adjacency", "gcn1.PA"),
    (r"gcn\.alpha", "gcn1.alpha"),
    (r"gcn\.convs\.(\d+)\.query\.(\w+)", r"gcn1.convs.\1.conv1.\2"),
    (r"gcn\.convs\.(\d+)\.key\.(\w+)", r"gcn1.convs.\1.conv2.\2"),
    (r"gcn\.convs\.(\d+)\.value\.(\w+)", r"gcn1.convs.\1.conv3.\2"),
    (r"gcn\.convs\.(\d+)\.expand\.(\w+)", r"gcn1.convs.\1.conv4.\2"),
    (r"gcn\.residual\.conv\.(\w+)", r"gcn1.down.0.\1"),
    (r"gcn\.residual\.bn\.(\w+)", r"gcn1.down.1.\1"),
    (r"gcn\.bn\.(\w+)", r"gcn1.bn.\1"),
    (r"tcn\.dilated\.([01])\.reduce\.conv\.(\w+)", r"tcn1.branches.\1.0.\2"),
    (r"tcn\.dilated\.([01])\.reduce\.bn\.(\w+)", r"tcn1.branches.\1.1.\2"),
    (r"tcn\.dilated\.([01])\.temporal\.(conv|bn)\.(\w+)", r"tcn1.branches.\1.3.\2.\3"),
    (r"tcn\.pooled\.reduce\.conv\.(\w+)", r"tcn1.branches.2.0.\1"),
    (r"tcn\.pooled\.reduce\.bn\.(\w+)", r"tcn1.branches.2.1.\1"),
    (r"tcn\.pooled\.bn\.(\w+)", r"tcn1.branches.2.4.\1"),
    (r"tcn\.pointwise\.conv\.(\w+)", r"tcn1.branches.3.0.\1"),
    (r"tcn\.pointwise\.bn\.(\w+)", r"tcn1.branches.3.1.\1"),
    (r"residual\.(conv|bn)\.(\w+)", r"residual.\1.\2"),
)


def ctrgcn_key_map(net: CTRGCN) -> dict[str, str]:
    """Each of our state-dict keys -> the reference's key that fills it (one to one). data_bn.* and fc.*
    keep their names; blocks.<i>.<rest> -> l<i+1>.<rest'> by `_BLOCK_KEYS`, e.g.
      blocks.0.gcn.adjacency                    -> l1.gcn1.PA
      blocks.4.gcn.convs.2.query.weight         -> l5.gcn1.convs.2.conv1.weight
      blocks.7.tcn.dilated.1.temporal.bn.bias   -> l8.tcn1.branches.1.3.bn.bias
    """
    mapping = {}
    for key in net.state_dict():
        block = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if block is None:
            mapping[key] = key
            continue
        rest = block[2]
        for pattern, replacement in _BLOCK_KEYS:
            if re.fullmatch(pattern, rest):
                mapping[key] = f"l{int(block[1]) + 1}." + re.sub(pattern, replacement, rest)
                break
        else:
            raise AssertionError(f"no reference name for {key!r}")  # a module added without a rule
    return mapping


def load_ctrgcn_state(net: CTRGCN, state: Mapping[str, Tensor] | str | PathLike) -> None:
    """Fill `net` from a state dict in the reference's names (the released `.pt` files: a plain state
    dict, keys optionally "module."-prefixed), or a path to one (read on CPU, tensors only).

    Every key of `state` must have a place in `net`, with its shape, and every tensor of `net` must be
    filled, BN `num_batches_tracked` counters excepted (left as they were); otherwise ValueError naming
    the keys. A release for another class count fails on fc's shape.
    """
    if isinstance(state, (str, PathLike)):
        state = torch.load(state, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ours = net.state_dict()  # tensors sharing storage with the parameters and buffers
    mapping = ctrgcn_key_map(net)
    missing = [ref for key, ref in mapping.items()
               if ref not in state and not key.endswith("num_batches_tracked")]
    unexpected = sorted(set(state) - set(mapping.values()))
    wrong = [f"{ref} {tuple(state[ref].shape)} (expected {tuple(ours[key].shape)})"
             for key, ref in mapping.items() if ref in state and state[ref].shape != ours[key].shape]
    if missing or unexpected or wrong:
        problems = [f"{len(found)} {what}, e.g. {found[:4]}" for what, found in (
            ("missing", missing), ("with no place in CTRGCN", unexpected), ("of the wrong shape", wrong))
            if found]
        raise ValueError(f"not a CTR-GCN state dict for {net.config}: " + "; ".join(problems))
    with torch.no_grad():
        for key, ref in mapping.items():
            if ref in state:
                ours[key].copy_(state[ref])
