"""What `ntu-prep info` prints: a store's state, stages, arrays, failures, splits and ignored files.

    for line in describe_store(open_store("ntu60.zarr")):
        print(line)

Read-only and cheap (the small per-sample tables only); it never judges integrity, which is `verify`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr

from .lock import holder, lock_path
from .schema import read_strings, split_indices, stage_info, store_size_bytes
from .status import State, Status, count_noted, describe_counts, status_counts

MAX_FAILURES_SHOWN = 20


def describe_store(group: zarr.Group) -> Iterator[str]:
    """The lines of `ntu-prep info` for a store."""
    root = Path(group.store.root)
    attrs = dict(group.attrs)
    n = group["samples/name"].shape[0]
    yield (f"{root}: {attrs['format']}, {attrs['dataset']}, {n} samples, state {attrs.get('state')}, "
           f"made by ntu-prep {attrs.get('ntu_prep_version')}")
    writer = holder(lock_path(root))
    if writer:
        yield f"being written now by pid and task: {writer}"
    names = None
    for stage in attrs.get("stages", {}):
        info = stage_info(group, stage)
        codes = group[info["status"]][:]
        counts = status_counts(codes)
        noted = count_noted(codes, group[info["note"]])
        yield (f"{stage}: {describe_counts(counts, noted)}; state {info.get('state')}; from "
               f"{info['source']['folder']} ({info['source']['num_files']} files)")
        if info.get("state") != State.COMPLETE:
            yield (f"  {counts[Status.PENDING]} of {n} samples pending: rerun the same `ntu-prep extract` "
                   "command to finish the stage")
        yield f"{stage} options: {info['options']}"
        for path in group[info["digest"]].attrs["files"]:
            array = group[path]
            layout = f"chunk {array.chunks}" + (f", shard {array.shards}" if array.shards else "")
            yield f"  {path}: {array.shape} {array.dtype}, {layout}"
        failed = np.flatnonzero(codes == Status.FAILED)
        if len(failed):
            names = names or read_strings(group["samples/name"])
            errors = read_strings(group[info["error"]])
            for i in failed[:MAX_FAILURES_SHOWN]:
                yield f"  failed: {names[i]}: {errors[i]}"
            if len(failed) > MAX_FAILURES_SHOWN:
                yield f"  ... and {len(failed) - MAX_FAILURES_SHOWN} more failed samples ({info['error']})"
    yield f"size on disk: {store_size_bytes(root) / 2**20:.1f} MiB"
    for protocol in group["splits"].group_keys():
        train, test = split_indices(group, protocol)
        split_attrs = dict(group["splits"][protocol].attrs)
        kept = "missing_skeleton samples kept" if split_attrs.get("keep_missing") else (
            f"{split_attrs.get('excluded_missing', 0)} on the missing-skeleton list excluded")
        yield f"split {protocol}: train {len(train)}, test {len(test)} ({kept})"
    for item in attrs.get("ignored_files", []):
        yield f"ignored: {item['path']}: {item['reason']}"
