"""What the three exports share: their config, the splits a format needs, the record of where an export
came from, atomic output files, and reading a store in shard-bounded blocks.

Usage (the formats' own modules do this; `ntu-prep export` is the command):
    config = ExportConfig(store=Path("ntu60.zarr"), out=Path("ntu60_3danno.pkl"), format="pyskl")
    group = open_for_export(config.store)             # refuses an incomplete or damaged store
    group = open_for_export(config.store, SKELETON)   # only its skeleton stage (pyskl, ctrgcn)
    splits = resolve_splits(group, config.protocols)  # stored where the store has them, else computed
    for positions, joints in read_blocks(group["skeleton/joints"], indices):  # (k, 300, 2, 25, 3)
        ...
    with atomic_output(target, overwrite=False) as tmp:   # written to tmp, then os.replace(tmp, target)
        ...

Memory: a read holds one shard of the store (at most BLOCK_BYTES of it), so an export's allocations
peak at about 3.5x a shard's decoded skeleton/joints (zarr's decoding included; 76 MiB for 128-sample
shards) whatever the number of samples, plus the per-sample tables (about 100 bytes a sample).
bench/export_memory.py measures it; tests/test_export_cli.py checks it on 2,000 samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import zarr

from .. import __version__
from ..atomic import atomic_path
from ..errors import ConfigError, NTUPrepError
from ..manifests import get_protocol, protocols
from ..store import Status, open_store, read_strings, require_complete, require_stages, split_indices
from ..store.schema import SHARD_READ_ERRORS
from ..store.splits import compute_split, usable_skeleton

EXPORT_FORMATS = ("pyskl", "ctrgcn", "hdf5")
BLOCK_BYTES = 32 * 2**20  # the most one read may hold, whatever the shard size (joints: 22 MB a shard)
SKELETON = ("skeleton",)  # the stage pyskl and ctrgcn read: the RGB stage may be absent or unfinished


@dataclass(frozen=True)
class ExportConfig:
    """One `ntu-prep export` run.

    protocols: the store's protocol names (xsub, xview, xsub120, xset120); empty: every protocol of the
    store's dataset. pyskl and ctrgcn only. rgb: hdf5 only; False leaves out rgb/frames.
    """

    store: Path
    out: Path
    format: str
    protocols: tuple[str, ...] = ()
    rgb: bool = True
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "store", Path(self.store))
        object.__setattr__(self, "out", Path(self.out))
        if str(self.out) == "-":
            raise ConfigError("-o -: an export is written to a file, not to standard output; name one "
                              "(e.g. -o ntu60.pkl)")
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {self.format!r}")
        known = protocols()
        unknown = [name for name in self.protocols if name not in known]
        if unknown:
            raise ConfigError(f"unknown protocol {unknown[0]!r}; known: {', '.join(known)}")
        if len(set(self.protocols)) != len(self.protocols):
            raise ConfigError(f"a protocol is named twice: {', '.join(self.protocols)}")
        if self.format == "hdf5" and self.protocols:
            raise ConfigError("--protocol does not apply to --format hdf5: it copies every stored split")
        if self.format != "hdf5" and not self.rgb:
            raise ConfigError(f"--no-rgb applies to --format hdf5 only; {self.format} holds no RGB")

    def options(self) -> dict:
        """What shaped the export's content (recorded in its metadata)."""
        return {"format": self.format, "protocols": list(self.protocols), "rgb": self.rgb}


SplitSource = Literal["stored", "computed"]
SPLIT_SOURCES = get_args(SplitSource)


@dataclass
class ExportSummary:
    format: str
    outputs: dict[Path, str]  # each file written -> what it holds
    splits: dict[str, SplitSource] = field(default_factory=dict)  # protocol -> where its split came from
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (sample name or array path, reason)
    seconds: float = 0.0

    def describe(self) -> str:
        lines = [f"wrote {path}: {what}" for path, what in self.outputs.items()]
        for protocol, source in self.splits.items():
            lines.append(f"split {protocol}: " + ("as stored" if source == "stored" else
                         "not in the store: computed now (missing_skeleton samples excluded), not written"))
        for name, reason in self.left_out[:20]:
            lines.append(f"left out: {name}: {reason}")
        if len(self.left_out) > 20:
            lines.append(f"... and {len(self.left_out) - 20} more left out (listed in the export's metadata)")
        lines.append(f"{self.format} export: {self.seconds:.1f} s")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class ExportSplit:
    """One protocol's train/test sample indices (sorted) as an export uses them."""

    protocol: str
    train: np.ndarray
    test: np.ndarray
    source: SplitSource  # the store's own split, or computed from the protocol by the export
    keep_missing: bool

    def __post_init__(self):
        if self.source not in SPLIT_SOURCES:
            raise ValueError(f"split source must be one of {SPLIT_SOURCES}, not {self.source!r}")

    def record(self) -> dict:
        return {"source": self.source, "keep_missing": self.keep_missing,
                "train": len(self.train), "test": len(self.test)}


def open_for_export(path: Path, stages: tuple[str, ...] | None = None) -> zarr.Group:
    """The store, opened read-only; refuses one whose `stages` are missing, unfinished or damaged
    (None: every stage and the store: an hdf5 export copies them all, and a half-written stage is never
    exported; `require_complete` checks each shard file's size too)."""
    group = open_store(path)
    if stages is None:
        require_complete(group)
    else:
        require_stages(group, stages)
    return group


def dataset_protocols(dataset: str) -> tuple[str, ...]:
    return tuple(name for name, p in protocols().items() if p.dataset == dataset)


def resolve_splits(group: zarr.Group, names: tuple[str, ...],
                   stages: tuple[str, ...] | None = None) -> list[ExportSplit]:
    """The requested protocols' splits (default: all of the store's dataset), stored or computed now.

    A split the store has is used as stored (with its keep_missing); one it lacks is computed with
    `compute_split` over `stages` (None: every stage must be complete; missing_skeleton samples
    excluded) and never written to the store.
    """
    dataset = group.attrs.get("dataset")
    names = names or dataset_protocols(dataset)
    for name in names:
        protocol = get_protocol(name)
        if protocol.dataset != dataset:
            raise NTUPrepError(f"protocol {name} is defined on {protocol.dataset}; this store holds "
                               f"{dataset} (its protocols: {', '.join(dataset_protocols(dataset))})")
    stored = set(group["splits"].group_keys()) if "splits" in group else set()
    out = []
    for name in names:
        if name in stored:
            train, test = split_indices(group, name)
            keep = bool(group["splits"][name].attrs.get("keep_missing", False))
            out.append(ExportSplit(name, np.sort(train), np.sort(test), "stored", keep))
        else:
            result = compute_split(group, name, keep_missing=False, stages=stages)
            out.append(ExportSplit(name, result.train, result.test, "computed", False))
    return out


@dataclass(frozen=True, eq=False)
class SampleTable:
    """The columns of `samples/` an export needs, read whole (about 100 bytes per sample)."""

    names: list[str]
    label: np.ndarray  # (N,) int
    num_frames: np.ndarray  # (N,) int
    status: np.ndarray  # (N,) int8, Status codes

    @classmethod
    def read(cls, group: zarr.Group) -> SampleTable:
        samples = group["samples"]
        return cls(read_strings(samples["name"]), samples["label"][:].astype(np.int64),
                   samples["num_frames"][:].astype(np.int64), samples["status"][:])

    def exportable(self, indices: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """The indices whose skeleton can be exported (`usable_skeleton`: ok, or missing_skeleton with
        frames, which `indices` holds only where a split kept it), and (name, reason) for the others."""
        usable = usable_skeleton(self.status[indices], self.num_frames[indices], keep_missing=True)
        left_out = [(self.names[i], f"skeleton status {Status(int(self.status[i])).label}, "
                                    f"{int(self.num_frames[i])} frames")
                    for i in indices[~usable]]
        return indices[usable], left_out


def export_record(group: zarr.Group, config: ExportConfig, splits: list[ExportSplit] | None = None,
                  left_out: list[tuple[str, str]] | None = None, **extra) -> dict:
    """Where an export came from and what shaped it: stored in the export where its format allows."""
    record = {
        "source": str(Path(config.store).resolve()),
        "store_format": group.attrs.get("format"),
        "dataset": group.attrs.get("dataset"),
        "store_ntu_prep_version": group.attrs.get("ntu_prep_version"),
        "ntu_prep_version": __version__,
        "exported_by": "ntu-prep export",
        "options": config.options(),
    }
    if splits is not None:
        record["splits"] = {s.protocol: s.record() for s in splits}
    if left_out is not None:
        record["left_out"] = [list(item) for item in left_out]
    record.update(extra)
    return record


def check_targets(targets: list[Path], overwrite: bool) -> None:
    """Refuse before writing anything: an existing target (unless overwrite), or one that is a folder."""
    for target in targets:
        if target.is_dir():
            raise NTUPrepError(f"{target}: is a folder; give a file name")
        if target.exists() and not overwrite:
            raise NTUPrepError(f"{target}: already exists (--overwrite replaces it)")


@contextlib.contextmanager
def atomic_output(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path next to `target` (`atomic.atomic_path`); on success it replaces `target`
    in one rename, on an error it is removed and `target` is untouched."""
    target = Path(target)
    check_targets([target], overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        yield tmp


def read_runs(indices: np.ndarray, shard_size: int, max_rows: int) -> Iterator[tuple[int, int]]:
    """Split `indices` (in output order) into (start, stop) positions such that each run's indices are
    consecutive store samples, in one shard, at most `max_rows` of them: one slice read per run."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return
    breaks = (np.diff(indices) != 1) | (indices[1:] // shard_size != indices[:-1] // shard_size)
    bounds = [0, *(np.flatnonzero(breaks) + 1).tolist(), len(indices)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        for lo in range(start, stop, max_rows):
            yield lo, min(lo + max_rows, stop)


def read_blocks(array: zarr.Array, indices: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """(positions in `indices`, array[indices[positions]]) in order, by slice reads within one shard.

    Never fancy indexing (orders of magnitude slower on sharded arrays in zarr 3.1).
    """
    shard = (array.shards or array.chunks)[0]
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    max_rows = max(1, min(shard, BLOCK_BYTES // max(row_bytes, 1)))
    for start, stop in read_runs(indices, shard, max_rows):
        first = int(indices[start])
        yield slice(start, stop), read_rows(array, first, first + (stop - start))


def read_rows(array: zarr.Array, lo: int, hi: int) -> np.ndarray:
    """array[lo:hi], a zarr error re-raised naming the array and the samples."""
    try:
        return array[lo:hi]
    except SHARD_READ_ERRORS as err:  # a damaged shard: say where
        raise NTUPrepError(f"{array.path} samples {lo}..{hi - 1}: cannot read: "
                           f"{type(err).__name__}: {err}") from err
