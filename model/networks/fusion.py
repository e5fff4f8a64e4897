"""Cross-modal fusion modules: MMTM (baseline), DSFM and MFFM (CC-DFARM), each usable on its own.

    from model.networks.fusion import DSFM, MMTM, MFFM
    rgb, p1, p2 = DSFM([832, 128, 128], block_channels=64)([rgb, p1, p2])  # any (B, C, ...) shapes
    rgb, sk = MMTM(1024, 512)(rgb, sk)
    fused = MFFM(1024)(f1, f2)                                              # (B, C, T, H, W) each

Equation numbers are those of the CC-DFARM paper (seed/cc-dfarm-paper.zh.md); where the paper and
MODEL_SPEC.md differ, the spec is followed and the class docstring says so. Every gate is computed from
global averages and applied as a per-channel scale, so the modules accept features with any number of
non-channel axes and keep their memory format (channels_last_3d stays channels_last_3d).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def global_average(x: Tensor) -> Tensor:
    """(B, C, ...) -> (B, C): mean over every non-channel axis (eqs. 3, 4 and 9)."""
    return x.mean(dim=tuple(range(2, x.ndim))) if x.ndim > 2 else x


def _scale_channels(x: Tensor, gate: Tensor) -> Tensor:
    """x (B, C, ...) times gate (B, C) broadcast over the non-channel axes, in x's dtype."""
    return x * gate.to(x.dtype).reshape(*gate.shape, *([1] * (x.ndim - 2)))


class MMTM(nn.Module):
    """Multimodal transfer module (Joze et al. 2020; paper eqs. 3-8) between two feature maps.

    a (B, C_a, ...), b (B, C_b, ...) -> (a', b') of the same shapes.
    S_a, S_b = global averages (eqs. 3-4); Z = ReLU(W [S_a, S_b] + b) with |Z| = 2 (C_a + C_b) / ratio
    (eq. 7); E_a = W_a Z + b_a, E_b = W_b Z + b_b (eq. 8); a' = 2 sigma(E_a) * a, b' = 2 sigma(E_b) * b
    (eqs. 5-6). Departures, per MODEL_SPEC.md: the paper's eq. 7 has no ReLU, the released haamoon/mmtm
    code and the spec apply one; the released code gates with sigma alone, the paper and we with 2 sigma,
    so a zero excitation is the identity.
    """

    def __init__(self, channels_a: int, channels_b: int, ratio: int = 4):
        super().__init__()
        if channels_a < 1 or channels_b < 1 or ratio < 1:
            raise ValueError(f"MMTM needs positive sizes, got channels_a={channels_a}, "
                             f"channels_b={channels_b}, ratio={ratio}")
        joint = max(1, 2 * (channels_a + channels_b) // ratio)
        self.channels_a, self.channels_b = channels_a, channels_b
        self.squeeze = nn.Linear(channels_a + channels_b, joint)  # W, b of eq. 7
        self.excite_a = nn.Linear(joint, channels_a)  # W_a, b_a of eq. 8
        self.excite_b = nn.Linear(joint, channels_b)  # W_b, b_b of eq. 8

    def excitations(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """E_a (B, C_a) and E_b (B, C_b) of eq. 8."""
        s = torch.cat([global_average(a), global_average(b)], dim=1)  # (B, C_a + C_b), eqs. 3-4
        z = F.relu(self.squeeze(s))  # eq. 7
        return self.excite_a(z), self.excite_b(z)

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        e_a, e_b = self.excitations(a, b)
        # eqs. 5-6
        return _scale_channels(a, 2 * torch.sigmoid(e_a)), _scale_channels(b, 2 * torch.sigmoid(e_b))


class DSFM(nn.Module):
    """Dual-stream fusion module (paper section 2.3, eqs. 9-14; the form of MSAF's `MSAFBlock`).

    features: a list of M tensors (B, C_m, ...), any number of non-channel axes each -> same shapes.
    Each modality's channels are cut into blocks of `block_channels` (C) channels, the last one padded
    with zero channels. D_m = global average of the sum of m's blocks (eq. 9); G = sum_m D_m;
    Z = ReLU(BN(W_Z G + b_Z)), |Z| = C // reduction (eq. 10); U_m^i = W_m^i Z + b_m^i for every block
    (eq. 11); A = softmax over all blocks of all modalities, per channel (eq. 12); each block is scaled by
    lambda + (1 - lambda) A_m^i (eq. 13) and the blocks are put back in channel order (eq. 14).

    Implementation notes: the mean of a sum of blocks is the sum of the blocks' means, so eq. 9 pools
    first and sums (B, C) vectors, never padding or reshaping the feature maps. The per-block linear
    maps W_m^i of eq. 11 are stored stacked as one Linear(C', C * blocks): the same parameters and the
    same arithmetic as one Linear per block, in one matmul. The padding zeros are channels too, so a
    padded channel still takes part in the softmax, as in MSAF. The linear map of eq. 10 has no bias of
    its own: the BatchNorm after it subtracts any constant, and its shift plays the part of b_Z. That
    BatchNorm needs batches of two or more in training mode.
    """

    def __init__(self, in_channels: list[int], block_channels: int, reduction: int = 4,
                 lowest_attention: float = 0.5):
        super().__init__()
        if len(in_channels) < 1 or any(c < 1 for c in in_channels):
            raise ValueError(f"in_channels must list positive channel counts, got {in_channels}")
        if block_channels < 1 or reduction < 1 or block_channels < reduction:
            raise ValueError(f"need block_channels >= reduction >= 1, got block_channels={block_channels}, "
                             f"reduction={reduction}")
        if not 0.0 <= lowest_attention <= 1.0:
            raise ValueError(f"lowest_attention (lambda) must be in [0, 1], got {lowest_attention}")
        self.in_channels = tuple(in_channels)
        self.block_channels = block_channels
        self.lowest_attention = float(lowest_attention)
        self.num_blocks = tuple(math.ceil(c / block_channels) for c in in_channels)
        reduced = block_channels // reduction
        self.squeeze = nn.Linear(block_channels, reduced, bias=False)  # W_Z of eq. 10; BN's shift is b_Z
        self.squeeze_bn = nn.BatchNorm1d(reduced)
        self.excite = nn.Linear(reduced, block_channels * sum(self.num_blocks))  # every W_m^i of eq. 11

    def _check(self, features: list[Tensor]) -> None:
        found = tuple(x.shape[1] for x in features)
        if found != self.in_channels:
            raise ValueError(f"DSFM built for channels {self.in_channels}, got features with {found}")

    def attention(self, features: list[Tensor]) -> Tensor:
        """A of eq. 12, (B, K, C) for K blocks in all (modality-major, then block order); sums to 1 over K."""
        self._check(features)
        c = self.block_channels
        g = 0
        for x, nb in zip(features, self.num_blocks, strict=True):
            d = global_average(x)  # (B, C_m)
            d = F.pad(d, (0, nb * c - d.shape[1]))  # (B, nb * C): zero channels fill the last block
            g = g + d.reshape(d.shape[0], nb, c).sum(dim=1)  # D_m of eq. 9, summed over m into G
        z = F.relu(self.squeeze_bn(self.squeeze(g)))  # (B, C'), eq. 10
        u = self.excite(z).reshape(z.shape[0], sum(self.num_blocks), c)  # (B, K, C), eq. 11
        return torch.softmax(u.float(), dim=1)  # eq. 12

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        lam = self.lowest_attention
        scale = lam + (1.0 - lam) * self.attention(features)  # (B, K, C), eq. 13
        out = []
        for x, channels, blocks in zip(features, self.in_channels, scale.split(self.num_blocks, dim=1),
                                       strict=True):
            gate = blocks.reshape(blocks.shape[0], -1)[:, :channels]  # (B, C_m), eq. 14 block order
            out.append(_scale_channels(x, gate))
        return out


class MFFM(nn.Module):
    """Multimodal feature fusion module (paper section 2.6, eqs. 19-23).

    f1 (B, C, T, H, W) and f2 of the same shape, or broadcastable to it (e.g. (B, C, 1, 1, 1) for a
    vector spread over the map) -> (B, C, T, H, W). Other numbers of non-channel axes are accepted
    (flattened into one for the 1x1x1 convolutions).
    F = concat(f1, f2) (eq. 19); w_ch = sigma(Conv(AvgPool(F))) over 2C channels (eq. 20);
    F_ch = Conv(w_ch * F), 2C -> C (eq. 21); w_sp = sigma(Conv(f1) + Conv(f2)), one channel (eq. 22);
    out = w_sp * F_ch (eq. 23).
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.channel_gate = nn.Conv3d(2 * channels, 2 * channels, 1)  # eq. 20
        self.reduce = nn.Conv3d(2 * channels, channels, 1)  # eq. 21
        self.spatial_1 = nn.Conv3d(channels, 1, 1)  # eq. 22, on f1
        self.spatial_2 = nn.Conv3d(channels, 1, 1)  # eq. 22, on f2

    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        shape = f1.shape
        if f1.ndim != 5:  # (B, C, ...) -> (B, C, N, 1, 1); a view for contiguous and channels-last maps
            f1 = f1.reshape(shape[0], shape[1], -1, 1, 1)
            f2 = f2.reshape(f2.shape[0], f2.shape[1], -1, 1, 1)
        f = torch.cat([f1, f2.expand_as(f1)], dim=1)  # (B, 2C, T, H, W), eq. 19
        pooled = f.mean(dim=(2, 3, 4), keepdim=True)  # (B, 2C, 1, 1, 1)
        w_ch = torch.sigmoid(self.channel_gate(pooled))  # eq. 20
        f_ch = self.reduce(w_ch * f)  # (B, C, T, H, W), eq. 21
        w_sp = torch.sigmoid(self.spatial_1(f1) + self.spatial_2(f2))  # (B, 1, T, H, W), eq. 22
        return (w_sp * f_ch).reshape(shape)  # eq. 23
