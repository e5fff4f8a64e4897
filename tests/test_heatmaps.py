"""Joint and limb heatmaps against PYSKL's `GeneratePoseTarget` (pyskl/datasets/pipelines/heatmap_related.py),
written out below point by point in numpy, and against values worked out by hand.

The transcription keeps PYSKL's float32 arrays and evaluates its scalar arithmetic (window bounds, a
limb's squared length) on Python floats, as numpy 1.x, PYSKL's numpy, did for float32 scalars combined
with Python numbers (numpy 2 would keep them float32, which moves a bound only at exact ties).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from model.data.heatmaps import (
    BONES,
    SCORE_FLOOR,
    bone_index,
    joint_heatmaps,
    limb_heatmaps,
    tracking_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: why one thread
TOL = 1e-5


# --- PYSKL's generator, point by point ---------------------------------------------------------------

def _span(lo: float, hi: float, sigma: float, length: int) -> tuple[int, int]:
    return max(int(lo - 3 * sigma), 0), min(int(hi + 3 * sigma) + 1, length)


def _draw_point(canvas: np.ndarray, x: np.float32, y: np.float32, s: np.float32, sigma: float) -> None:
    if s < SCORE_FLOOR:
        return
    c0, c1 = _span(float(x), float(x), sigma, canvas.shape[1])
    r0, r1 = _span(float(y), float(y), sigma, canvas.shape[0])
    cols, rows = np.arange(c0, c1, dtype=np.float32), np.arange(r0, r1, dtype=np.float32)[:, None]
    if cols.size == 0 or rows.size == 0:
        return
    patch = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / 2 / sigma**2) * s
    canvas[r0:r1, c0:c1] = np.maximum(canvas[r0:r1, c0:c1], patch)


def _draw_limb(canvas: np.ndarray, pa: np.ndarray, pb: np.ndarray, sa: np.float32, sb: np.float32,
               sigma: float) -> None:
    peak = min(sa, sb)
    if peak < SCORE_FLOOR:
        return
    c0, c1 = _span(float(min(pa[0], pb[0])), float(max(pa[0], pb[0])), sigma, canvas.shape[1])
    r0, r1 = _span(float(min(pa[1], pb[1])), float(max(pa[1], pb[1])), sigma, canvas.shape[0])
    cols, rows = np.arange(c0, c1, dtype=np.float32), np.arange(r0, r1, dtype=np.float32)[:, None]
    if cols.size == 0 or rows.size == 0:
        return
    length2 = float(pa[0] - pb[0]) ** 2 + float(pa[1] - pb[1]) ** 2
    if length2 < 1:
        _draw_point(canvas, pa[0], pa[1], sa, sigma)
        return
    d2_a = (cols - pa[0]) ** 2 + (rows - pa[1]) ** 2
    d2_b = (cols - pb[0]) ** 2 + (rows - pb[1]) ** 2
    t = (d2_a - d2_b + length2) / 2.0 / length2
    near_a, near_b = t <= 0, t >= 1
    between = ~(near_a | near_b)
    d2_line = (cols - (pa[0] + t * (pb[0] - pa[0]))) ** 2 + (rows - (pa[1] + t * (pb[1] - pa[1]))) ** 2
    d2 = near_a * d2_a + near_b * d2_b + between * d2_line  # PYSKL blends by masks; exact, one term each
    patch = np.exp(-d2 / 2.0 / sigma**2) * peak
    canvas[r0:r1, c0:c1] = np.maximum(canvas[r0:r1, c0:c1], patch)


def reference_joints(xy: np.ndarray, score: np.ndarray, size, sigma: float) -> np.ndarray:
    """(N, 2, T, V, M), (N, T, V, M) -> (N, V, T, H, W), one point at a time."""
    n, _, t, v, m = xy.shape
    out = np.zeros((n, v, t, *size), np.float32)
    for i in range(n):
        for f in range(t):
            for j in range(v):
                for p in range(m):
                    _draw_point(out[i, j, f], xy[i, 0, f, j, p], xy[i, 1, f, j, p], score[i, f, j, p], sigma)
    return out


def reference_limbs(xy: np.ndarray, score: np.ndarray, bones, size, sigma: float) -> np.ndarray:
    """(N, 2, T, V, M), (N, T, V, M) -> (N, L, T, H, W), one limb at a time."""
    n, _, t, _, m = xy.shape
    out = np.zeros((n, len(bones), t, *size), np.float32)
    for i in range(n):
        for f in range(t):
            for k, (a, b) in enumerate(bones):
                for p in range(m):
                    _draw_limb(out[i, k, f], xy[i, :, f, a, p], xy[i, :, f, b, p], score[i, f, a, p],
                               score[i, f, b, p], sigma)
    return out


def random_case(seed: int, n: int, t: int, v: int, size, spread: float = 4.0):
    """Positions over the map and up to `spread` pixels past every border; person 2 a pixel or so from
    person 1 (overlapping blobs); scores a mix of 0, just under and just over the floor, and (0, 1]."""
    rng = np.random.default_rng(seed)
    h, w = size
    xy = np.empty((n, 2, t, v, 2), np.float32)
    xy[:, 0, ..., 0] = rng.uniform(-spread, w - 1 + spread, (n, t, v))
    xy[:, 1, ..., 0] = rng.uniform(-spread, h - 1 + spread, (n, t, v))
    xy[..., 1] = xy[..., 0] + rng.normal(0, 1.0, (n, 2, t, v))
    score = rng.uniform(0, 1, (n, t, v, 2)).astype(np.float32)
    pick = rng.integers(0, 5, score.shape)
    score[pick == 0] = 0.0
    score[pick == 1] = 0.0009
    score[pick == 2] = 0.0011
    return xy, score


def run_joints(xy, score, size, sigma):
    return joint_heatmaps(torch.from_numpy(xy), torch.from_numpy(score), size, sigma).numpy()


# --- joints -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.37, 2.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_joint_heatmaps_equal_pyskl_on_random_cases(sigma, seed):
    size = (13, 17)  # not square: catches x and y swapped
    xy, score = random_case(seed, 2, 6, 7, size)
    got = run_joints(xy, score, size, sigma)
    want = reference_joints(xy, score, size, sigma)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= TOL
    assert (want > 0).mean() > 0.02  # the case draws something


def tenths(seed: int, n: int, t: int, v: int, size):
    """Positions on a 0.1 px grid from 1 px off the map to 1 px past it: window bounds land on exact
    ties (x -+ 3 sigma an integer up to rounding), where float32 and float64 bounds part."""
    rng = np.random.default_rng(seed)
    xy = rng.integers(-10, 10 * max(size) + 10, (n, 2, t, v, 2)) / 10
    score = rng.uniform(0.1, 1, (n, t, v, 2))
    return xy.astype(np.float32), score.astype(np.float32)


@pytest.mark.parametrize("sigma", [0.5, 0.6, 1.0, 1.7])
def test_joint_heatmaps_equal_pyskl_on_positions_in_tenths(sigma):
    size = (10, 10)
    xy, score = tenths(5, 1, 8, 9, size)
    want = reference_joints(xy, score, size, sigma)
    assert np.abs(run_joints(xy, score, size, sigma) - want).max() <= TOL


def one_joint(x: float, y: float, s: float, size=(12, 12), sigma=0.6) -> np.ndarray:
    xy = np.array([x, y], np.float32).reshape(1, 2, 1, 1, 1)
    return run_joints(xy, np.full((1, 1, 1, 1), s, np.float32), size, sigma)[0, 0, 0]  # (H, W)


def gauss(d2: float, s: float, sigma: float = 0.6) -> float:
    return s * math.exp(-d2 / (2 * sigma**2))


def test_a_joint_on_a_pixel_by_hand():
    """x = 5, y = 4, sigma 0.6: the window is columns int(3.2)..int(6.8) = 3..6 and rows 2..5, not
    symmetric: column 3 (2 px left) is drawn, column 7 (2 px right) is not."""
    hm = one_joint(5.0, 4.0, 0.8)
    assert hm[4, 5] == pytest.approx(0.8, abs=1e-6)
    assert hm[4, 6] == pytest.approx(gauss(1, 0.8), abs=1e-6)
    assert hm[5, 6] == pytest.approx(gauss(2, 0.8), abs=1e-6)
    assert hm[4, 3] == pytest.approx(gauss(4, 0.8), abs=1e-6) and hm[4, 3] > 0.003
    assert hm[2, 5] == pytest.approx(gauss(4, 0.8), abs=1e-6)
    assert hm[4, 7] == 0 and hm[6, 5] == 0
    assert np.count_nonzero(hm) == 16  # the 4 x 4 window


def test_a_joint_between_pixels_by_hand():
    """x = 5.5, y = 4.25: columns int(3.7)..int(7.3) = 3..7, rows int(2.45)..int(6.05) = 2..6."""
    hm = one_joint(5.5, 4.25, 1.0)
    assert hm[4, 5] == pytest.approx(gauss(0.25 + 0.0625, 1.0), abs=1e-6)
    assert hm[4, 6] == pytest.approx(gauss(0.25 + 0.0625, 1.0), abs=1e-6)
    assert hm[6, 7] == pytest.approx(gauss(1.5**2 + 1.75**2, 1.0), abs=1e-6)
    assert hm[4, 3] == pytest.approx(gauss(2.5**2 + 0.0625, 1.0), abs=1e-6)
    assert hm[4, 8] == 0 and hm[7, 5] == 0 and hm[1, 5] == 0
    assert np.count_nonzero(hm) == 25


def test_a_joint_just_off_the_map_reaches_column_zero():
    """x = -2: x + 3 sigma = -0.2, which int() truncates to 0, so column 0 is in the window (a floor
    would leave the map empty)."""
    hm = one_joint(-2.0, 4.0, 1.0)
    assert hm[4, 0] == pytest.approx(gauss(4, 1.0), abs=1e-6)
    assert np.count_nonzero(hm) == 4  # column 0, rows 2..5
    assert not one_joint(-3.0, 4.0, 1.0).any()  # -1.2 truncates to -1: nothing
    assert not one_joint(4.0, 14.0, 1.0).any()  # below the map


def test_window_bounds_are_taken_in_float64_as_under_pyskls_numpy():
    """x = float32(2.8) = 2.79999995: minus 3 sigma in float64 is 0.99999995, so the window starts at
    column 0 (in float32 it rounds to 1.0 and starts at column 1). Ties only exact values reach."""
    hm = one_joint(2.8, 4.0, 1.0)
    assert hm[4, 0] == pytest.approx(gauss(2.8**2, 1.0), abs=1e-7) and hm[4, 0] > 1e-5
    # float32(4.2) = 4.19999981, plus 3 sigma is 5.99999981 in float64 (window ends at column 5) but 6.0
    # in float32, which would draw column 6 at 1.9e-5.
    hm = one_joint(4.2, 4.0, 1.0)
    assert hm[4, 5] > 0 and hm[4, 6] == 0


def test_the_score_floor_and_the_score_as_peak():
    assert not one_joint(5.0, 5.0, 0.0009).any()
    assert not one_joint(5.0, 5.0, 0.0).any()
    assert one_joint(5.0, 5.0, 0.0011)[5, 5] == pytest.approx(0.0011, abs=1e-9)
    assert one_joint(5.0, 5.0, SCORE_FLOOR)[5, 5] > 0  # float32(1e-3) is just above 1e-3


def test_two_persons_on_one_joint_give_their_max_not_their_sum():
    """Person 1 at (5, 4), score 0.3; person 2 at (5.9, 4), score 0.8: each pixel is the larger."""
    xy = np.array([[5.0, 5.9], [4.0, 4.0]], np.float32).reshape(1, 2, 1, 1, 2)
    score = np.array([0.3, 0.8], np.float32).reshape(1, 1, 1, 2)
    hm = run_joints(xy, score, (10, 10), 0.6)[0, 0, 0]
    assert hm[4, 5] == pytest.approx(0.3, abs=1e-6)  # person 2 gives 0.26 there; their sum 0.56
    assert hm[4, 6] == pytest.approx(gauss(0.01, 0.8), abs=1e-5)
    assert hm[4, 3] == pytest.approx(gauss(4, 0.3), abs=1e-6)  # only person 1's window reaches column 3
    assert hm[4, 7] == pytest.approx(gauss(1.1**2, 0.8), abs=1e-6)  # only person 2's reaches column 7
    assert hm[4, 8] == 0  # person 2's window is columns int(4.1)..int(7.7) = 4..7


def test_a_batch_is_its_samples_and_no_grad_changes_nothing():
    size = (16, 16)
    xy, score = random_case(3, 3, 4, 25, size)
    batch = run_joints(xy, score, size, 0.6)
    for i in range(3):
        assert np.array_equal(batch[i], run_joints(xy[i:i + 1], score[i:i + 1], size, 0.6)[0])
    with torch.no_grad():
        quiet = run_joints(xy, score, size, 0.6)
    assert np.array_equal(quiet, batch)
    double = joint_heatmaps(torch.from_numpy(xy).double(), torch.from_numpy(score), size)
    assert double.dtype == torch.float32 and np.abs(double.numpy() - batch).max() <= TOL


def test_non_finite_joints_draw_nothing_and_bad_scores_are_refused():
    xy = np.full((1, 2, 1, 1, 1), np.nan, np.float32)
    assert not run_joints(xy, np.ones((1, 1, 1, 1), np.float32), (8, 8), 0.6).any()
    with pytest.raises(ValueError, match="score has shape"):
        joint_heatmaps(torch.zeros(1, 2, 3, 4, 2), torch.zeros(1, 3, 4, 1), (8, 8))


# --- limbs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.6, 1.3])
def test_limb_heatmaps_equal_pyskl_on_random_cases(sigma):
    size = (15, 18)
    xy, score = random_case(7, 2, 4, 25, size, spread=3.0)
    xy[:, :, 1, 1] = xy[:, :, 1, 0] + 0.4  # some limbs shorter than a pixel: drawn as joint a
    got = limb_heatmaps(torch.from_numpy(xy), torch.from_numpy(score), BONES, size, sigma).numpy()
    want = reference_limbs(xy, score, BONES, size, sigma)
    assert got.shape == (2, 24, 4, *size) and got.dtype == np.float32
    assert np.abs(got - want).max() <= TOL
    assert (want > 0).mean() > 0.05


@pytest.mark.parametrize("sigma", [0.6, 1.7])
def test_limb_heatmaps_equal_pyskl_on_positions_in_tenths(sigma):
    size = (10, 12)
    xy, score = tenths(6, 1, 6, 25, size)
    got = limb_heatmaps(torch.from_numpy(xy), torch.from_numpy(score), BONES, size, sigma).numpy()
    assert np.abs(got - reference_limbs(xy, score, BONES, size, sigma)).max() <= TOL


def one_limb(a, b, sa, sb, size=(12, 14), sigma=0.6) -> np.ndarray:
    xy = np.array([a, b], np.float32).T.reshape(1, 2, 1, 2, 1)
    score = np.array([sa, sb], np.float32).reshape(1, 1, 2, 1)
    maps = limb_heatmaps(torch.from_numpy(xy), torch.from_numpy(score), [(0, 1)], size, sigma)
    return maps.numpy()[0, 0, 0]


def test_a_limb_by_hand():
    """a = (3, 5), b = (9, 5): the distance to the segment, min(score) as peak, window columns
    int(1.2)..int(10.8) = 1..10 and rows 3..6."""
    hm = one_limb((3, 5), (9, 5), 0.9, 0.6)
    assert hm[5, 6] == pytest.approx(0.6, abs=1e-6)  # on the segment
    assert hm[6, 6] == pytest.approx(gauss(1, 0.6), abs=1e-6)  # 1 px off it
    assert hm[5, 2] == pytest.approx(gauss(1, 0.6), abs=1e-6)  # 1 px before a
    assert hm[4, 10] == pytest.approx(gauss(2, 0.6), abs=1e-6)  # past b, diagonally
    assert hm[5, 1] == pytest.approx(gauss(4, 0.6), abs=1e-6) and hm[5, 11] == 0
    assert hm[3, 6] > 0 and hm[7, 6] == 0
    assert not one_limb((3, 5), (9, 5), 0.9, 0.0009).any()  # the smaller score is under the floor


def test_a_limb_shorter_than_a_pixel_is_joint_a_with_its_own_score():
    hm = one_limb((4, 4), (4.5, 4.2), 0.9, 0.5)
    assert np.array_equal(hm, one_joint(4, 4, 0.9, size=(12, 14)))


def test_bone_index_and_the_ntu_bones():
    assert len(BONES) == 24 and len({j for bone in BONES for j in bone}) == 25
    index = bone_index("cpu")
    assert index.shape == (24, 2) and index.dtype == torch.int64
    with pytest.raises(ValueError, match="pairs"):
        bone_index("cpu", [(0, 1, 2)])


# --- the device: nothing read back, nothing copied from the host ----------------------------------------

class _HostData(TorchDispatchMode):
    """Ops that mix a host tensor (not a 0-d scalar) into `meta` work: on CUDA, a copy that waits."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        if any(a.device.type == "cpu" and a.dim() > 0 for a in given) and (
                any(a.device.type == "meta" for a in given)
                or (isinstance(out, torch.Tensor) and out.device.type == "meta")):
            self.found.append(str(func))
        return out


def test_on_the_meta_device_nothing_is_read_back_or_sent():
    """`meta` has no values: any .item(), bool() or Python `if` on a tensor fails there, as it would
    wait on CUDA. The bone index is made ahead, as a training loop would."""
    meta = torch.device("meta")
    xy, score = torch.empty(4, 2, 48, 25, 2, device=meta), torch.empty(4, 48, 25, 2, device=meta)
    bones = bone_index(meta)
    with _HostData() as watch:
        joints = joint_heatmaps(xy, score, (56, 56))
        limbs = limb_heatmaps(xy, score, bones, (56, 56))
        tracking_scores(torch.empty(4, 48, 25, 2, dtype=torch.int8, device=meta))
    assert watch.found == []
    assert joints.shape == (4, 25, 48, 56, 56) and joints.device == meta
    assert limbs.shape == (4, 24, 48, 56, 56) and limbs.device == meta


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_it_equals_the_cpu_without_a_sync():
    size = (56, 56)
    xy, score = random_case(11, 4, 48, 25, size)
    cpu = run_joints(xy, score, size, 0.6)
    cuda_xy, cuda_score = torch.from_numpy(xy).cuda(), torch.from_numpy(score).cuda()
    bones = bone_index("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        joints = joint_heatmaps(cuda_xy, cuda_score, size)
        limbs = limb_heatmaps(cuda_xy, cuda_score, bones, size)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert np.abs(joints.cpu().numpy() - cpu).max() <= TOL
    want = limb_heatmaps(torch.from_numpy(xy), torch.from_numpy(score), BONES, size).numpy()
    assert np.abs(limbs.cpu().numpy() - want).max() <= TOL


# --- tracking states ------------------------------------------------------------------------------------

def test_tracking_scores():
    tracking = torch.tensor([[0, 1, 2], [2, 2, 0]], dtype=torch.int8)
    scores = tracking_scores(tracking)
    assert scores.dtype == torch.float32 and scores.shape == (2, 3)
    assert scores.tolist() == [[0.0, 0.5, 1.0], [1.0, 1.0, 0.0]]


def test_the_store_padding_draws_nothing():
    """The store pads absent actors with joints at the origin and tracking 0: no blob in the corner."""
    xy = torch.zeros(1, 2, 3, 25, 2)
    tracking = torch.zeros(1, 3, 25, 2, dtype=torch.int8)
    tracking[..., 0] = 2  # actor 1 tracked, at the origin too
    maps = joint_heatmaps(xy, tracking_scores(tracking), (8, 8))
    assert maps[..., 0, 0].eq(1).all()  # actor 1 draws
    tracking[..., 0] = 0
    assert not joint_heatmaps(xy, tracking_scores(tracking), (8, 8)).any()
