"""Dropout whose mask is a pure function of (seed, epoch, sample, layer, element): a sample gets the same
mask whichever process holds it, beside whichever other samples, on any device, eager or compiled.

    self.dropout = SampleDropout(0.5)                      # in a network, where nn.Dropout was
    self.dropout2d = SampleDropout(0.5, channels=True)     # nn.Dropout2d: whole channels

    keys = sample_keys(seed, epoch, batch.positions)       # (B, 2) int64, on the positions' device
    with dropout_keys(net, keys):                          # what model/training/epoch.py does each step
        out = net(skeleton=batch.skeleton)                 # every mask drawn from its sample's key
    out = net(skeleton=skeleton)                           # outside: a key per sample from torch's generator

Why: torch's dropout draws one mask for the whole batch from the process's generator, so under DDP a
sample's mask depended on which process held it and what else was in its batch, and two processes did
not take one process's step (HCN's weights 1.25e-3 apart after one step at its default dropout 0.5).
Here each element's uniform is a counter-based hash (lowbias32, two rounds, one per word of the
sample's layer key) of the element's index within its sample: no generator state, no host sync, one
fused kernel under torch.compile, and a backward that recomputes the mask gets the same one.

Rows: a layer may see a sample as several rows (HCN folds the persons into the batch axis, sample-major:
row b*M + m); the rows of sample b are rows b*R .. b*R + R - 1 with R = rows / B. Each SampleDropout
must run once per forward (its mask is its key's: a second call repeats it); a layer used twice is two
modules. The arithmetic is exact in int64 (products stay under 2**63), so CPU, CUDA and inductor agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

MASK32 = 0xFFFFFFFF


def _mul32(x, c: int):
    """x * c mod 2**32 for x in [0, 2**32) (an int64 tensor or an int), without int64 overflow: at once
    for c < 2**31, else in two 16-bit halves of c."""
    if c < 2**31:
        return (x * c) & MASK32
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def mix32(x):
    """lowbias32 (C. Wellons' hash prospector): a bijection of [0, 2**32) with full avalanche. Works alike
    on Python ints and int64 tensors (elementwise) holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _words(*values: int) -> tuple[int, int]:
    """Two 32-bit words hashing a sequence of integers (any sign and size)."""
    h0, h1 = 0x6A09E667, 0xBB67AE85  # two independent streams
    for value in values:
        for shift in (0, 32):
            word = (value >> shift) & MASK32
            h0, h1 = mix32(h0 ^ mix32(word)), mix32(h1 ^ mix32(word ^ 0x5BE0CD19))
    return h0, h1


def sample_keys(seed: int, epoch: int, positions: Tensor) -> Tensor:
    """The dropout keys of the samples at split `positions` (B,) int64 in epoch `epoch`: (B, 2) int64
    words in [0, 2**32), on the positions' device (the seed and epoch are folded on the host, so nothing
    is copied to the device)."""
    h0, h1 = _words(seed, epoch)
    p = positions.long() & MASK32
    return torch.stack([mix32(mix32(p) ^ h0), mix32(mix32(p ^ 0x3C6EF372) ^ h1)], dim=1)


def layer_keys(keys: Tensor, layers: int) -> Tensor:
    """(B, 2) sample keys -> (layers, B, 2): layer i's own key for each sample."""
    salt = mix32(torch.arange(layers, device=keys.device)[:, None, None] + 0x9E3779B9)  # (L, 1, 1)
    return mix32(keys[None] ^ salt)


def sample_dropout(x: Tensor, keys: Tensor, p: float, channels: bool = False) -> Tensor:
    """x (N, C, ...) with each sample's elements (or whole channels, `channels`) zeroed with probability
    p and the rest scaled by 1 / (1 - p), the mask drawn from the sample's key; keys (B, 2) int64, N a
    multiple of B (the rows of sample b: b*N/B .. (b+1)*N/B - 1)."""
    if p == 0.0:
        return x
    b, n = keys.shape[0], x.shape[0]
    if n % b:
        raise ValueError(f"dropout keys for {b} samples cannot cover a batch of {n} rows")
    unit = tuple(x.shape[:2]) if channels else tuple(x.shape)  # what one mask entry covers
    per_sample = (n // b) * math.prod(unit[1:])
    index = torch.arange(per_sample, device=x.device)  # an entry's place within its sample
    h = mix32(mix32(index ^ keys[:, :1]) ^ keys[:, 1:])  # (B, per_sample)
    keep = (h >> 8).to(torch.float32) * 2.0 ** -24 >= p  # uniforms in [0, 1), 24 bits
    mask = keep.to(x.dtype) * (1.0 / (1.0 - p))
    return x * mask.reshape(*unit, *([1] * (x.ndim - len(unit))))


class SampleDropout(nn.Module):
    """nn.Dropout (or nn.Dropout2d/3d with `channels`: whole channels of (N, C, ...)) drawing each
    sample's mask from its key: the keys `dropout_keys` set, else one per sample from torch's generator
    (so a network used on its own is still seeded by torch.manual_seed)."""

    def __init__(self, p: float = 0.5, channels: bool = False):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p, self.channels = p, channels
        self.keys: Tensor | None = None  # (B, 2) int64, set by `dropout_keys` for one forward

    def extra_repr(self) -> str:
        return f"p={self.p}, channels={self.channels}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keys = self.keys
        if keys is None:
            keys = torch.randint(0, 2**32, (x.shape[0], 2), device=x.device)
        return sample_dropout(x, keys, self.p, self.channels)


@contextmanager
def dropout_keys(net: nn.Module, keys: Tensor) -> Iterator[None]:
    """Every SampleDropout of `net` draws its masks from `keys` (B, 2) (`sample_keys`) in the block, each
    layer with its own key (`layer_keys`, layers numbered in `net.modules()` order)."""
    layers = [m for m in net.modules() if isinstance(m, SampleDropout)]
    for layer, key in zip(layers, layer_keys(keys, len(layers)).unbind(0), strict=True):
        layer.keys = key
    try:
        yield
    finally:
        for layer in layers:
            layer.keys = None
