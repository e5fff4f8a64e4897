"""Is a store what its stages recorded? `verify_store` (what `ntu-prep verify` runs) and `damaged_shards`
(what a rerun of `extract` re-prepares).

    problems = verify_store(open_store("ntu60.zarr", check=False))   # [] when the store is sound
    verify_store(group, deep=True)                                    # also decode every shard
    shards_to_verify(group)                                           # what its `advance` counts up to

It checks the sample table against the names, each stage's status table and state, and every file each
done shard wrote against its recorded size and crc32c (a deleted shard would otherwise read as zeros).
A store that another process is writing is not judged: verify says who holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from .lock import holder, lock_path
from .schema import (
    MAX_FRAMES,
    SHARD_READ_ERRORS,
    SKELETON_ARRAYS,
    meta_columns,
    missing_arrays,
    num_shards,
    read_strings,
    split_indices,
    stage_info,
)
from .shards import file_digest, shard_path
from .status import State, Status, labelled, status_counts


def _range(lo: int, hi: int) -> str:
    return f"samples {lo}..{hi - 1}"


def damaged_shards(group: zarr.Group, stage: str) -> list[tuple[int, str, str]]:
    """(shard, array, what is wrong) for every file a done shard of `stage` wrote that is not as written."""
    info = stage_info(group, stage)
    root = Path(group.store.root)
    done = group[info["done"]][:]
    record = group[info["digest"]]
    files = record.attrs["files"]
    out = []
    for shard in np.flatnonzero(done):
        expected = record[shard]
        for path, want in zip(files, expected, strict=True):
            got = file_digest(shard_path(root, group[path], int(shard)))
            if got != want:
                what = "file missing" if got == "-" else (
                    "file present but the shard wrote none" if want == "-" else "content changed")
                out.append((int(shard), path, what))
    return out


def shards_to_verify(group: zarr.Group) -> int:
    """The shards `verify_store` goes through, every stage's (what its `advance` counts up to); 0 where
    the sample table does not open (`verify_store` reports that, and checks nothing else)."""
    try:
        n = group["samples/name"].shape[0]
    except (KeyError, ValueError, OSError):  # as `missing_arrays` finds it
        return 0
    return sum(num_shards(n, info["shard_size"]) for info in dict(group.attrs).get("stages", {}).values())


def verify_store(group: zarr.Group, deep: bool = False,
                 advance: Callable[[int], None] | None = None) -> list[str]:
    """Integrity problems of a store, [] when none.

    Checks the sample table against the names, each stage's status table, and every file each done
    shard wrote against its recorded size and crc32c (a deleted shard otherwise reads as zeros). With
    `deep`, also decodes every shard and checks the skeleton padding. `advance(k)` reports progress in
    shards.
    """
    writer = holder(lock_path(Path(group.store.root)))
    if writer:  # its rows are being written: nothing is wrong with what is not written yet
        return [f"another ntu-prep is writing this store now (pid and task: {writer}); verify it when that "
                "finishes"]
    missing = missing_arrays(group)
    if missing:  # nothing else can be checked reliably
        return [f"{path}: array missing or its zarr.json unreadable; rebuild the store (extract --overwrite)"
                for path in missing]
    problems: list[str] = []
    attrs = dict(group.attrs)
    if attrs.get("state") != State.COMPLETE:
        problems.append(f"state is {attrs.get('state')!r}, not 'complete': "
                        "rerun the same `ntu-prep extract` command to finish it")
    samples = group["samples"]
    n = samples["name"].shape[0]
    names = read_strings(samples["name"])
    if names != sorted(names) or len(set(names)) != n or not all(names):
        problems.append("samples/name is not sorted, unique and complete: rebuild the store (--overwrite)")
    else:
        for field, values in meta_columns(names).items():
            stored = samples[field][:]
            bad = np.flatnonzero(stored != values)
            if len(bad):
                problems.append(f"samples/{field}: {len(bad)} values differ from the sample names "
                                f"(first: sample {bad[0]}); rerun `ntu-prep extract` to rewrite them")
    for stage, info in attrs.get("stages", {}).items():
        problems += _verify_stage(group, stage, info, n, deep, advance)
    for protocol in group["splits"].group_keys():
        train, test = split_indices(group, protocol)
        both = np.concatenate([train, test])
        if len(both) and (both.min() < 0 or both.max() >= n):
            problems.append(f"splits/{protocol} has indices outside [0, {n})")
        if len(np.unique(both)) != len(both):
            problems.append(f"splits/{protocol}: train and test overlap or repeat")
    return problems


def _verify_stage(group: zarr.Group, stage: str, info: dict, n: int, deep: bool,
                  advance: Callable[[int], None] | None) -> list[str]:
    problems = []
    status = group[info["status"]][:]
    unknown = set(np.unique(status).tolist()) - {int(s) for s in Status}
    if unknown:
        problems.append(f"{info['status']} has unknown codes {sorted(unknown)}")
    counts = labelled(status_counts(status))
    recorded = info.get("counts")
    if recorded is not None and {k: recorded.get(k, 0) for k in counts} != counts:
        problems.append(f"{stage}: recorded counts {recorded} differ from {info['status']} {counts}")
    pending = counts[Status.PENDING.label]
    if info.get("state") == State.COMPLETE and pending:
        problems.append(f"{stage}: complete, but {pending} rows of {info['status']} were never "
                        "written; rerun the same `ntu-prep extract` command to prepare them")
    errors = read_strings(group[info["error"]])
    if any(not errors[i] for i in np.flatnonzero(status == Status.FAILED)):
        problems.append(f"{stage}: a failed sample has no error message")
    shard_size = info["shard_size"]
    done = group[info["done"]][:]
    if not done.all():
        problems.append(f"{stage}: {int((done == 0).sum())} of {len(done)} shards not written; "
                        "rerun the same `ntu-prep extract` command to finish them")
    for shard, path, what in damaged_shards(group, stage):
        lo = shard * shard_size
        problems.append(f"{path} {_range(lo, min(lo + shard_size, n))} (shard {shard}): {what}; "
                        "rerun the same `ntu-prep extract` command to re-prepare it")
    if stage == "skeleton":
        num_frames = group["samples/num_frames"][:]
        ok = status == Status.OK
        if (num_frames[ok] <= 0).any():
            problems.append(f"{int((num_frames[ok] <= 0).sum())} ok samples have no frames")
        if (num_frames > MAX_FRAMES).any() or (num_frames < 0).any():
            problems.append("samples/num_frames outside [0, 300]")
    for lo in range(0, n, shard_size):
        if deep:
            problems += _decode_shard(group, stage, info, lo, min(lo + shard_size, n))
        if advance:
            advance(1)
    return problems


def _decode_shard(group: zarr.Group, stage: str, info: dict, lo: int, hi: int) -> list[str]:
    problems = []
    for path in group[info["digest"]].attrs["files"]:
        array = group[path]
        try:
            block = array[lo:hi]
        except SHARD_READ_ERRORS as err:  # a corrupt shard: report it, keep checking the rest
            problems.append(f"{path} {_range(lo, hi)} unreadable: {err}")
            continue
        if stage == "skeleton" and path in {s.path for s in SKELETON_ARRAYS}:
            num_frames = group["samples/num_frames"][lo:hi]
            past = np.arange(MAX_FRAMES)[None, :] >= num_frames[:, None]
            if np.abs(block[past]).sum() != 0:
                problems.append(f"{path} {_range(lo, hi)}: non-zero values past num_frames")
    return problems
