"""Skeleton motion (paper eq. 2), the one rule the networks and the data path share.

    motion = skeleton_motion(skeleton)   # (B, C, T, V, M) -> (B, C, T, V, M)

A module of its own so that the data path (`model.data.split`) and the networks (`model.networks.hcn`)
both import it without the loader reaching into a network file.
"""

from __future__ import annotations

import torch
from torch import Tensor


def skeleton_motion(skeleton: Tensor) -> Tensor:
    """Motion of skeletons (B, C, T, V, M) -> (B, C, T, V, M): M_t = S_{t+1} - S_t (paper eq. 2), masked.

    Taken on the frames given (call it after temporal sampling, never sum a per-frame motion over the
    skipped frames). Zero where actor m is absent in frame t or in frame t+1, and at the last frame. Actor
    m is present in frame t of sample b when any coordinate of skeleton[b, :, t, :, m] is non-zero (the
    store keeps empty slots all zero), so an actor entering or leaving makes no spike of size |S|. The
    store's per-frame `skeleton/motion` follows the same rule at full frame rate. No data-dependent control
    flow: `torch.compile(fullgraph=True)` traces it.
    """
    present = skeleton.ne(0).any(dim=3).any(dim=1)  # (B, T, M): any non-zero over C and V
    both = (present[:, 1:] & present[:, :-1])[:, None, :, None, :]  # (B, 1, T-1, 1, M)
    step = torch.where(both, skeleton[:, :, 1:] - skeleton[:, :, :-1], 0.0)  # (B, C, T-1, V, M)
    return torch.cat([step, torch.zeros_like(skeleton[:, :, :1])], dim=2)
