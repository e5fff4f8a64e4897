"""RGB clips decoded in DataLoader workers, straight from the store's shard files.

    clips = RGBClips(store)                                   # made in the main process, used in workers
    batch = clips.__getitems__([ClipRequest(index=7, frames=np.array([0, 2, 4, ...])), ...])
    batch                                                     # uint8 (B, T, S, S, 3)
    plan = rgb_frame_table(group, indices, need_skeleton=True)  # what the main process keeps per sample

The main process decides everything a clip is made of (which stored frames, from the per-sample tables
it read once, `RGBFrameTable`), so a worker does only what must run in parallel: one shard-index read,
one read of the chunks' bytes and the JPEG decoding (`ntu_pipeline.store.frame_reader`: ~0.9x the
decode limit on real NTU clips into a reused buffer, where reading through zarr gives ~0.4x;
bench/rgb_loader.py). A batch is decoded into one array (`__getitems__`, which the DataLoader calls
with a batch's requests), allocated in shared memory in a worker so that sending it to the main process
copies nothing; what a worker still pays beyond decoding is the kernel mapping that fresh memory (a
DataLoader worker delivers ~0.6x the decode limit on this VM; bench/rgb_loader.py's last line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import zarr

from ntu_pipeline.store.frame_reader import FrameReader


class ClipRequest(NamedTuple):
    """What a worker decodes: the store index of a sample and the stored frames (T,) of its clip."""

    index: int
    frames: np.ndarray


@dataclass(frozen=True, eq=False)
class RGBFrameTable:
    """Per sample of a split (n samples, T_s stored frames each): `stored` (n,) how many stored frames
    hold a source frame (frame_index >= 0, at least 1), `to_skeleton` (n, T_s) int16 the kept skeleton
    frame at the same source frame (-1 where none: no actor there), or None for a model without
    skeletons."""

    stored: np.ndarray
    to_skeleton: np.ndarray | None


def rgb_frame_table(group: zarr.Group, indices: np.ndarray, need_skeleton: bool) -> RGBFrameTable:
    """Read `rgb/frame_index` (and `skeleton/frame_index`) for store samples `indices` (n,), a shard's
    rows at a time, and match each stored RGB frame's source frame with the kept skeleton frame that has
    it (`rgb/frame_index` looked up in the sorted `skeleton/frame_index`)."""
    rgb_index = group["rgb/frame_index"]
    n, t_stored = len(indices), rgb_index.shape[1]
    stored = np.ones(n, np.int64)
    to_skeleton = np.full((n, t_stored), -1, np.int16) if need_skeleton else None
    shard = rgb_index.chunks[0]
    for lo in range(0, rgb_index.shape[0], shard):
        rows = np.flatnonzero((indices >= lo) & (indices < lo + shard))
        if len(rows) == 0:
            continue
        source = rgb_index[lo:lo + shard][indices[rows] - lo]  # (k, T_s) source frames, -1 none
        stored[rows] = stored_frames(source)
        if not need_skeleton:
            continue
        kept_rows = group["skeleton/frame_index"][lo:lo + shard][indices[rows] - lo]  # (k, 300), -1 past
        frames = group["samples/num_frames"][lo:lo + shard][indices[rows] - lo]
        for j, row in enumerate(rows):
            to_skeleton[row] = match_frames(kept_rows[j, :frames[j]], source[j])
    return RGBFrameTable(stored, to_skeleton)


def stored_frames(source: np.ndarray) -> np.ndarray:
    """(...,) int64: how many stored RGB frames hold a source frame, from `rgb/frame_index` rows
    (..., T_s) (-1: none), at least 1 (a failed sample's one black frame)."""
    return np.maximum((source >= 0).sum(axis=-1), 1).astype(np.int64)


def match_frames(kept: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(T_s,) int64: for each stored RGB frame's source frame `source` (T_s,) (-1: none), the kept
    skeleton frame with the same source frame, found in `kept` (F,) the sorted source frames of a
    sample's kept skeleton frames (`skeleton/frame_index[i, :num_frames]`); -1 where none (no actor
    was seen at that instant)."""
    if len(kept) == 0:
        return np.full(len(source), -1, np.int64)
    k = np.searchsorted(kept, source).clip(max=len(kept) - 1)
    return np.where((source >= 0) & (kept[k] == source), k, -1).astype(np.int64)


class RGBClips(torch.utils.data.Dataset):
    """Decodes clips: a batch of ClipRequests -> uint8 (B, T, S, S, 3). Safe to make in the main process
    and use in forked or spawned workers (the reader holds no open file between reads)."""

    def __init__(self, store: str | Path):
        self.reader = FrameReader(store, "rgb/frames")

    def __getitem__(self, request: ClipRequest) -> torch.Tensor:
        return torch.from_numpy(self.reader.read(request.index, request.frames))

    def __getitems__(self, requests: list[ClipRequest]) -> torch.Tensor:
        shape = (len(requests), len(requests[0].frames), *self.reader.shape[2:])  # (B, T, S, S, 3)
        out = _batch_buffer(shape)
        for i, request in enumerate(requests):
            self.reader.read(request.index, request.frames, out=out[i].numpy())
        return out


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor of `shape`; in a DataLoader worker, in shared memory from the start
    (as torch's default_collate does): a batch in private memory is copied into shared memory when it is
    sent to the main process, one more pass over 50 MB and a fault on every fresh page of it."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def collate_batch(batch: torch.Tensor) -> torch.Tensor:
    """The DataLoader's collate_fn: `__getitems__` already returns the batch."""
    return batch
