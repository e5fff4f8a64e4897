"""Heatmap speed: `model.data.heatmaps` against PYSKL's numpy generator, per sample, on one CPU thread.

    .venv/bin/python bench/heatmaps.py                       # 48 frames, 25 joints, 2 persons, 56^2
    .venv/bin/python bench/heatmaps.py --samples 16 --limbs  # also the 24 limb maps
    .venv/bin/python bench/heatmaps.py --device cuda         # the torch side on the GPU (numpy on a CPU)

Both sides draw the same random samples: two persons each over the map (joints within 10 px of the
person's centre, so the persons often overlap), scores in [0, 1] with about one joint in ten under the
score floor. The baseline is the numpy generator of PYSKL's `GeneratePoseTarget` (sigma 0.6, use_score,
with_kp or with_limb; pyskl/datasets/pipelines/heatmap_related.py) written out below: a loop over frames,
joints (or limbs) and persons, each drawing its window into the (T, V, H, W) float32 output, as PYSKL runs
it in a DataLoader worker, one sample at a time; its scalar arithmetic (window bounds, a limb's length)
in float64, as numpy 1.x, PYSKL's numpy, did it. The torch side is timed one sample a call (`batch 1`)
and on all the samples at once (`batch N`, per sample); the ratio is numpy's time over torch's. The maximum
absolute difference between the two outputs is printed too. Target: joints at >= 5x numpy per sample,
batch 1, one thread. On a CPU `batch N` pays for its output's first touch: glibc maps each allocation
over 32 MiB afresh, and the kernel zeroes it page by page (on a 2-core VM, 30k page faults, most of the
time of an 8-sample call); a CUDA caching allocator reuses its blocks and has no such cost. The limb maps
are computed over whole maps (see `limb_heatmaps`): on a CPU they run about as fast as numpy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from model.data.heatmaps import BONES, SCORE_FLOOR, bone_index, joint_heatmaps, limb_heatmaps

# --- the baseline: PYSKL's generator, as its numpy code runs it ------------------------------------------


def _bounds(lo: float, hi: float, sigma: float, length: int) -> tuple[int, int]:
    return max(int(lo - 3 * sigma), 0), min(int(hi + 3 * sigma) + 1, length)


def pyskl_point(canvas: np.ndarray, centres: np.ndarray, peaks: np.ndarray, sigma: float) -> None:
    """Draw one joint of M persons (centres (M, 2), peaks (M,)) into canvas (H, W), max-combined."""
    h, w = canvas.shape
    for (x, y), s in zip(centres, peaks, strict=True):
        if s < SCORE_FLOOR:
            continue
        c0, c1 = _bounds(float(x), float(x), sigma, w)  # float(): numpy 1.x's float64 scalar arithmetic
        r0, r1 = _bounds(float(y), float(y), sigma, h)
        cols = np.arange(c0, c1, 1, np.float32)
        rows = np.arange(r0, r1, 1, np.float32)[:, None]
        if not (cols.size and rows.size):
            continue
        patch = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / 2 / sigma**2) * s
        canvas[r0:r1, c0:c1] = np.maximum(canvas[r0:r1, c0:c1], patch)


def pyskl_limb(canvas: np.ndarray, starts, ends, start_peaks, end_peaks, sigma: float) -> None:
    """Draw one limb of M persons (ends (M, 2) each, peaks (M,) each) into canvas (H, W)."""
    h, w = canvas.shape
    for a, b, sa, sb in zip(starts, ends, start_peaks, end_peaks, strict=True):
        peak = min(sa, sb)
        if peak < SCORE_FLOOR:
            continue
        c0, c1 = _bounds(float(min(a[0], b[0])), float(max(a[0], b[0])), sigma, w)
        r0, r1 = _bounds(float(min(a[1], b[1])), float(max(a[1], b[1])), sigma, h)
        cols = np.arange(c0, c1, 1, np.float32)
        rows = np.arange(r0, r1, 1, np.float32)[:, None]
        if not (cols.size and rows.size):
            continue
        length2 = float(a[0] - b[0]) ** 2 + float(a[1] - b[1]) ** 2
        if length2 < 1:
            pyskl_point(canvas, a[None], sa[None], sigma)
            continue
        d2_a = (cols - a[0]) ** 2 + (rows - a[1]) ** 2
        d2_b = (cols - b[0]) ** 2 + (rows - b[1]) ** 2
        along = (d2_a - d2_b + length2) / 2.0 / length2
        before, after = along <= 0, along >= 1
        proj_x, proj_y = a[0] + along * (b[0] - a[0]), a[1] + along * (b[1] - a[1])
        d2_line = (cols - proj_x) ** 2 + (rows - proj_y) ** 2
        d2 = before * d2_a + after * d2_b + ~(before | after) * d2_line
        patch = np.exp(-d2 / 2.0 / sigma**2) * peak
        canvas[r0:r1, c0:c1] = np.maximum(canvas[r0:r1, c0:c1], patch)


def pyskl_sample(keypoint: np.ndarray, score: np.ndarray, size, sigma: float, limbs: bool) -> np.ndarray:
    """PYSKL's per-sample generator: keypoint (M, T, V, 2), score (M, T, V) -> (T, V or L, H, W)."""
    m, t, v, _ = keypoint.shape
    out = np.zeros((t, len(BONES) if limbs else v, *size), np.float32)
    for f in range(t):
        kps, peaks = keypoint[:, f], score[:, f]  # (M, V, 2), (M, V)
        if limbs:
            for k, (a, b) in enumerate(BONES):
                pyskl_limb(out[f, k], kps[:, a], kps[:, b], peaks[:, a], peaks[:, b], sigma)
        else:
            for j in range(v):
                pyskl_point(out[f, j], kps[:, j], peaks[:, j], sigma)
    return out


# --- the run ----------------------------------------------------------------------------------------------


def random_samples(count: int, frames: int, size: int, seed: int = 0):
    """xy (N, 2, T, 25, 2) in pixels and scores (N, T, 25, 2) float32, the model's layout."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(10, size - 10, (count, 2, 1, 1, 2))
    xy = (centre + rng.uniform(-10, 10, (count, 2, frames, 25, 2))).astype(np.float32)
    score = rng.uniform(0, 1, (count, frames, 25, 2)).astype(np.float32)
    score[rng.random(score.shape) < 0.1] = 0.0
    return xy, score


def timed(fn, repeats: int, sync) -> float:
    """Best of `repeats` wall times of fn(), after one untimed call."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def compare(name: str, xy: np.ndarray, score: np.ndarray, args, device: torch.device) -> None:
    limbs = name == "limbs"
    n = len(xy)
    size = (args.size, args.size)
    keypoint, kp_score = xy.transpose(0, 4, 2, 3, 1), score.transpose(0, 3, 1, 2)  # PYSKL's (M, T, V, 2)

    def numpy_one(i: int) -> np.ndarray:
        return pyskl_sample(keypoint[i], kp_score[i], size, args.sigma, limbs)

    def numpy_all() -> None:  # each output dropped once made, as a worker hands it on
        for i in range(n):
            numpy_one(i)

    bones = bone_index(device)
    xy_t, score_t = torch.from_numpy(xy).to(device), torch.from_numpy(score).to(device)

    def torch_call(i: slice):
        if limbs:
            return limb_heatmaps(xy_t[i], score_t[i], bones, size, args.sigma)
        return joint_heatmaps(xy_t[i], score_t[i], size, args.sigma)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    def torch_one_by_one() -> None:
        for i in range(n):
            torch_call(slice(i, i + 1))

    reference = np.stack([numpy_one(i) for i in range(n)]).transpose(0, 2, 1, 3, 4)  # (N, V, T, H, W)
    error = float(np.abs(torch_call(slice(None)).cpu().numpy() - reference).max())
    t_numpy = timed(numpy_all, args.repeats, lambda: None) / n
    t_one = timed(torch_one_by_one, args.repeats, sync) / n
    t_batch = timed(lambda: torch_call(slice(None)), args.repeats, sync) / n
    print(f"{name:6s}  numpy {t_numpy * 1e3:8.2f} ms  torch batch 1 {t_one * 1e3:7.2f} ms "
          f"({t_numpy / t_one:5.1f}x)  batch {n} {t_batch * 1e3:7.2f} ms ({t_numpy / t_batch:5.1f}x)  "
          f"max |diff| {error:.1e}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=int, default=56, help="heatmap height = width")
    p.add_argument("--sigma", type=float, default=0.6)
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    p.add_argument("--limbs", action="store_true", help="also time the 24 limb maps")
    p.add_argument("--device", default="cpu", help="where the torch side runs: cpu or cuda")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch.cuda.is_available() is False")
    xy, score = random_samples(args.samples, args.frames, args.size)
    out_mb = args.frames * 25 * args.size**2 * 4 / 2**20
    print(f"{args.samples} samples of {args.frames} frames, 25 joints, 2 persons, {args.size}^2 maps "
          f"({out_mb:.0f} MiB of joint maps each), sigma {args.sigma}; torch on {device}, "
          f"{torch.get_num_threads()} thread; times per sample, best of {args.repeats}")
    compare("joints", xy, score, args, device)
    if args.limbs:
        compare("limbs", xy, score, args, device)


if __name__ == "__main__":
    main()
