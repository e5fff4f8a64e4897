"""Pseudo heatmaps of joints and limbs (PoseC3D's input), made on the device inside the training step.

    scores = tracking_scores(tracking)                            # (N, T, V, M) int8 -> float32
    joints = joint_heatmaps(xy, scores, (56, 56))                 # (N, V, T, 56, 56)
    bones = bone_index(device)                                    # (24, 2), once, before the steps
    limbs = limb_heatmaps(xy, scores, bones, (56, 56))            # (N, 24, T, 56, 56)

`xy` holds joint positions already in heatmap pixels (x right, y down; pixel (i, j) of a map is the point
x = j, y = i). Both generators equal PYSKL's `GeneratePoseTarget(use_score=True, ...)` (with_kp=True,
with_limb=False for joints; with_kp=False, with_limb=True for limbs), as its numpy code stands in
`pyskl/datasets/pipelines/heatmap_related.py`: same windows, same score floor, same max over persons,
gaussians computed in float32 (tests/test_heatmaps.py compares them with a transcription of that code;
bench/heatmaps.py times them against it). No host sync and no Python loop over samples, frames or joints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ntu_pipeline.skeleton.joints import (
    BONES,  # NTU's 24 Kinect v2 bones, 0-based (ST-GCN's / CTR-GCN's ntu pairs)
)

__all__ = ["BONES", "SCORE_FLOOR", "bone_index", "joint_heatmaps", "limb_heatmaps", "tracking_scores"]

SCORE_FLOOR = 1e-3  # PYSKL's EPS: a keypoint (or limb) whose score is below it draws nothing
TRACKED, INFERRED = 2, 1  # Kinect trackingState, as the store's `skeleton/tracking` keeps it
TRACKED_SCORE, INFERRED_SCORE = 1.0, 0.5


def tracking_scores(tracking: Tensor) -> Tensor:
    """Keypoint scores (..., float32) from Kinect tracking states (..., any integer dtype), same device.

    2 (tracked) -> 1.0, 1 (inferred) -> 0.5, 0 (not tracked) and anything else -> 0.0.
    Why these: in PYSKL the score is the gaussian's peak, and its NTU heatmaps are drawn from HRNet's
    confidences, near 1 on joints the detector sees clearly and lower on occluded or blurred ones, so the
    peak says how much to trust the position. A tracked Kinect joint is measured: full weight. An inferred
    one is Kinect's guess for an occluded joint, often centimetres off: half weight, drawn but dimmer than
    a seen joint (a judgement, not a measured calibration). 0 must stay below `SCORE_FLOOR`: the store
    pads absent actors and frames past the end with tracking 0 and joints at the origin, and those must
    draw nothing.
    """
    scores = torch.where(tracking == TRACKED, TRACKED_SCORE, 0.0)
    return torch.where(tracking == INFERRED, INFERRED_SCORE, scores).to(torch.float32)


def _window(lo: Tensor, hi: Tensor, sigma: float, length: int) -> tuple[Tensor, Tensor]:
    """PYSKL's window [max(int(lo - 3 sigma), 0), min(int(hi + 3 sigma) + 1, length)) as int64 tensors.

    Python's int() truncates towards zero, so a centre just left of the map (lo + 3 sigma in (-1, 0))
    still reaches column 0; floor would not. PYSKL's scalars were numpy float32 minus a Python float,
    which numpy 1.x (its era) evaluates in float64, so the bounds are taken in float64 too. Clamping
    before the cast keeps huge coordinates from overflowing and changes no bound.
    """
    start = (lo.double() - 3 * sigma).clamp(0, length).long()
    end = ((hi.double() + 3 * sigma).clamp(-1, length).long() + 1).clamp(max=length)
    return start, end


def _gaussian(d2: Tensor, sigma: float) -> Tensor:
    return torch.exp(-d2 / 2 / sigma**2)  # PYSKL's order of operations, so float32 rounding matches


@torch.no_grad()
def joint_heatmaps(xy: Tensor, score: Tensor, size: tuple[int, int], sigma: float = 0.6) -> Tensor:
    """Joint heatmaps (N, V, T, H, W) float32 of positions xy (N, 2, T, V, M) (x, y in heatmap pixels)
    and scores (N, T, V, M), on xy's device; equal to PYSKL's GeneratePoseTarget(sigma, use_score=True,
    with_kp=True, with_limb=False) applied to each sample, with M persons.

    Map v of frame t is the max over persons m, and over zero, of score * exp(-d^2 / (2 sigma^2)), d the
    distance from pixel (x=j, y=i) to the joint, taken only inside the joint's window: columns
    max(int(x - 3 sigma), 0) <= j < min(int(x + 3 sigma) + 1, W), int() truncating towards zero, and rows
    likewise with y and H. The window is not symmetric: a joint at x = 5.0 with sigma 0.6 covers columns
    3-6, not 7. A joint with score < 1e-3 (`SCORE_FLOOR`), or not finite, draws nothing, whatever its
    position; a joint off the map draws the part of its window that lies on it. sigma is in pixels.

    Each joint writes only its window, a (floor(6 sigma) + 2)^2 block, through one scatter with amax, so
    the cost is the zeroed output plus N*T*V*M small blocks. No gradient flows through it (a data
    transform).
    """
    n, _, t, v, m = xy.shape
    h, w = size
    if score.shape != (n, t, v, m):
        raise ValueError(f"score has shape {tuple(score.shape)}, expected {(n, t, v, m)} to match xy")
    centre = xy.to(torch.float32).permute(0, 1, 3, 2, 4)  # (N, 2, V, T, M): the output's order
    value = score.to(device=xy.device, dtype=torch.float32).permute(0, 2, 1, 3)  # (N, V, T, M)
    finite = centre.isfinite().all(dim=1)  # (N, V, T, M)
    centre = torch.where(finite[:, None], centre, 0.0)
    value = torch.where(finite & (value >= SCORE_FLOOR), value, 0.0)
    mu_x, mu_y = centre[:, 0, ..., None], centre[:, 1, ..., None]  # (N, V, T, M, 1)
    x0, x1 = _window(mu_x, mu_x, sigma, w)
    y0, y1 = _window(mu_y, mu_y, sigma, h)
    offset = torch.arange(math.floor(6 * sigma) + 2, device=xy.device)  # (K,): the widest window
    cols, rows = x0 + offset, y0 + offset  # (N, V, T, M, K)
    gx = (cols.to(torch.float32) - mu_x) ** 2
    gy = (rows.to(torch.float32) - mu_y) ** 2
    patch = _gaussian(gy[..., :, None] + gx[..., None, :], sigma) * value[..., None, None]  # (..., K, K)
    inside = (rows < y1)[..., :, None] & (cols < x1)[..., None, :]  # (N, V, T, M, K, K)
    patch = torch.where(inside, patch, 0.0)
    maps = torch.arange(n * v * t, device=xy.device).view(n, v, t, 1, 1, 1) * (h * w)
    # Outside the window the value is 0, so any on-map pixel of the same map is a harmless target.
    index = maps + rows.clamp(max=h - 1)[..., :, None] * w + cols.clamp(max=w - 1)[..., None, :]
    out = torch.zeros(n * v * t * h * w, dtype=torch.float32, device=xy.device)
    out.scatter_reduce_(0, index.flatten(), patch.flatten(), reduce="amax", include_self=True)
    return out.view(n, v, t, h, w)


def bone_index(device: torch.device | str, bones: Sequence[tuple[int, int]] = BONES) -> Tensor:
    """The (L, 2) int64 tensor of `bones` on `device`, for `limb_heatmaps`: make it once, before the
    training steps, so that no step copies it from the host (on CUDA, a copy that waits)."""
    index = torch.as_tensor(bones, dtype=torch.long)
    if index.ndim != 2 or index.shape[1] != 2 or (index < 0).any():
        raise ValueError(f"bones must be pairs of non-negative joint indices, got {bones!r}")
    return index.to(device)


@torch.no_grad()
def limb_heatmaps(xy: Tensor, score: Tensor, bones: Tensor | Sequence[tuple[int, int]] = BONES,
                  size: tuple[int, int] = (56, 56), sigma: float = 0.6) -> Tensor:
    """Limb heatmaps (N, L, T, H, W) float32 for bones (L pairs of joint indices (a, b)) from positions
    xy (N, 2, T, V, M) in heatmap pixels and scores (N, T, V, M), on xy's device; equal to PYSKL's
    GeneratePoseTarget(sigma, use_score=True, with_kp=False, with_limb=True, skeletons=bones).

    Map l of frame t is the max over persons, and over zero, of min(score_a, score_b) * exp(-d^2 /
    (2 sigma^2)), d the distance from the pixel to the segment a-b, taken inside the segment's bounding
    box widened by the joint window's rule (columns max(int(min(x_a, x_b) - 3 sigma), 0) up to
    min(int(max(x_a, x_b) + 3 sigma) + 1, W), rows likewise). A limb whose smaller score is < 1e-3 draws
    nothing. A limb shorter than one pixel (squared length < 1) is drawn as PYSKL does: as joint a's
    heatmap, with joint a's window and joint a's score (not the minimum).

    bones: joint pairs, or their `bone_index` tensor on xy's device (made ahead: a sequence is copied
    to the device on every call). Indices are not range-checked on the device (that would read back).

    The box can span the map, so this one is computed densely, over whole maps: about five
    (N, L, T, H, W) float32 temporaries besides the output (on CUDA, 0.46 GB each for 32 samples of 48
    frames at 56^2), looping over the M persons only. On one CPU thread it runs about as fast as PYSKL's
    numpy; it is meant for the GPU. No gradient flows through it (a data transform).
    """
    n, _, t, v, m = xy.shape
    h, w = size
    if score.shape != (n, t, v, m):
        raise ValueError(f"score has shape {tuple(score.shape)}, expected {(n, t, v, m)} to match xy")
    pairs = bones if isinstance(bones, Tensor) else bone_index(xy.device, bones)  # (L, 2)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"bones must be (L, 2) joint indices, got shape {tuple(pairs.shape)}")
    centre = xy.to(torch.float32).permute(0, 1, 3, 2, 4)  # (N, 2, V, T, M)
    value = score.to(device=xy.device, dtype=torch.float32).permute(0, 2, 1, 3)  # (N, V, T, M)
    a, b = centre[:, :, pairs[:, 0]], centre[:, :, pairs[:, 1]]  # (N, 2, L, T, M)
    value_a, value_b = value[:, pairs[:, 0]], value[:, pairs[:, 1]]  # (N, L, T, M)
    draws = (torch.minimum(value_a, value_b) >= SCORE_FLOOR) & a.isfinite().all(1) & b.isfinite().all(1)
    a, b = torch.where(draws[:, None], a, 0.0), torch.where(draws[:, None], b, 0.0)
    d2_ab = ((a - b).double() ** 2).sum(dim=1)  # (N, L, T, M); float64 as in PYSKL's scalar arithmetic
    short = d2_ab < 1  # drawn as joint a
    x0, x1 = _window(torch.minimum(a[:, 0], b[:, 0]), torch.maximum(a[:, 0], b[:, 0]), sigma, w)
    y0, y1 = _window(torch.minimum(a[:, 1], b[:, 1]), torch.maximum(a[:, 1], b[:, 1]), sigma, h)
    ax0, ax1 = _window(a[:, 0], a[:, 0], sigma, w)
    ay0, ay1 = _window(a[:, 1], a[:, 1], sigma, h)
    x0, x1 = torch.where(short, ax0, x0), torch.where(short, ax1, x1)
    y0, y1 = torch.where(short, ay0, y0), torch.where(short, ay1, y1)
    peak = torch.where(short, value_a, torch.minimum(value_a, value_b))
    # A short limb is joint a: with b moved onto a, every pixel's distance below is its distance to a.
    b = torch.where(short[:, None], a, b)
    length2 = torch.where(short, 1.0, d2_ab).to(torch.float32)  # (N, L, T, M)

    # What varies along one axis only is made per row or per column, then broadcast over the maps.
    # The arithmetic follows PYSKL's, step by step, so the float32 rounding is the same.
    col = torch.arange(w, device=xy.device)
    row = torch.arange(h, device=xy.device)
    col_scale = torch.where((col >= x0[..., None]) & (col < x1[..., None]) & draws[..., None],
                            peak[..., None], 0.0)  # (N, L, T, M, W): the peak inside the window, else 0
    row_in = ((row >= y0[..., None]) & (row < y1[..., None])).to(torch.float32)  # (N, L, T, M, H)
    px, py = col.to(torch.float32), row.to(torch.float32)
    out = torch.zeros(n, len(pairs), t, h, w, dtype=torch.float32, device=xy.device)
    for p in range(m):  # persons only; each pass holds five (N, L, T, H, W) maps
        def per_map(x: Tensor, p: int = p) -> Tensor:
            return x[..., p, None, None]  # (N, L, T, M) -> (N, L, T, 1, 1)
        xa, ya, xb, yb = per_map(a[:, 0]), per_map(a[:, 1]), per_map(b[:, 0]), per_map(b[:, 1])
        d2_a = ((py[:, None] - ya) ** 2) + (px - xa) ** 2  # (N, L, T, H, W)
        d2_b = ((py[:, None] - yb) ** 2) + (px - xb) ** 2
        # Where the projection falls on a->b: 0 at a, 1 at b.
        along = (d2_a - d2_b).add_(per_map(length2)).div_(2.0).div_(per_map(length2))
        d2_line = (along * (xb - xa)).add_(xa).sub_(px).square_()
        d2_line.add_((along * (yb - ya)).add_(ya).sub_(py[:, None]).square_())
        d2 = torch.where(along >= 1, d2_b, d2_line)
        d2 = torch.where(along <= 0, d2_a, d2)
        del d2_a, d2_b, d2_line, along
        # exp of under -87 is subnormal in float32, and slow on a CPU; PYSKL's value there is < 1e-35.
        patch = d2.div_(-2.0).div_(sigma**2).clamp_(min=-80.0).exp_()
        patch.mul_(col_scale[..., p, None, :]).mul_(row_in[..., p, :, None])
        torch.maximum(out, patch, out=out)
    return out
