"""The files a store's stages wrote, as their shards recorded them, and the check every reader makes first.

    check_shard_files(group)                   # DamagedStoreError at the first file missing or resized
    check_shard_files(group, ("skeleton",))    # one stage's files only
    shard_sizes(group, "rgb/frames")           # (shards,) int64 bytes of each shard file, -1: none written

Every done shard records `size:crc32c` of each file it wrote ("-" for none) in its stage's
`progress/<digest>` (stages/stage.py), so sizes are known for every store of format ntu-prep/2: no
fallback is needed (a /1 store is refused on opening). zarr reads a missing shard file as the fill value,
so a deleted or truncated file would reach a consumer as zeros; `check_shard_files` stats each recorded
file (one `os.stat` each, no read) and refuses the store at the first that is missing, of another size,
or present where its shard wrote none. Content changed at the same size is `verify`'s to find (it reads
every byte); a reader that decodes a damaged file says so itself (`frame_reader`, export's `read_rows`).

The record is read straight from its chunk files when it has the layout zarr gives a str table (one
chunk per shard, vlen-utf8 then zstd): zarr's own read of NTU60's RGB record (3,555 chunks) takes 1.6 s,
this one 0.15 s. A record of any other layout is read through zarr.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import VLenUTF8Codec, ZstdCodec

from ..errors import DamagedStoreError
from .shards import shard_path
from .status import State

NONE_WRITTEN = -1  # in `shard_sizes`: the shard wrote no file there (every chunk was the fill value)
NOT_RECORDED = -2  # in `shard_sizes`: the shard is not done, nothing is recorded for it yet


def _fix(root: Path) -> str:
    return (f"run `ntu-prep verify {root}` to list every damaged file, then rerun the same `ntu-prep "
            "extract` command (same options) to rewrite them")


def _chunk_file(root: Path, array: zarr.Array) -> Callable[[int], str]:
    """shard -> the name of its file of `array`, as `shards.shard_path` names it, built as a string:
    pathlib takes ~100 us a path, which was most of the check's time at NTU60's size."""
    folder = str(shard_path(root, array, 0).parents[array.ndim - 1])  # <root>/<array>/c
    tail = "/0" * (array.ndim - 1)
    return lambda shard: f"{folder}/{shard}{tail}"


def _read_directly(record: zarr.Array) -> bool:
    """Whether a digest record has the layout read straight from its files (else zarr reads it)."""
    meta = record.metadata
    codecs = tuple(meta.codecs)
    encoding = meta.chunk_key_encoding
    zarr_str_table = (len(codecs) == 2 and isinstance(codecs[0], VLenUTF8Codec)
                      and isinstance(codecs[1], ZstdCodec) and tuple(record.chunks) == (1, record.shape[1]))
    return zarr_str_table and encoding.name == "default" and getattr(encoding, "separator", None) == "/"


def read_digests(group: zarr.Group, stage: str) -> tuple[list[str], np.ndarray]:
    """(array paths, (shards, files) object array of "size:crc32c" / "-") of `stage`'s progress record;
    a shard not done (or whose record chunk is gone) reads as "" in every column."""
    info = dict(group.attrs)["stages"][stage]
    root = Path(group.store.root)
    record = group[info["digest"]]
    files = list(record.attrs["files"])
    shards = record.shape[0]
    if shards == 0 or not _read_directly(record):
        return files, record[:]
    zstd, vlen = numcodecs.Zstd(), numcodecs.VLenUTF8()
    name = _chunk_file(root, record)
    out = np.full((shards, len(files)), "", dtype=object)
    for shard in range(shards):
        try:
            with open(name(shard), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        row = vlen.decode(zstd.decode(data))
        if len(row) != len(files):
            raise DamagedStoreError(f"{root}: {record.path} shard {shard}: {len(row)} entries where "
                                    f"{len(files)} files are recorded; {_fix(root)}")
        out[shard] = row
    return files, out


def _size(digest: str) -> int | None:
    """Bytes of a recorded "size:crc32c", NONE_WRITTEN for "-", None for "" (nothing recorded)."""
    if digest == "-":
        return NONE_WRITTEN
    return int(digest.split(":", 1)[0]) if digest else None


def shard_sizes(group: zarr.Group, path: str) -> np.ndarray | None:
    """(shards,) int64: the recorded bytes of each shard file of array `path` (NONE_WRITTEN where its
    shard wrote none, NOT_RECORDED for a shard not done), or None when no stage records that array."""
    for stage, info in dict(group.attrs).get("stages", {}).items():
        if path in group[info["digest"]].attrs["files"]:
            files, digests = read_digests(group, stage)
            column = digests[:, files.index(path)]
            return np.array([NOT_RECORDED if (s := _size(d)) is None else s for d in column], np.int64)
    return None


def check_shard_files(group: zarr.Group, stages: Iterable[str] | None = None) -> int:
    """Stat every file the done shards of `stages` (None: every stage) recorded; returns how many.

    DamagedStoreError, one line naming the store, the file, what is wrong (missing; N bytes where M were
    written; present where its shard wrote none) and the fix, at the first file not as recorded; also for
    a done shard whose record is missing. Costs one `os.stat` per file (README: Guarantees)."""
    root = Path(group.store.root)
    recorded = dict(group.attrs).get("stages", {})
    checked = 0
    for stage in recorded if stages is None else [s for s in stages if s in recorded]:
        info = recorded[stage]
        files, digests = read_digests(group, stage)
        # every shard of a complete stage is done (and reading `done` through zarr costs a chunk a shard)
        done = np.ones(len(digests), bool) if info.get("state") == State.COMPLETE else group[info["done"]][:]
        names = [_chunk_file(root, group[path]) for path in files]
        shard_size = info["shard_size"]
        for shard in np.flatnonzero(done).tolist():
            for k, digest in enumerate(digests[shard]):
                want = _size(digest)
                try:
                    found = os.stat(names[k](shard)).st_size
                except FileNotFoundError:
                    found = NONE_WRITTEN
                checked += 1
                if found == want:
                    continue
                lo = shard * shard_size
                where = f"shard {shard}, samples {lo}..{lo + shard_size - 1}"
                if want is None:
                    raise DamagedStoreError(f"{root}: {info['digest']}: the record of {stage} {where} is "
                                            f"missing; {_fix(root)}")
                what = ("missing" if found == NONE_WRITTEN else
                        "present, but its shard wrote none" if want == NONE_WRITTEN else
                        f"{found} bytes where its shard wrote {want}")
                file = Path(names[k](shard)).relative_to(root)
                raise DamagedStoreError(f"{root}: shard file {file} ({files[k]} {where}) "
                                        f"is {what}; {_fix(root)}")
    return checked
