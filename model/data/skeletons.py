"""A split's skeletons resident on the device, packed by the frames the samples actually hold.

    packed = load_packed(store, indices, num_frames, "spine_axes", torch.float32, device)
    packed.frames             # (F, M, V, 3): every kept frame of every sample, sample after sample
    packed.starts[rows]       # (B,) where each sample's frames begin; packed.lengths[rows] how many
    resample_packed(packed.frames, packed.starts[rows], packed.lengths[rows], positions)  # transforms.py
    table = load_packed_table(store, "skeleton/frame_index", indices, num_frames)   # (F,) packed alike
    poses = load_packed_poses(store, indices, num_frames, device)   # 2D joints for heatmaps, packed alike

Why packed: a dense (n, T_max, M, V, 3) tensor is sized by the longest sample (300 frames in NTU, whose
samples average ~85): NTU120's two splits took ~20 GB per process in fp32, more than a 24 GB card has
left for the model. Packed, they take what the frames take (`packed_bytes`): ~5.8 GB fp32 for NTU120,
~2.9 GB with float16, ~2.9 / 1.45 GB for NTU60; a sample of 300 frames costs 300 frames, nothing more.
Each DDP process holds the samples of its split, not only its share (a batch may draw any of them).

The store is read whole shard by whole shard (slices, never a list index: zarr's fancy indexing over
shards is orders of magnitude slower), each block normalised on the device (`normalize_skeletons`, the
maths of `ntu_pipeline.skeleton.normalize`) and its samples' kept frames copied into place; the peak is
the packed tensor plus one shard's block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.data.transforms import normalize_skeletons
from ntu_pipeline.store import open_store


@dataclass(frozen=True, eq=False)
class PackedSkeletons:
    """frames (F, M, V, 3) on the device; starts, lengths (n,) int64 there (every sample holds at least
    one frame, zeros for an empty one, so an index never reaches into the next sample)."""

    frames: Tensor
    starts: Tensor
    lengths: Tensor

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True, eq=False)
class PackedPoses:
    """The 2D joints that heatmaps are drawn from, on the device, packed as `PackedSkeletons`: xy (F, M, V,
    2) float32 colour-camera pixels (`skeleton/color_xy`), tracking (F, M, V) int8 (`skeleton/tracking`),
    starts and lengths (n,) int64. ~0.4 KB a frame: ~2 GB for NTU60's ~4.8M kept frames."""

    xy: Tensor
    tracking: Tensor
    starts: Tensor
    lengths: Tensor


def load_packed_poses(store: str | Path, indices: np.ndarray, num_frames: np.ndarray,
                      device: torch.device | str = "cpu") -> PackedPoses:
    """`skeleton/color_xy` and `skeleton/tracking` of store samples `indices` (n,) with `num_frames` (n,)
    kept frames, packed on `device` as `load_packed` packs the joints."""
    lengths = np.maximum(np.asarray(num_frames, np.int64), 1)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    xy, tracking = (torch.from_numpy(load_packed_table(store, path, indices, num_frames)).to(device)
                    for path in ("skeleton/color_xy", "skeleton/tracking"))
    starts, lengths = torch.from_numpy(starts).to(device), torch.from_numpy(lengths).to(device)
    return PackedPoses(xy, tracking, starts, lengths)


def packed_bytes(num_frames: np.ndarray, itemsize: int = 4, persons: int = 2, joints: int = 25) -> int:
    """The bytes `load_packed` holds for samples of `num_frames` (n,) frames kept."""
    return int(np.maximum(num_frames, 1).sum()) * persons * joints * 3 * itemsize


def load_packed(store: str | Path, indices: np.ndarray, num_frames: np.ndarray, normalize: str,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> PackedSkeletons:
    """`skeleton/joints` of store samples `indices` (n,) with `num_frames` (n,) kept frames each,
    normalised (`normalize`: NORMALIZATIONS) and packed on `device` in `dtype`."""
    array = open_store(store)["skeleton/joints"]
    lengths = np.maximum(np.asarray(num_frames, np.int64), 1)  # (n,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = torch.zeros((int(lengths.sum()), *array.shape[2:]), dtype=dtype, device=device)  # (F, M, V, 3)
    for rows, block in _shard_blocks(array, indices, lengths):
        block = torch.from_numpy(block).to(device)  # (k, longest, M, V, 3)
        block = normalize_skeletons(block, normalize).to(dtype)
        for k, row in enumerate(rows):
            out[starts[row]:starts[row] + lengths[row]] = block[k, :lengths[row]]
    return PackedSkeletons(out, torch.from_numpy(starts).to(device), torch.from_numpy(lengths).to(device))


def load_packed_table(store: str | Path, path: str, indices: np.ndarray,
                      num_frames: np.ndarray) -> np.ndarray:
    """Per-frame array `path` (N, 300, ...) of samples `indices` (n,), packed as `load_packed` packs the
    joints (the same starts and lengths): (F, ...), e.g. `skeleton/frame_index` (F,) int32."""
    array = open_store(store)[path]
    lengths = np.maximum(np.asarray(num_frames, np.int64), 1)  # (n,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.zeros((int(lengths.sum()), *array.shape[2:]), dtype=array.dtype)
    for rows, block in _shard_blocks(array, indices, lengths):
        for k, row in enumerate(rows):
            out[starts[row]:starts[row] + lengths[row]] = block[k, :lengths[row]]
    return out


def _shard_blocks(array, indices: np.ndarray, lengths: np.ndarray):
    """(rows, block) shard by shard of `array` (N, 300, ...): rows (k,) the positions in `indices` of its
    samples there, block (k, longest, ...) their first frames, read whole by slice, within one shard."""
    shard = (array.shards or array.chunks)[0]
    for lo in range(0, array.shape[0], shard):
        rows = np.flatnonzero((indices >= lo) & (indices < lo + shard))
        if len(rows) == 0:
            continue
        first, last = int(indices[rows].min()), int(indices[rows].max())
        longest = int(lengths[rows].max())
        yield rows, array[first:last + 1][:, :longest][indices[rows] - first]  # (k, longest, ...)
