"""The skeleton stage: a folder of `.skeleton` files -> a prepared store, in parallel and resumably.

Usage:
    summary = extract(ExtractConfig(skeletons=Path("nturgb+d_skeletons"), out=Path("ntu60.zarr")))
    print(summary.describe())

How it runs: the files are discovered (recursively) and sorted by sample name; sample i belongs to
shard i // shard_size; one task per shard parses, selects actors, computes motion and writes that shard's
files and nothing else, then marks the shard done in `progress/shard_done`. A rerun on the same input
and options skips the shards marked done, so an interrupted run (kill -9 included) finishes with a store
identical to an uninterrupted one. Tasks run on joblib/loky processes, or on a dask.distributed cluster
(the store must then be on a file system every worker sees).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import NTUPrepError, SampleNameError, StoreFormatError
from ..manifests import DATASETS, MAX_SETUP, NUM_CLASSES, all_samples, class_names, missing_samples
from ..progress import ProgressBar
from ..sample_id import SampleId
from ..skeleton.actors import MAX_WIDE_RATIO, MIN_TRACKED_FRAMES, WIDE_SPREAD, motion, select_actors
from ..skeleton.parse import parse_skeleton, parse_skeleton_bytes
from ..store.schema import (
    CODEC,
    MAX_FRAMES,
    META_FIELDS,
    SKELETON_ARRAYS,
    STATUS_CODES,
    create_store,
    open_store,
    read_strings,
    status_counts,
)
from ..store.shards import assemble_shard, check_layout, chunk_encoder, encode_chunk, write_shard_file

BACKENDS = ("loky", "dask")


@dataclass(frozen=True)
class ExtractConfig:
    """One `ntu-prep extract` run. Only the fields in `result_options` shape the store's content."""

    skeletons: Path
    out: Path
    dataset: str | None = None  # ntu60 | ntu120; None: ntu120 if any setup > 17 or action > 60
    jobs: int = 1
    backend: str = "loky"
    scheduler: str | None = None  # dask scheduler address; None: a LocalCluster of `jobs` workers
    shard_size: int = 128
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, not {self.dataset!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.jobs < 1 or self.shard_size < 1:
            raise ValueError("jobs and shard_size must be >= 1")
        if self.scheduler and self.backend != "dask":
            raise ValueError("--scheduler needs --backend dask")


@dataclass(frozen=True)
class SampleEntry:
    name: str
    path: str
    on_missing_list: bool


@dataclass(frozen=True)
class ShardTask:
    store: str
    shard: int
    start: int  # index of the shard's first sample
    entries: tuple[SampleEntry, ...]


@dataclass
class ExtractSummary:
    store: Path
    dataset: str
    num_samples: int
    counts: dict[str, int]
    failures: list[tuple[str, str]]
    ignored: list[tuple[str, str]]
    shards_written: int
    shards_resumed: int
    seconds: float
    not_in_input: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        rate = self.num_samples / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"store: {self.store} ({self.dataset}, {self.num_samples} samples)",
            "status: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            f"shards: {self.shards_written} written, {self.shards_resumed} already done; "
            f"{self.seconds:.1f} s ({rate:.0f} samples/s)",
        ]
        if self.not_in_input:
            lines.append(f"{self.not_in_input} samples of {self.dataset} are not in the input folder")
        for name, reason in self.failures:
            lines.append(f"failed: {name}: {reason}")
        for path, reason in self.ignored:
            lines.append(f"ignored: {path}: {reason}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class PreparedSkeleton:
    """One sample's skeleton arrays over its frames kept: (num_frames, *tail) as in SKELETON_ARRAYS."""

    arrays: dict[str, np.ndarray]
    num_frames: int
    num_bodies: int
    note: str


def prepare_skeleton(path: str | Path) -> PreparedSkeleton:
    """Parse, select actors, compute motion. Raises NTUPrepError on bad input."""
    record = parse_skeleton(path)
    actors = select_actors(record)
    n = actors.num_frames
    if n == 0:
        raise NTUPrepError(f"{path}: no body in any of its {record.num_frames} frames")
    if n > MAX_FRAMES:
        raise NTUPrepError(f"{path}: {n} frames kept; the store holds at most {MAX_FRAMES}")
    arrays = {
        "joints": actors.joints,
        "motion": motion(actors.joints, actors.present),
        "color_xy": actors.color_xy,
        "tracking": actors.tracking,
    }
    return PreparedSkeleton(arrays, n, actors.num_bodies, actors.note)


def write_shard(task: ShardTask) -> dict[str, int]:
    """Prepare every sample of one shard and write its files; runs in a worker process."""
    group = open_store(task.store, mode="r+")
    k = len(task.entries)
    arrays = {spec.name: group[f"skeleton/{spec.name}"] for spec in SKELETON_ARRAYS}
    encoders = {name: chunk_encoder(array) for name, array in arrays.items()}
    # one padded sample per array, reused: encoding from it stays in cache (no shard-sized blocks)
    padded = {spec.name: np.zeros((MAX_FRAMES, *spec.tail), spec.dtype) for spec in SKELETON_ARRAYS}
    chunks: dict[str, list[bytes | None]] = {name: [None] * k for name in arrays}
    table = {
        "num_frames": np.zeros(k, "int32"), "num_bodies": np.zeros(k, "int16"),
        "status": np.zeros(k, "int8"), "error": [""] * k, "note": [""] * k,
    }
    for i, entry in enumerate(task.entries):
        status = "missing_skeleton" if entry.on_missing_list else "ok"
        try:
            prepared = prepare_skeleton(entry.path)
        except Exception as err:  # recorded in the store with its reason; the shard goes on
            reason = str(err) if isinstance(err, NTUPrepError) else f"{type(err).__name__}: {err}"
            table["error"][i] = reason
            table["status"][i] = STATUS_CODES["failed" if status == "ok" else status]
            continue
        n = prepared.num_frames
        for name, values in prepared.arrays.items():
            buffer = padded[name]
            buffer[:n] = values
            buffer[n:] = 0
            chunks[name][i] = encode_chunk(encoders[name], buffer)
        table["num_frames"][i] = n
        table["num_bodies"][i] = prepared.num_bodies
        table["status"][i] = STATUS_CODES[status]
        table["note"][i] = prepared.note
    root = Path(task.store)
    for name, array in arrays.items():  # whole shards, encoded here: see shards.py for why
        check_layout(array)
        write_shard_file(root, array, task.shard, assemble_shard(chunks[name], array.shards[0]))
    stop = task.start + k
    for name, values in table.items():
        group[f"samples/{name}"][task.start:stop] = np.asarray(values, dtype=object) if isinstance(
            values, list) else values
    group["progress/shard_done"][task.shard] = 1  # last: the shard counts only once all of it is written
    return {"shard": task.shard, "samples": k}


def discover(root: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Sample name -> file for every `*.skeleton` under root, and the files left out with why."""
    found: dict[str, list[Path]] = {}
    ignored = []
    for path in sorted(root.rglob("*.skeleton")):
        try:
            found.setdefault(SampleId.from_path(path).name, []).append(path)
        except SampleNameError as err:
            ignored.append((str(path), f"not an NTU sample name: {err}"))
    chosen = {}
    for name, paths in found.items():
        chosen[name] = paths[0]
        for extra in paths[1:]:
            ignored.append((str(extra), f"duplicate of {paths[0]} (the first in sorted order is used)"))
    return chosen, ignored


def infer_dataset(names: list[str]) -> str:
    ids = [SampleId.parse(n) for n in names]
    big = any(s.setup > MAX_SETUP["ntu60"] or s.action > NUM_CLASSES["ntu60"] for s in ids)
    return "ntu120" if big else "ntu60"


def input_digest(files: dict[str, Path], root: Path) -> str:
    """A digest of the input listing (names and paths relative to the input folder)."""
    h = hashlib.sha256()
    for name, path in sorted(files.items()):
        h.update(f"{name}\t{path.relative_to(root).as_posix()}\n".encode())
    return h.hexdigest()


def result_options(config: ExtractConfig, dataset: str) -> dict:
    """What shapes the store's content; parallelism (jobs, backend) does not, so it is not recorded."""
    return {
        "dataset": dataset, "shard_size": config.shard_size, "max_frames": MAX_FRAMES, "codec": CODEC,
        "denoise": {"min_tracked_frames": MIN_TRACKED_FRAMES, "wide_spread": WIDE_SPREAD,
                    "max_wide_ratio": MAX_WIDE_RATIO},
    }


def _prepare_store(config: ExtractConfig, files: dict[str, Path], dataset: str,
                   ignored: list[tuple[str, str]]):
    """Open the store to resume it, or create it; refuses to resume a store made from other input."""
    root = config.skeletons.resolve()
    attrs = {
        "dataset": dataset, "ntu_prep_version": __version__, "options": result_options(config, dataset),
        "source": {"skeletons": str(root), "num_files": len(files),
                   "digest": input_digest(files, config.skeletons)},
        "ignored_files": [{"path": p, "reason": r} for p, r in ignored],
        "status_codes": STATUS_CODES, "max_frames": MAX_FRAMES, "class_names": list(class_names(dataset)),
        "counts": None,
    }
    out = config.out
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        try:
            group = open_store(out, mode="r+")
        except StoreFormatError as err:
            raise StoreFormatError(f"{err}; pass --overwrite to replace it") from err
        if group.attrs.get("state") != "creating":  # else a kill interrupted its creation: start again
            for key in ("options", "source", "ntu_prep_version"):
                if group.attrs.get(key) != attrs[key]:
                    raise StoreFormatError(
                        f"{out} was made from other input or options ({key} differs); "
                        "pass --overwrite to replace it, or choose another --out")
            for partial in out.rglob("*.partial"):  # left by a write that a kill interrupted
                partial.unlink()
            return group, True
    names = sorted(files)
    ids = [SampleId.parse(n) for n in names]
    meta = {f: np.array([getattr(s, f) for s in ids], dtype="int16") for f in META_FIELDS}
    return create_store(out, names, meta, config.shard_size, attrs), False


def _run_tasks(tasks: list[ShardTask], config: ExtractConfig) -> Iterator[dict[str, int]]:
    if config.backend == "dask":
        yield from _run_dask(tasks, config)
    elif config.jobs == 1:
        yield from map(write_shard, tasks)
    else:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=config.jobs, backend="loky", return_as="generator_unordered")
        yield from parallel(delayed(write_shard)(t) for t in tasks)


def _run_dask(tasks: list[ShardTask], config: ExtractConfig) -> Iterator[dict[str, int]]:
    from distributed import Client, LocalCluster, as_completed

    if config.scheduler:
        client, cluster = Client(config.scheduler), None
    else:
        cluster = LocalCluster(n_workers=config.jobs, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        for future in as_completed(client.map(write_shard, tasks, pure=False)):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def extract(config: ExtractConfig) -> ExtractSummary:
    """Run (or resume) the skeleton stage; see the module docstring."""
    started = time.monotonic()
    if not config.skeletons.is_dir():
        raise NTUPrepError(f"{config.skeletons}: no such folder")
    files, ignored = discover(config.skeletons)
    if not files:
        raise NTUPrepError(f"{config.skeletons}: no *.skeleton file with an NTU sample name under it")
    dataset = config.dataset or infer_dataset(list(files))
    ids = {n: SampleId.parse(n) for n in files}
    outside = [n for n, s in ids.items() if s.setup > MAX_SETUP[dataset] or s.action > NUM_CLASSES[dataset]]
    for name in outside:
        ignored.append((str(files.pop(name)), f"not part of {dataset} (setups 1-{MAX_SETUP[dataset]}, "
                                              f"actions 1-{NUM_CLASSES[dataset]})"))
    group, resumed = _prepare_store(config, files, dataset, ignored)

    names = sorted(files)
    missing = missing_samples(dataset)
    done = group["progress/shard_done"][:]
    tasks = []
    for shard, start in enumerate(range(0, len(names), config.shard_size)):
        if done[shard]:
            continue
        chunk = names[start:start + config.shard_size]
        entries = tuple(SampleEntry(n, str(files[n]), n in missing) for n in chunk)
        tasks.append(ShardTask(str(config.out), shard, start, entries))
    parse_skeleton_bytes(b"0\n", "warm-up")  # compiles the kernel once, into the cache workers load
    todo = sum(len(t.entries) for t in tasks)
    with ProgressBar(todo, "samples", "extract", enabled=config.progress) as bar:
        for result in _run_tasks(tasks, config):
            bar.advance(result["samples"])

    counts = status_counts(group)
    group.attrs.update({"counts": counts, "state": "complete"})
    status = group["samples/status"][:]
    errors = read_strings(group["samples/error"])
    failures = [(names[i], errors[i]) for i in np.flatnonzero(status == STATUS_CODES["failed"])]
    stored_ignored = [(d["path"], d["reason"]) for d in group.attrs["ignored_files"]]
    return ExtractSummary(
        store=config.out, dataset=dataset, num_samples=len(names), counts=counts, failures=failures,
        ignored=stored_ignored, shards_written=len(tasks), shards_resumed=len(done) - len(tasks),
        seconds=time.monotonic() - started,
        not_in_input=len(set(all_samples(dataset)) - set(names)),
    )

