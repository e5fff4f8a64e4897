"""Export a store to the `.npz` files CTR-GCN's NTU feeder reads, one per protocol.

Usage:
    ntu-prep export ntu60.zarr --format ctrgcn -o data/ntu/        # NTU60_CS.npz, NTU60_CV.npz
    ntu-prep export ntu120.zarr --format ctrgcn -o data/ntu120/    # NTU120_CSub.npz, NTU120_CSet.npz
    write_ctrgcn(ExportConfig(store=Path("ntu60.zarr"), out=Path("data/ntu"), format="ctrgcn"))

Each file holds what CTR-GCN's `data/ntu{,120}/seq_transformation.py` saves (Uason-Chen/CTR-GCN) and
`feeders/feeder_ntu.py` loads:
    x_train, x_test  (n, 300, 150) float32: per frame actor 1's 25 joints (x, y, z) then actor 2's
    y_train, y_test  (n, num_classes) float64, one-hot (the feeder takes np.where(y > 0)[1])
    meta             0-d str: JSON of the store it came from, versions, options, split (ours)

What seq_transformation.py does to each sequence, and this export replicates (`ctrgcn_rows`):
- seq_translation: the origin is joint 2 (spine middle, index 1) of actor 1 in the first frame where
  actor 1 is present; it is subtracted from every frame of both actors, and the frames where an actor
  is absent are set back to zero.
- align_frames: the sequence (its frames with an actor: frames where both are absent were dropped by
  get_raw_denoised_data, as the store drops them) starts at frame 0 and is zero-padded to 300. For a
  sample with a single actor, NTU60's script leaves actor 2 zero while NTU120's copies actor 1 into
  actor 2's place (`np.hstack((ske_joints, ske_joints))`); this export does the same per dataset.
- get_indices: rows are ordered by the protocol's field in increasing value (performer, camera or setup),
  then by sample name, as its per-id loop concatenates them.
- one_hot_vector: float64 of width 60 or 120.

Not replicated: the scripts pad to frames_cnt.max() (300 on the full datasets; always 300 here), and they
call a sample single-actor when one body survived denoising; the store does not record that, so here
it is a sample whose actor slot 2 is empty in every frame (the same in all but rare files where
denoising kept several bodies and none went to slot 2). frame_translation and remove_nan_frames are
defined there but never called.

The npz is a zip of .npy members written as the store is read (stored, not compressed, as np.savez
writes it), so memory stays bounded by a shard however many samples there are.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import NTUPrepError
from ..manifests import NUM_CLASSES, get_protocol
from ..progress import ProgressBar
from ..skeleton.normalize import SPINE_MID
from .common import (
    SKELETON,
    ExportConfig,
    ExportSplit,
    ExportSummary,
    SampleTable,
    atomic_output,
    check_targets,
    export_record,
    open_for_export,
    read_blocks,
    resolve_splits,
)

NPZ_NAMES = {"xsub": "NTU60_CS", "xview": "NTU60_CV", "xsub120": "NTU120_CSub", "xset120": "NTU120_CSet"}
FRAME_FEATURES = 150  # 2 actors x 25 joints x 3


def ctrgcn_rows(joints: np.ndarray, duplicate_single: bool) -> np.ndarray:
    """seq_translation + align_frames on a block of stored samples.

    joints: (k, T, 2, 25, 3) float32, zero where an actor is absent and past the frames kept.
    duplicate_single: copy actor 1 into actor 2's place where actor 2 is never present (NTU120's script).
    Returns (k, T, 150) float32.
    """
    k, frames = joints.shape[:2]
    present = np.any(joints != 0, axis=(3, 4))  # (k, T, 2)
    first = np.argmax(present[:, :, 0], axis=1)  # (k,) first frame with actor 1
    origin = joints[np.arange(k), first, 0, SPINE_MID]  # (k, 3)
    out = np.subtract(joints, origin[:, None, None, None, :], dtype=np.float32)  # (k, T, 2, 25, 3)
    out[~present] = 0  # absent actor frames back to zero (+0.0, as the script's np.zeros)
    if duplicate_single:
        single = ~present[:, :, 1].any(axis=1)  # (k,)
        out[single, :, 1] = out[single, :, 0]
    return out.reshape(k, frames, FRAME_FEATURES)  # (k, T, 150)


def ctrgcn_order(indices: np.ndarray, field_values: np.ndarray) -> np.ndarray:
    """`indices` (sorted by name) reordered as get_indices concatenates them: by field value, stable."""
    return indices[np.argsort(field_values[indices], kind="stable")]


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(k,) 0-based labels -> (k, num_classes) float64, as one_hot_vector makes them."""
    out = np.zeros((len(labels), num_classes))
    out[np.arange(len(labels)), labels] = 1
    return out


def write_npy_member(archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...],
                     blocks: Iterator[np.ndarray]) -> None:
    """Stream one .npy member: the header np.save writes, then each block's bytes in order."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(s) for s in shape)}
    rows = 0
    with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.shape[1:] != tuple(shape[1:]):
                raise NTUPrepError(f"{name}: a block of shape {block.shape} in an array of {shape}")
            member.write(memoryview(block).cast("B"))  # the bytes in place, no copy
            rows += len(block)
    if rows != shape[0]:
        raise NTUPrepError(f"{name}: wrote {rows} rows, expected {shape[0]}")


def _x_blocks(group, indices: np.ndarray, duplicate_single: bool, bar: ProgressBar) -> Iterator[np.ndarray]:
    for _, block in read_blocks(group["skeleton/joints"], indices):
        yield ctrgcn_rows(block, duplicate_single)
        bar.advance(len(block))


def _y_blocks(labels: np.ndarray, num_classes: int, rows: int = 4096) -> Iterator[np.ndarray]:
    for lo in range(0, len(labels), rows):
        yield one_hot(labels[lo:lo + rows], num_classes)


def write_ctrgcn(config: ExportConfig) -> ExportSummary:
    """Write one CTR-GCN npz per protocol into the folder `config.out`; see the module docstring."""
    started = time.monotonic()
    group = open_for_export(config.store, SKELETON)
    if config.out.exists() and not config.out.is_dir():
        raise NTUPrepError(f"{config.out}: is a file; --format ctrgcn writes a folder of .npz files")
    splits = resolve_splits(group, config.protocols, SKELETON)
    targets = [npz_path(config.out, s.protocol) for s in splits]
    check_targets(targets, config.overwrite)  # all of them, before writing any

    dataset = group.attrs["dataset"]
    num_classes = NUM_CLASSES[dataset]
    table = SampleTable.read(group)
    halves: list[tuple[ExportSplit, np.ndarray, np.ndarray, list[tuple[str, str]]]] = []
    for s in splits:
        values = group["samples"][get_protocol(s.protocol).field][:]
        train, out_train = table.exportable(s.train)
        test, out_test = table.exportable(s.test)
        if len(train) + len(test) == 0:
            raise NTUPrepError(f"{config.store}: no sample of split {s.protocol} has skeleton data "
                               "(status ok, with frames): nothing to export")
        halves.append((s, ctrgcn_order(train, values), ctrgcn_order(test, values), out_train + out_test))

    total = sum(len(train) + len(test) for _, train, test, _ in halves)
    frames = group["skeleton/joints"].shape[1]
    duplicate_single = dataset == "ntu120"
    config.out.mkdir(parents=True, exist_ok=True)
    with ProgressBar(total, "samples", "export ctrgcn", enabled=config.progress) as bar:
        for (s, train, test, left_out), target in zip(halves, targets, strict=True):
            meta = export_record(group, config, [s], left_out, protocol=s.protocol,
                                 file=target.name, single_actor="copied into actor 2" if duplicate_single
                                 else "actor 2 left zero")
            with atomic_output(target, config.overwrite) as tmp, zipfile.ZipFile(
                    tmp, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                for half, idx in (("train", train), ("test", test)):
                    write_npy_member(archive, f"x_{half}", np.float32, (len(idx), frames, FRAME_FEATURES),
                                     _x_blocks(group, idx, duplicate_single, bar))
                    write_npy_member(archive, f"y_{half}", np.float64, (len(idx), num_classes),
                                     _y_blocks(table.label[idx], num_classes))
                with archive.open("meta.npy", mode="w") as member:
                    np.lib.format.write_array(member, np.array(json.dumps(meta)))
    outputs = {target: f"{s.protocol}: x_train {len(train)}, x_test {len(test)}"
               for (s, train, test, _), target in zip(halves, targets, strict=True)}
    left_out = sorted({item for *_, items in halves for item in items})
    return ExportSummary("ctrgcn", outputs, {s.protocol: s.source for s in splits}, left_out,
                         time.monotonic() - started)


def npz_path(folder: Path, protocol: str) -> Path:
    """Where `write_ctrgcn` puts a protocol's file."""
    return Path(folder) / f"{NPZ_NAMES[protocol]}.npz"
