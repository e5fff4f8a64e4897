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

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import zarr
from torch import Tensor

from model.hcn import skeleton_motion
from model.transforms import (
    NORMALIZATIONS,
    TEST_WINDOW,
    crop_boxes,
    crop_clips,
    gather_joints,
    mirror_skeleton,
    normalize_skeletons,
    resample_joints,
    to_model_layout,
    window_positions,
    window_ratio,
)
from ntu_pipeline.errors import ConfigError, StoreFormatError
from ntu_pipeline.store import open_store, require_complete, split_indices
from ntu_pipeline.store.splits import check_protocol, describe_left_out, usable_samples

# Columns of `epoch_randoms`: uniforms in [0, 1) per sample and epoch.
WINDOW_RATIO, WINDOW_START, CROP_SCALE, CROP_RATIO, CROP_X, CROP_Y, FLIP = range(7)
NUM_RANDOMS = 7


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
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        if not (self.skeleton or self.rgb):
            raise ConfigError("a clip needs the skeleton, the RGB frames or both")
        if self.crop < 1:
            raise ConfigError(f"crop must be >= 1, got {self.crop}")
        if not 0.0 <= self.flip <= 1.0:
            raise ConfigError(f"flip must be a probability in [0, 1], got {self.flip}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")


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
    left_out: dict[str, int] = dataclasses.field(default_factory=dict)  # "<stage> <status>" -> samples

    def __len__(self) -> int:
        return len(self.indices)


def read_split(store: str | Path, protocol: str, part: str, need_rgb: bool = False,
               need_skeleton: bool = True) -> SplitInfo:
    """The `part` ("train" or "test") of `protocol` in `store`: its samples a model can use.

    A split is protocol membership; the samples kept are those whose modalities the model needs are
    usable (`ntu_pipeline.store.splits.usable_samples`: ok, or a missing-list skeleton with frames that
    the split kept), the others counted by reason in `left_out`. Raises, naming the store and the fix,
    for: an unknown format, a protocol of the other dataset, a store without the split, without the
    skeleton or RGB stage a model needs or with that stage unfinished, or no usable sample in the part.
    """
    store = Path(store)
    group = open_store(store)
    check_protocol(group, protocol)
    stages = (("skeleton",) if need_skeleton else ()) + (("rgb",) if need_rgb else ())
    recorded = dict(group.attrs.get("stages", {}))
    if need_skeleton and "skeleton" not in recorded:
        raise StoreFormatError(f"{store} has no skeletons; prepare them with: "
                               f"ntu-prep extract --skeletons DIR [--videos DIR] --out {store}")
    if need_rgb and "rgb" not in recorded:
        raise StoreFormatError(f"{store} has no RGB frames; prepare them with: "
                               f"ntu-prep extract --skeletons DIR --videos DIR --out {store}")
    require_complete(group, stages)
    if protocol not in group["splits"]:
        raise StoreFormatError(f"{store} has no split {protocol!r}; make it with: "
                               f"ntu-prep split --protocol {protocol} {store}")
    train, test = split_indices(group, protocol)
    keep_missing = bool(group["splits"][protocol].attrs.get("keep_missing", False))
    members = {"train": train, "test": test}[part]
    if len(members) == 0:
        raise StoreFormatError(f"{store}: split {protocol}/{part} is empty")
    indices, left_out = usable_samples(group, members, stages, keep_missing)
    if len(indices) == 0:
        why = f" (left out: {describe_left_out(left_out)})" if left_out else ""
        raise StoreFormatError(f"{store}: split {protocol}/{part} has no sample with a usable "
                               f"{' and '.join(stages)}{why}")
    rgb: dict = {}
    if need_rgb:
        frames = group["rgb/frames"]
        rgb = {"rgb_frames": int(frames.shape[1]), "rgb_size": int(frames.shape[2]),
               "rgb_all": recorded["rgb"]["options"].get("frames") == "all"}
    num_frames = group["samples/num_frames"][:][indices] if "skeleton" in recorded else np.zeros(len(indices))
    return SplitInfo(
        store=store, protocol=protocol, part=part, indices=indices,
        labels=group["samples/label"][:][indices].astype(np.int64), num_frames=num_frames.astype(np.int64),
        class_names=tuple(group.attrs["class_names"]), dataset=str(group.attrs["dataset"]),
        left_out=left_out, **rgb)


# --- skeleton normalisation, batched (the maths of ntu_pipeline.skeleton.normalize) ------------------

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
            raise ConfigError(f"{info.store}: the clips need RGB frames: read the split with need_rgb=True")
        if spec.rgb and spec.crop > info.rgb_size:
            raise ConfigError(f"--crop {spec.crop} is larger than the stored RGB frames of {info.store} "
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
