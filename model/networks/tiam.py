"""TIAM: temporo-spatial interactive attention between two (B, C, T, S) feature maps (paper eqs. 15-18).

    from model.networks.tiam import TIAM
    tiam = TIAM(64)
    p_a, p_b = tiam(p_a, p_b)              # (B, 64, T, S) each, unchanged at initialisation
    y1, y2 = tiam.attention(p_a, p_b)      # (B, T, T) temporal and (B, S, S) spatial attention

In CC-DFARM the inputs are HCN's position and motion maps after conv4 (64 x 8 x 8 at T = 32, axis T is
time and axis S the co-occurrence feature axis), i.e. after the transition layer, before the concat.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TIAM(nn.Module):
    """Temporo-spatial interactive attention module (paper sections 2.4-2.5), read as MODEL_SPEC.md does.

    p_a, p_b (B, C, T, S) -> (p_a', p_b') of the same shapes.
      R_i = Conv_R(BN_i(P_i)), Conv_R shared by A and B; E_i = Conv_i(BN_i(P_i)), not shared (eq. 15),
      each with C' = max(1, C // 2) channels;
      Y_1 = softmax(E_A^(T) E_B^(T)^T / sqrt(C' S)), T x T, with X^(T) the map as T x (C' S) (eq. 16);
      Y_2 = softmax(E_B^(S) E_A^(S)^T / sqrt(C' T)), S x S, with X^(S) the map as S x (C' T);
      per channel, R_i as a T x S matrix: Z_A = Y_1^T R_A Y_2, Z_B = Y_1 R_B Y_2^T (eq. 17);
      P_i' = BN(Conv_i'(Z_i)) + P_i, Conv_i' mapping C' back to C, no bias (the BN shifts) (eq. 18).
    Softmax is over the last axis. Choices the paper leaves open: one input BN per stream, whose output
    feeds both R_i and E_i; C' = C / 2, since the paper restores the original width after the
    attention ("restore the original dimension", eq. 18); the 1/sqrt scaling, from the spec. The last
    BNs start with weight and bias zero, so the module starts as the identity; their weights still
    receive gradients, and the rest of the module does as soon as they move off zero.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        inner = max(1, channels // 2)
        self.channels, self.inner_channels = channels, inner
        self.norm_a = nn.BatchNorm2d(channels)
        self.norm_b = nn.BatchNorm2d(channels)
        self.value = nn.Conv2d(channels, inner, 1)  # Conv_R, shared (eq. 15)
        self.embed_a = nn.Conv2d(channels, inner, 1)  # Conv_A (eq. 15)
        self.embed_b = nn.Conv2d(channels, inner, 1)  # Conv_B (eq. 15)
        self.project_a = nn.Conv2d(inner, channels, 1, bias=False)  # eq. 18; the BN after it shifts
        self.project_b = nn.Conv2d(inner, channels, 1, bias=False)
        self.out_norm_a = nn.BatchNorm2d(channels)
        self.out_norm_b = nn.BatchNorm2d(channels)
        for bn in (self.out_norm_a, self.out_norm_b):
            nn.init.zeros_(bn.weight)  # identity at initialisation

    @staticmethod
    def _gram_attention(e_a: Tensor, e_b: Tensor) -> tuple[Tensor, Tensor]:
        """Y_1 (B, T, T) and Y_2 (B, S, S) from the embeddings E_A, E_B (B, C', T, S) (eq. 16)."""
        b, c, t, s = e_a.shape
        a_t = e_a.transpose(1, 2).reshape(b, t, c * s)  # (B, T, C'S)
        b_t = e_b.transpose(1, 2).reshape(b, t, c * s)
        a_s = e_a.permute(0, 3, 1, 2).reshape(b, s, c * t)  # (B, S, C'T)
        b_s = e_b.permute(0, 3, 1, 2).reshape(b, s, c * t)
        y1 = torch.softmax((a_t @ b_t.transpose(1, 2)).float() * (c * s) ** -0.5, dim=-1)  # (B, T, T)
        y2 = torch.softmax((b_s @ a_s.transpose(1, 2)).float() * (c * t) ** -0.5, dim=-1)  # (B, S, S)
        return y1, y2

    def attention(self, p_a: Tensor, p_b: Tensor) -> tuple[Tensor, Tensor]:
        """The temporal (B, T, T) and spatial (B, S, S) attention maps for these inputs; rows sum to 1."""
        return self._gram_attention(self.embed_a(self.norm_a(p_a)), self.embed_b(self.norm_b(p_b)))

    def forward(self, p_a: Tensor, p_b: Tensor) -> tuple[Tensor, Tensor]:
        if p_a.shape != p_b.shape or p_a.ndim != 4 or p_a.shape[1] != self.channels:
            raise ValueError(f"TIAM({self.channels}) needs two (B, {self.channels}, T, S) maps, "
                             f"got {tuple(p_a.shape)} and {tuple(p_b.shape)}")
        x_a, x_b = self.norm_a(p_a), self.norm_b(p_b)
        r_a, r_b = self.value(x_a), self.value(x_b)  # (B, C', T, S), eq. 15
        y1, y2 = self._gram_attention(self.embed_a(x_a), self.embed_b(x_b))
        y1, y2 = y1.to(r_a.dtype), y2.to(r_a.dtype)
        z_a = y1.transpose(1, 2).unsqueeze(1) @ r_a @ y2.unsqueeze(1)  # (B, C', T, S), eq. 17
        z_b = y1.unsqueeze(1) @ r_b @ y2.transpose(1, 2).unsqueeze(1)
        return (self.out_norm_a(self.project_a(z_a)) + p_a,  # eq. 18
                self.out_norm_b(self.project_b(z_b)) + p_b)
