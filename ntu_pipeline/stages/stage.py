"""A stage and its shard task: what one worker does with one shard of one stage.

    stage = skeleton_stage(shard_size=128)   # stages/skeleton.py; stages/rgb.py likewise
    write_shard(ShardTask(store, stage, shard=3, start=384, entries=...))

A stage prepares one sample into the arrays it declares (`Stage.prepare`); `write_shard` loops over a
shard's samples, records each failure with its reason in the stage's error column, encodes the sharded
arrays itself (store/shards.py says why), writes that shard's files and nothing else, records their
sizes and crc32c (what `verify` and resume check), and marks the shard done last. Before it writes
anything (and about once a second while it prepares) it checks the writer's lease: a worker whose
`extract` was killed stops without touching the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ..errors import NTUPrepError, StoreWriteError
from ..store.lock import Lease
from ..store.schema import ArraySpec, open_store
from ..store.shards import (
    assemble_shard,
    check_layout,
    chunk_encoder,
    encode_chunk,
    file_digest,
    shard_grid,
    shard_path,
    write_shard_file,
)
from ..store.status import State, Status
from .interrupt import check_interrupt

LEASE_CHECK_SECONDS = 1.0  # between samples; always right before writing


@dataclass(frozen=True)
class SampleEntry:
    """One sample as a stage task sees it: its row in the table and its input file (None: absent)."""

    name: str
    index: int
    path: str | None
    on_missing_list: bool


@dataclass(frozen=True, eq=False)
class Prepared:
    """What a stage made of one sample: array path -> values (sharded arrays may be shorter along
    their first per-sample axis: the rest is zero), and a note worth keeping ('' when none)."""

    arrays: dict[str, np.ndarray]
    note: str = ""


@dataclass(frozen=True, eq=False)
class Stage:
    """A stage: the arrays it writes (status, error and note columns among them), its progress record,
    what shapes its content (`options`), and `prepare(entry, group) -> Prepared`, a module-level
    function (it travels to worker processes) that raises on bad input."""

    name: str
    input_kind: str  # what the input files are, for messages
    arrays: tuple[ArraySpec, ...]
    status: str
    error: str
    note: str
    done: str
    digest: str
    shard_size: int
    options: dict
    prepare: Callable[[SampleEntry, zarr.Group], Prepared]

    def record(self, source: dict) -> dict:
        return {"options": self.options, "source": source, "shard_size": self.shard_size,
                "status": self.status, "error": self.error, "note": self.note, "done": self.done,
                "digest": self.digest, "counts": None, "state": State.EXTRACTING}


@dataclass(frozen=True)
class ShardTask:
    store: str  # absolute: a remote worker resolves relative paths against its own folder
    stage: Stage
    shard: int
    start: int
    entries: tuple[SampleEntry, ...]
    lease: Lease | None = None  # the writer's; None: the caller holds the lock itself (tests, benches)

    def check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()


def sample_status(entry: SampleEntry, prepared: bool) -> Status:
    """The status of a sample: the official missing list first (whatever its file holds, or lacks),
    then absent (no file), failed (prepare raised) or ok."""
    if entry.on_missing_list:
        return Status.MISSING_SKELETON
    if entry.path is None:
        return Status.ABSENT
    return Status.OK if prepared else Status.FAILED


def _encoders(arrays: dict[str, zarr.Array], stage: Stage) -> dict[str, Callable[[np.ndarray], bytes | None]]:
    out = {}
    for spec in stage.arrays:
        if not spec.sharded:
            continue
        array = arrays[spec.path]
        check_layout(array)
        if spec.codec == "jpeg":
            from ..store.jpeg_codec import encode_frame_chunk

            (sharding,) = array.metadata.codecs
            jpeg = sharding.codecs[0]  # the inner chunks' serializer
            out[spec.path] = lambda frame, c=jpeg: encode_frame_chunk(frame, c)
        else:
            encoder = chunk_encoder(array)
            out[spec.path] = lambda chunk, e=encoder: encode_chunk(e, chunk)
    return out


def _encode_sample(spec: ArraySpec, values: np.ndarray, buffer: np.ndarray,
                   encode: Callable[[np.ndarray], bytes | None]) -> list[bytes | None]:
    """The encoded chunks of one sample, in C order (one per sample, or one per frame)."""
    if spec.layout == "sample":
        n = len(values)
        buffer[:n] = values
        buffer[n:] = 0
        return [encode(buffer)]
    frames = [encode(frame) for frame in values[: spec.tail[0]]]
    return frames + [None] * (spec.tail[0] - len(frames))


def write_shard(task: ShardTask) -> dict[str, int]:
    """Prepare every sample of one shard and write its files; runs in a worker process (or here)."""
    stage, k = task.stage, len(task.entries)
    task.check_lease()
    checked = time.monotonic()
    group = open_store(task.store, mode="r+", check=False)
    root = Path(task.store)
    arrays = {spec.path: group[spec.path] for spec in stage.arrays}  # each opening reads its metadata
    encoders = _encoders(arrays, stage)
    sharded = [spec for spec in stage.arrays if spec.sharded]
    columns = {spec.path: np.full((k, *spec.tail), spec.fill, object if spec.dtype is str else spec.dtype)
               for spec in stage.arrays if not spec.sharded}
    buffers = {spec.path: np.zeros(spec.tail, spec.dtype) for spec in sharded if spec.layout == "sample"}
    chunks: dict[str, list[bytes | None]] = {spec.path: [] for spec in sharded}
    for i, entry in enumerate(task.entries):
        check_interrupt()
        if time.monotonic() - checked > LEASE_CHECK_SECONDS:
            task.check_lease()
            checked = time.monotonic()
        prepared = None
        if entry.path is not None:
            try:
                prepared = stage.prepare(entry, group)
            except Exception as err:  # recorded in the store with its reason; the shard goes on
                columns[stage.error][i] = str(err) if isinstance(err, NTUPrepError) else (
                    f"{entry.path}: {type(err).__name__}: {err}")
        for spec in sharded:
            values = prepared.arrays[spec.path] if prepared else np.zeros((0, *spec.tail[1:]), spec.dtype)
            chunks[spec.path] += _encode_sample(spec, values, buffers.get(spec.path), encoders[spec.path])
        if prepared:
            for path, values in prepared.arrays.items():
                if path in columns:
                    columns[path][i] = values
            columns[stage.note][i] = prepared.note
        columns[stage.status][i] = sample_status(entry, prepared is not None)
    task.check_lease()  # the last moment before anything of this shard reaches the store
    written = {}  # path -> digest of the bytes written, so they need not be read back
    for spec in sharded:  # whole shards, encoded here: see store/shards.py for why
        array = arrays[spec.path]
        written[spec.path] = write_shard_file(root, array, task.shard,
                                              assemble_shard(chunks[spec.path], shard_grid(array)))
    stop = task.start + k
    for path, values in columns.items():
        try:
            arrays[path][task.start:stop] = values
        except OSError as err:
            where = f"{root / path}: cannot write samples {task.start}..{stop - 1}"
            raise StoreWriteError(f"{where}: {err.strerror or err}") from err
    digests = [written.get(spec.path) or file_digest(shard_path(root, arrays[spec.path], task.shard))
               for spec in stage.arrays]  # the tables zarr wrote are read back (a few bytes each)
    group[stage.digest][task.shard] = np.asarray(digests, dtype=object)
    task.check_lease()
    group[stage.done][task.shard] = 1  # last: the shard counts only once all of it is written
    return {"shard": task.shard, "samples": k}
