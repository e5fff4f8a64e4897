"""The training data path: one split of a prepared store -> model-ready batches on the device.

    spec = ClipSpec(frames=32, skeleton=True, rgb=True, crop=224)
    data = SplitData(read_split("ntu60.zarr", "xsub", "train", need_rgb=True), spec, device, seed=0)
    for batch in data.batches(epoch=3, batch_size=32, train=True):
        out = net(batch.rgb, batch.skeleton, batch.motion)   # (B, 3, T, 224, 224), (B, 3, T, 25, 2) x 2

Skeletons: a split's `skeleton/joints` are read once, whole shards by slice (never a list index),
normalised in batches (`center_on_spine`, `align_to_axes`: the same maths as
`ntu_pipeline.skeleton.normalize`, checked against it in the tests) and kept resident on the device as
(n, T_max, M, V, 3), float32 or float16. A batch is then pure tensor work there: a temporal window
(training: a random 50-100% window, HCN's augmentation; test: the centred 95% window, CTR-GCN/PYSKL's
test crop), resampled to `frames` by linear interpolation between the two nearest frames (an actor
absent from one of them takes the other, so no half-size skeleton appears where an actor enters),
the optional horizontal flip, and motion (`model.skeleton_motion`, eq. 2, masked, on the frames given).

RGB: DataLoader workers open the store lazily (one handle per worker process, never inherited across a
fork), decode the clip's frames per sample and hand uint8 (T, S, S, 3) tensors (pinned on CUDA) to the
main process; augmentation runs on the device: a random resized crop (area 50-100% of the stored
frame, aspect 3/4-4/3) to `crop` x `crop` at training, the centre `crop` x `crop` at test, the flip
(applied to the skeleton too: x mirrored, left and right joints swapped), and scaling to [-1, 1] (what
the pytorch-i3d checkpoints expect). Fused models take the skeleton at the clip's source frames
(`rgb/frame_index` looked up in `skeleton/frame_index`; zero where no skeleton frame was kept: no actor
was there). A store made with `--frames all` gets a fresh window per training epoch (the skeleton rule);
a 32-frame store's frames are used as stored (evenly subsampled when the model takes fewer).

Determinism: every random choice is a pure function of (seed, epoch, sample): `epoch_order` is the
epoch's permutation, `epoch_randoms` one row of uniforms per sample. A batch is the same whatever the
process count or the step a run resumed at.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import zarr
from torch import Tensor

from model.hcn import skeleton_motion
from ntu_pipeline.errors import StoreFormatError
from ntu_pipeline.skeleton.normalize import LEFT_SHOULDER, RIGHT_SHOULDER, SPINE_BASE, SPINE_MID
from ntu_pipeline.store import STATUS_CODES, open_store, split_indices

NORMALIZATIONS = ("none", "spine", "spine_axes")
TRAIN_WINDOW = (0.5, 1.0)  # HCN: a random window of 50-100% of the frames kept
TEST_WINDOW = 0.95  # the centred window at test (CTR-GCN, PYSKL)
CROP_AREA = (0.5, 1.0)  # random resized crop: share of the stored frame's area
CROP_ASPECT = (3 / 4, 4 / 3)
# Columns of `epoch_randoms`: uniforms in [0, 1) per sample and epoch.
WINDOW_RATIO, WINDOW_START, CROP_SCALE, CROP_RATIO, CROP_X, CROP_Y, FLIP = range(7)
NUM_RANDOMS = 7

# Kinect v2 joints (0-based): left arm 4-7, hand tip 21, thumb 22; right arm 8-11, 23, 24; left leg
# 12-15, right leg 16-19; the spine, neck and head (0-3, 20) are their own mirror image.
_LEFT = (4, 5, 6, 7, 21, 22, 12, 13, 14, 15)
_RIGHT = (8, 9, 10, 11, 23, 24, 16, 17, 18, 19)
MIRROR_JOINTS = list(range(25))
for _l, _r in zip(_LEFT, _RIGHT, strict=True):
    MIRROR_JOINTS[_l], MIRROR_JOINTS[_r] = _r, _l


@dataclass(frozen=True)
class ClipSpec:
    """What a model is fed. frames: T per clip (a multiple of 16 for HCN); skeleton / rgb: the inputs
    it takes; crop: RGB side after cropping; flip: probability of the horizontal flip at training;
    normalize: "none", "spine" (centre on actor 1's spine) or "spine_axes" (and rotate to its body
    axes, PYSKL's pre-normalisation); half: keep the resident skeletons in float16."""

    frames: int = 32
    skeleton: bool = True
    rgb: bool = False
    crop: int = 224
    flip: float = 0.5
    normalize: str = "spine_axes"
    half: bool = False

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if not (self.skeleton or self.rgb):
            raise ValueError("a clip needs the skeleton, the RGB frames or both")
        if self.crop < 1:
            raise ValueError(f"crop must be >= 1, got {self.crop}")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip must be a probability in [0, 1], got {self.flip}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")


@dataclass(frozen=True, eq=False)
class SplitInfo:
    """One part of a split: n samples, `indices` (n,) into the store, `labels` (n,) int64,
    `num_frames` (n,) skeleton frames kept; RGB layout where the store has RGB (`rgb_frames` stored
    per clip: 32, or 300 for `--frames all`; `rgb_size` S of the S x S frames)."""

    store: Path
    protocol: str
    part: str
    indices: np.ndarray
    labels: np.ndarray
    num_frames: np.ndarray
    class_names: tuple[str, ...]
    dataset: str
    rgb_frames: int | None = None
    rgb_size: int | None = None
    rgb_all: bool = False
    excluded_rgb: int = 0

    def __len__(self) -> int:
        return len(self.indices)


def read_split(store: str | Path, protocol: str, part: str, need_rgb: bool = False,
               need_skeleton: bool = True) -> SplitInfo:
    """The `part` ("train" or "test") of `protocol` in `store`, checked for training.

    Raises StoreFormatError, naming the store and the fix, for: an unknown format, a store without the
    split, without skeletons when `need_skeleton`, without RGB frames when `need_rgb`, or an empty
    part. With `need_rgb`, samples whose RGB failed (`rgb/status` not ok) are left out and counted in
    `excluded_rgb`.
    """
    store = Path(store)
    group = open_store(store)
    if need_skeleton and ("skeleton" not in group or "joints" not in group["skeleton"]):
        raise StoreFormatError(f"{store} has no skeletons (skeleton/joints); prepare them with: "
                               f"ntu-prep extract --skeletons DIR [--videos DIR] --out {store}")
    if protocol not in group["splits"]:
        raise StoreFormatError(f"{store} has no split {protocol!r}; make it with: "
                               f"ntu-prep split --protocol {protocol} {store}")
    train, test = split_indices(group, protocol)
    indices = {"train": train, "test": test}[part].astype(np.int64)
    rgb: dict = {}
    excluded = 0
    if need_rgb:
        if "rgb" not in group or "frames" not in group["rgb"]:
            raise StoreFormatError(f"{store} has no RGB frames (rgb/frames); prepare them with: "
                                   f"ntu-prep extract --skeletons DIR --videos DIR --out {store}")
        frames = group["rgb/frames"]
        ok = group["rgb/status"][:][indices] == STATUS_CODES["ok"]
        excluded = int((~ok).sum())
        indices = indices[ok]
        options = dict(group.attrs.get("stages", {}).get("rgb", {}).get("options", {}))
        rgb = {"rgb_frames": int(frames.shape[1]), "rgb_size": int(frames.shape[2]),
               "rgb_all": options.get("frames") == "all"}
    if len(indices) == 0:
        why = f" ({excluded} samples without RGB left out)" if excluded else ""
        raise StoreFormatError(f"{store}: split {protocol}/{part} is empty{why}")
    num_frames = group["samples/num_frames"][:][indices] if "num_frames" in group["samples"] \
        else np.zeros(len(indices))
    return SplitInfo(
        store=store, protocol=protocol, part=part, indices=indices,
        labels=group["samples/label"][:][indices].astype(np.int64), num_frames=num_frames.astype(np.int64),
        class_names=tuple(group.attrs["class_names"]), dataset=str(group.attrs["dataset"]),
        excluded_rgb=excluded, **rgb)


# --- skeleton normalisation, batched (the maths of ntu_pipeline.skeleton.normalize) ------------------

def _first_true(mask: Tensor) -> Tensor:
    """Index of the first True along the last axis (0 where none): (B, T) bool -> (B,) int64."""
    return mask.int().argmax(dim=-1)


def center_on_spine(joints: Tensor, present: Tensor) -> Tensor:
    """Subtract actor 1's spine-middle joint per frame: joints (B, T, M, V, 3), present (B, T, M) bool.

    Frames without actor 1 use its last earlier frame (or its first one); empty slots stay zero;
    samples without actor 1 are returned unchanged. As `ntu_pipeline.skeleton.normalize.center_on_spine`.
    """
    b, t = present.shape[:2]
    actor1 = present[:, :, 0]  # (B, T)
    frame = torch.arange(t, device=joints.device).expand(b, t)
    seen = torch.where(actor1, frame, -1).cummax(dim=1).values  # (B, T)
    seen = torch.where(seen < 0, _first_true(actor1)[:, None], seen)
    centre = joints[:, :, 0, SPINE_MID].gather(1, seen[..., None].expand(b, t, 3))  # (B, T, 3)
    centre = centre * actor1.any(dim=1)[:, None, None]  # no actor 1: nothing to centre on
    return (joints - centre[:, :, None, None]) * present[..., None, None]


def _rotation_between(a: Tensor, b: Tensor) -> Tensor:
    """(B, 3, 3) rotations turning directions a (B, 3) into b (3,) (Rodrigues), float64."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = (b / b.norm()).expand_as(a)
    axis = torch.linalg.cross(a, b)
    sin, cos = axis.norm(dim=-1), (a * b).sum(dim=-1)  # (B,)
    k = axis / sin.clamp_min(1e-300)[:, None]
    zero = torch.zeros_like(sin)
    K = torch.stack([zero, -k[:, 2], k[:, 1], k[:, 2], zero, -k[:, 0], -k[:, 1], k[:, 0], zero],
                    dim=-1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(K)
    rodrigues = eye + sin[:, None, None] * K + (1 - cos)[:, None, None] * K @ K
    # opposite directions: a half turn about an axis orthogonal to a
    helper = torch.where((a[:, :1].abs() < 0.9), a.new_tensor([1.0, 0, 0]), a.new_tensor([0.0, 1, 0]))
    ortho = torch.linalg.cross(a, helper)
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    half_turn = 2 * ortho[:, :, None] * ortho[:, None, :] - eye
    parallel = torch.where((cos > 0)[:, None, None], eye, half_turn)
    return torch.where((sin < 1e-8)[:, None, None], parallel, rodrigues)


def align_to_axes(joints: Tensor, present: Tensor) -> Tensor:
    """Rotate so actor 1's first hip -> spine bone is +z, then its left -> right shoulders +x.

    joints (B, T, M, V, 3), present (B, T, M) bool -> rotated joints (empty slots zero). Samples without
    actor 1 are returned unchanged. As `ntu_pipeline.skeleton.normalize.align_to_axes`; the rotation is
    found in float64 and applied in the joints' dtype.
    """
    b = joints.shape[0]
    actor1 = present[:, :, 0]
    first = joints[torch.arange(b), _first_true(actor1), 0].double()  # (B, V, 3)
    r1 = _rotation_between(first[:, SPINE_MID] - first[:, SPINE_BASE], first.new_tensor([0.0, 0, 1]))
    shoulders = (r1 @ (first[:, RIGHT_SHOULDER] - first[:, LEFT_SHOULDER])[..., None])[..., 0]
    shoulders = shoulders * shoulders.new_tensor([1.0, 1, 0])  # turn about z only
    flat = shoulders.norm(dim=-1) < 1e-8
    r2 = _rotation_between(torch.where(flat[:, None], shoulders.new_tensor([1.0, 0, 0]), shoulders),
                           shoulders.new_tensor([1.0, 0, 0]))
    rotation = torch.where(actor1.any(dim=1)[:, None, None], r2 @ r1, torch.eye(3, dtype=r1.dtype))
    rotated = joints.flatten(1, 3) @ rotation.transpose(1, 2).to(joints.dtype)  # (B, T*M*V, 3)
    return rotated.view(joints.shape) * present[..., None, None]


def normalize_skeletons(joints: Tensor, how: str) -> Tensor:
    """Apply normalisation `how` (NORMALIZATIONS) to joints (B, T, M, V, 3)."""
    if how == "none":
        return joints
    present = joints.abs().sum(dim=(-1, -2)) > 0  # (B, T, M); faster than ne(0).any() on CPU
    joints = center_on_spine(joints, present)
    return align_to_axes(joints, present) if how == "spine_axes" else joints


def load_joints(store: Path, indices: np.ndarray, num_frames: np.ndarray, normalize: str,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """`skeleton/joints` of samples `indices` (n,), normalised on `device`: (n, T_max, M, V, 3) there,
    T_max the longest of `num_frames` (n,). Reads whole shards by slice, keeps the rows asked for."""
    array = open_store(store)["skeleton/joints"]
    t_max = max(int(num_frames.max()), 1)
    out = torch.zeros((len(indices), t_max, *array.shape[2:]), dtype=dtype, device=device)
    shard = array.shards[0] if array.shards else array.chunks[0]
    for lo in range(0, array.shape[0], shard):
        rows = np.flatnonzero((indices >= lo) & (indices < lo + shard))
        if len(rows) == 0:
            continue
        first, last = int(indices[rows].min()), int(indices[rows].max())
        block = torch.from_numpy(array[first:last + 1][:, :t_max])  # by slice, within one shard
        block = block[torch.from_numpy(indices[rows] - first)].to(device)
        out[torch.from_numpy(rows).to(device)] = normalize_skeletons(block, normalize).to(dtype)
    return out


# --- temporal sampling --------------------------------------------------------------------------------

def window_positions(num_frames: Tensor, frames: int, ratio: Tensor, start: Tensor | None = None) -> Tensor:
    """Fractional frame positions of `frames` evenly spaced samples of a window: (B, frames) float64.

    num_frames (B,): frames kept per sample; ratio (B,): the window's share of them; start (B,) uniforms
    in [0, 1) place the window (None: centred). Positions lie in [first, last] frame of the window.
    """
    n = num_frames.clamp_min(1).double()
    length = (ratio.double() * n).round().clamp(min=1).minimum(n)  # (B,)
    first = (start.double() * (n - length + 1)).floor() if start is not None else ((n - length) / 2).floor()
    k = torch.arange(frames, dtype=torch.float64, device=n.device)
    pos = first[:, None] + (k + 0.5) * (length / frames)[:, None] - 0.5  # (B, frames)
    return pos.clamp(min=first[:, None]).minimum((first + length - 1)[:, None])


def window_ratio(uniform: Tensor | None, size: int, device: torch.device | str) -> Tensor:
    """Window shares (B,): TRAIN_WINDOW drawn from uniforms (B,), or TEST_WINDOW where uniform is None."""
    if uniform is None:
        return torch.full((size,), TEST_WINDOW, dtype=torch.float64, device=device)
    lo, hi = TRAIN_WINDOW
    return lo + uniform.double() * (hi - lo)


def resample_joints(joints: Tensor, rows: Tensor, positions: Tensor) -> Tensor:
    """Interpolate resident joints (N, T_all, M, V, C) at fractional `positions` (B, T) of samples
    `rows` (B,) -> (B, T, M, V, C) float32. Between two frames the result is linear where the actor is
    in both, the frame that has it where it is in one, zero where in neither."""
    i0 = positions.floor().long().clamp(0, joints.shape[1] - 1)
    i1 = (i0 + 1).clamp(max=joints.shape[1] - 1)
    frac = (positions - i0).float()[..., None]  # (B, T, 1)
    a, b = joints[rows[:, None], i0].float(), joints[rows[:, None], i1].float()  # (B, T, M, V, C)
    wa = (1 - frac) * a.ne(0).any(-1).any(-1)  # (B, T, M)
    wb = frac * b.ne(0).any(-1).any(-1)
    total = wa + wb
    mixed = (a * wa[..., None, None] + b * wb[..., None, None]) / total.clamp_min(1e-12)[..., None, None]
    return torch.where((total > 0)[..., None, None], mixed, 0.0)


def gather_joints(joints: Tensor, rows: Tensor, frames: Tensor) -> Tensor:
    """Resident joints (N, T_all, M, V, C) at stored frames `frames` (B, T) (-1: none, zero there) of
    samples `rows` (B,) -> (B, T, M, V, C) float32."""
    out = joints[rows[:, None], frames.clamp(min=0)].float()
    return torch.where((frames >= 0)[..., None, None, None], out, 0.0)


def to_model_layout(joints: Tensor) -> Tensor:
    """(B, T, M, V, C) -> (B, C, T, V, M), the networks' skeleton layout."""
    return joints.permute(0, 4, 1, 3, 2).contiguous()


def mirror_skeleton(skeleton: Tensor, flip: Tensor, width: float = 0.0) -> Tensor:
    """Mirror the samples where `flip` (B,) is True: x -> width - x and left/right joints swapped.

    skeleton (B, C, T, V, M) with x in channel 0: camera-space metres (width 0: x -> -x) or pixel
    coordinates in a crop `width` wide. Absent actors (all zero) stay zero for width 0.
    """
    mirrored = skeleton[:, :, :, MIRROR_JOINTS]
    mirrored = torch.cat([width - mirrored[:, :1], mirrored[:, 1:]], dim=1)
    return torch.where(flip[:, None, None, None, None], mirrored, skeleton)


# --- RGB: crops on the device -------------------------------------------------------------------------

def crop_boxes(uniforms: Tensor | None, batch: int, size: int, crop: int, device) -> Tensor:
    """Crop boxes (B, 4) = (x0, y0, w, h) in stored-frame pixels of S x S frames (S = size).

    uniforms (B, 4) (CROP_SCALE .. CROP_Y columns): a random resized crop, CROP_AREA of the frame at an
    aspect in CROP_ASPECT, anywhere inside it; None: the centre crop x crop (the test crop).
    """
    if uniforms is None:
        side = float(min(crop, size))
        corner = (size - side) / 2
        return torch.tensor([corner, corner, side, side], dtype=torch.float64, device=device).repeat(batch, 1)
    u = uniforms.double()
    area = (CROP_AREA[0] + u[:, 0] * (CROP_AREA[1] - CROP_AREA[0])) * size * size
    log_ratio = math.log(CROP_ASPECT[0]) + u[:, 1] * (math.log(CROP_ASPECT[1]) - math.log(CROP_ASPECT[0]))
    w = (area * log_ratio.exp()).sqrt().clamp(max=size)
    h = (area / log_ratio.exp()).sqrt().clamp(max=size)
    return torch.stack([u[:, 2] * (size - w), u[:, 3] * (size - h), w, h], dim=1)


def _crop_affine(boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """affine_grid matrices (B, 2, 3) mapping the output crop to `boxes` of an S x S frame, mirrored
    where `flip` (align_corners=False: -1 and 1 are the outer edges of the pixels)."""
    x0, y0, w, h = boxes.unbind(1)
    sx = torch.where(flip, -w / size, w / size)
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, (2 * x0 + w) / size - 1], 1),
                        torch.stack([zero, h / size, (2 * y0 + h) / size - 1], 1)], dim=1)


def crop_clips(clips: Tensor, boxes: Tensor, flip: Tensor, crop: int) -> Tensor:
    """uint8 clips (B, T, S, S, 3) -> float32 (B, 3, T, crop, crop) in [-1, 1]: each clip's box
    (B, 4) resized to crop x crop (bilinear), mirrored where `flip` (B,). A centre box of `crop`
    pixels at scale 1 copies the pixels exactly."""
    b, t, s = clips.shape[:3]
    x = clips.permute(0, 1, 4, 2, 3).reshape(b, t * 3, s, s).float()  # (B, T*3, S, S)
    grid = F.affine_grid(_crop_affine(boxes, flip, s).float(), [b, t * 3, crop, crop], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x.view(b, t, 3, crop, crop).transpose(1, 2)  # (B, 3, T, crop, crop)
    return x / 127.5 - 1.0


def crop_points(points: Tensor, boxes: Tensor, flip: Tensor, size: int, crop: int) -> Tensor:
    """Where pixel positions (B, ..., 2) of the stored S x S frames land in the output crop (B, ..., 2)
    of `crop_clips` with the same boxes and flips (pixel j spans [j, j + 1))."""
    theta = _crop_affine(boxes, flip, size).to(points.dtype)  # (B, 2, 3)
    shape = (points.shape[0],) + (1,) * (points.ndim - 2)
    scale, shift = theta[:, [0, 1], [0, 1]].view(*shape, 2), theta[:, :, 2].view(*shape, 2)
    normalised = 2 * points / size - 1
    return ((normalised - shift) / scale + 1) * crop / 2


# --- order and randomness -----------------------------------------------------------------------------

def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch `epoch`: a permutation of range(n), a pure function of its arguments."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def epoch_randoms(n: int, seed: int, epoch: int) -> Tensor:
    """Uniforms (n, NUM_RANDOMS) in [0, 1), one row per sample of the split for epoch `epoch`."""
    return torch.from_numpy(np.random.default_rng([seed, epoch, 1]).random((n, NUM_RANDOMS)))


def train_plan(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
               world: int = 1) -> list[np.ndarray]:
    """This process's split positions for each step of a training epoch: the epoch's order in global
    batches of `batch_size` (the last partial batch dropped), each cut into `world` equal parts."""
    order = epoch_order(n, seed, epoch)
    per_rank = batch_size // world
    return [order[s * batch_size + rank * per_rank: s * batch_size + (rank + 1) * per_rank]
            for s in range(n // batch_size)]


def test_plan(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[np.ndarray]:
    """This process's split positions for evaluation: its contiguous share, in batches."""
    mine = np.array_split(np.arange(n), world)[rank]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


# --- RGB loading in DataLoader workers ----------------------------------------------------------------

class ClipRequest(NamedTuple):
    """What a worker decodes: split position, store index, frames kept, window uniforms (None at test)."""

    position: int
    index: int
    num_frames: int
    ratio: float | None
    start: float | None


class RGBClips(torch.utils.data.Dataset):
    """Decodes clips: ClipRequest -> (uint8 (T, S, S, 3), skeleton frames (T,) int64, position).

    The store is opened on first use in each process, so a forked worker never shares its parent's
    handle. The clip is `frames` evenly spaced frames among those stored (frame_index >= 0): all of them
    for a fixed-frame store, those of the request's window for a `--frames all` store (`window`). The
    skeleton frames are all -1 unless `skeleton` (a model that takes no skeleton needs none).
    """

    def __init__(self, store: Path, frames: int, window: bool, skeleton: bool = True):
        self.store, self.frames, self.window, self.skeleton = Path(store), frames, window, skeleton
        self._group: zarr.Group | None = None
        self._pid = -1

    def _open(self) -> zarr.Group:
        if self._group is None or self._pid != os.getpid():
            self._group, self._pid = open_store(self.store), os.getpid()
        return self._group

    def __getitem__(self, request: ClipRequest) -> tuple[np.ndarray, np.ndarray, int]:
        group = self._open()
        rgb_index = group["rgb/frame_index"][request.index]  # (T_stored,) source frames, -1 none
        stored = torch.tensor([max(int((rgb_index >= 0).sum()), 1)])
        if not self.window:
            ratio, start = torch.ones(1), None
        elif request.ratio is None:
            ratio, start = torch.tensor([TEST_WINDOW]), None
        else:
            ratio, start = torch.tensor([request.ratio]), torch.tensor([request.start])
        pos = window_positions(stored, self.frames, ratio, start)[0].round().long().numpy()  # (T,)
        frames = group["rgb/frames"]
        if np.array_equal(pos, np.arange(frames.shape[1])):
            clip = frames[request.index]
        else:  # one chunk per frame: read the frames needed, each once
            unique, back = np.unique(pos, return_inverse=True)
            clip = np.stack([frames[request.index, int(p)] for p in unique])[back]
        source = rgb_index[pos]
        skeleton_frames = np.full(len(pos), -1, dtype=np.int64)
        if not self.skeleton:
            return clip, skeleton_frames, request.position
        kept = group["skeleton/frame_index"][request.index][:request.num_frames]  # sorted source frames
        if len(kept):
            k = np.searchsorted(kept, source).clip(max=len(kept) - 1)
            skeleton_frames = np.where((source >= 0) & (kept[k] == source), k, -1).astype(np.int64)
        return clip, skeleton_frames, request.position


class _PlanSampler(torch.utils.data.Sampler):
    """Yields the batches of ClipRequests set by `SplitData`; lives in the main process, so persistent
    workers see each epoch's plan."""

    def __init__(self):
        self.plan: list[list[ClipRequest]] = []

    def __iter__(self):
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


# --- batches ------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Batch:
    """rgb (B, 3, T, crop, crop) in [-1, 1] or None; skeleton and motion (B, 3, T, 25, 2) or None;
    labels (B,) int64; positions (B,) int64 into the split."""

    rgb: Tensor | None
    skeleton: Tensor | None
    motion: Tensor | None
    labels: Tensor
    positions: Tensor


class SplitData:
    """A split's samples as batches on `device`: skeletons resident, RGB through DataLoader workers."""

    def __init__(self, info: SplitInfo, spec: ClipSpec, device: torch.device | str, seed: int = 0,
                 workers: int = 0, rank: int = 0, world: int = 1):
        self.info, self.spec, self.seed = info, spec, seed
        self.device, self.rank, self.world = torch.device(device), rank, world
        if spec.rgb and info.rgb_size is None:
            raise ValueError(f"{info.store}: the clips need RGB frames: read the split with need_rgb=True")
        if spec.rgb and spec.crop > info.rgb_size:
            raise ValueError(f"--crop {spec.crop} is larger than the stored RGB frames of {info.store} "
                             f"({info.rgb_size} x {info.rgb_size})")
        self.labels = torch.from_numpy(info.labels).to(self.device)
        self.num_frames = torch.from_numpy(info.num_frames).to(self.device)
        self.joints = None
        if spec.skeleton:
            dtype = torch.float16 if spec.half else torch.float32
            self.joints = load_joints(info.store, info.indices, info.num_frames, spec.normalize,
                                      dtype, self.device)
        self.loader = None
        if spec.rgb:
            self._sampler = _PlanSampler()
            self.loader = torch.utils.data.DataLoader(
                RGBClips(info.store, spec.frames, info.rgb_all, spec.skeleton), batch_sampler=self._sampler,
                num_workers=workers, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None)

    def __len__(self) -> int:
        return len(self.info)

    def batches(self, epoch: int, batch_size: int, train: bool, start_step: int = 0) -> Iterator[Batch]:
        """The epoch's batches from step `start_step` on. batch_size: global for training (this process
        gets batch_size / world of each), per process at test (every sample once, in order)."""
        n = len(self.info)
        plan = (train_plan(n, batch_size, self.seed, epoch, self.rank, self.world) if train
                else test_plan(n, batch_size, self.rank, self.world))[start_step:]
        randoms = epoch_randoms(n, self.seed, epoch) if train else None
        if self.loader is None:
            for positions in plan:
                pos = torch.from_numpy(positions).to(self.device)
                yield self._assemble(pos, randoms, None, None)
            return
        ratio = window_ratio(randoms[:, WINDOW_RATIO], n, "cpu") if train else None
        self._sampler.plan = [[ClipRequest(int(p), int(self.info.indices[p]), int(self.info.num_frames[p]),
                                           None if ratio is None else float(ratio[p]),
                                           None if randoms is None else float(randoms[p, WINDOW_START]))
                               for p in positions] for positions in plan]
        for clips, frames, positions in self.loader:
            pos = positions.to(self.device, non_blocking=True)
            yield self._assemble(pos, randoms, clips.to(self.device, non_blocking=True),
                                 frames.to(self.device, non_blocking=True))

    def _assemble(self, pos: Tensor, randoms: Tensor | None, clips: Tensor | None,
                  frames: Tensor | None) -> Batch:
        """One batch on the device from split positions (B,) [and decoded clips, skeleton frames]."""
        spec, b = self.spec, len(pos)
        u = randoms[pos.cpu()].to(self.device) if randoms is not None else None
        flip = (u[:, FLIP] < spec.flip) if u is not None else torch.zeros(b, dtype=torch.bool,
                                                                           device=self.device)
        skeleton = motion = rgb = None
        if spec.skeleton:
            if frames is not None:
                joints = gather_joints(self.joints, pos, frames)
            else:
                ratio = window_ratio(None if u is None else u[:, WINDOW_RATIO], b, self.device)
                positions = window_positions(self.num_frames[pos], spec.frames, ratio,
                                             None if u is None else u[:, WINDOW_START])
                joints = resample_joints(self.joints, pos, positions)
            skeleton = mirror_skeleton(to_model_layout(joints), flip)
            motion = skeleton_motion(skeleton)
        if clips is not None:
            boxes = crop_boxes(None if u is None else u[:, CROP_SCALE:CROP_Y + 1], b, self.info.rgb_size,
                               spec.crop, self.device)
            rgb = crop_clips(clips, boxes, flip, spec.crop)
        return Batch(rgb, skeleton, motion, self.labels[pos], pos)
