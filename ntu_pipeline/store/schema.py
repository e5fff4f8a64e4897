"""The prepared-dataset store: one zarr v3 group, format "ntu-prep/1" (documented in the README).

Usage:
    group = open_store("ntu60.zarr")                 # refuses a format it does not know
    sample = read_sample(group, 0)                   # dict of arrays, trimmed to the frames kept
    problems = verify_store(group)                   # [] when the store is sound

Layout (N samples, T = 300 frames):
    samples/name (N,) str, sorted           samples/label, setup, camera, performer, replication (N,) int16
    samples/num_frames (N,) int32           samples/num_bodies (N,) int16
    samples/status (N,) int8 (STATUS_CODES) samples/error, samples/note (N,) str
    skeleton/joints, skeleton/motion (N, T, 2, 25, 3) float32, metres, zero-padded
    skeleton/color_xy (N, T, 2, 25, 2) float32, pixels in the 1920x1080 RGB frame
    skeleton/tracking (N, T, 2, 25) int8
    splits/<protocol>/train, splits/<protocol>/test (n,) int64 indices into samples
    progress/shard_done (num_shards,) uint8, 1 once a shard is written (what makes `extract` resumable)

Per-sample arrays have one chunk per sample and one shard per `shard_size` samples; per-sample 1-D
arrays have one chunk per shard, so each writer task owns whole files. Readers read sample by sample or
by slice: fancy indexing on a sharded array is orders of magnitude slower in zarr 3.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..errors import StoreFormatError

FORMAT = "ntu-prep/1"
MAX_FRAMES = 300
STATUS_CODES = {"ok": 0, "missing_skeleton": 1, "failed": 2}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
META_FIELDS = ("label", "setup", "camera", "performer", "replication")
# Chosen by bench/store_codec.py (figures in the README): 6.7x smaller than raw on real samples and the
# fastest to encode and decode; zstd is 15% smaller but its encoding alone costs more than the whole
# rest of the stage.
CODEC = {"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "shuffle"}


@dataclass(frozen=True)
class SkeletonArray:
    """One per-sample array of the skeleton group: its name, trailing shape and dtype."""

    name: str
    tail: tuple[int, ...]
    dtype: str


SKELETON_ARRAYS = (
    SkeletonArray("joints", (2, 25, 3), "float32"),
    SkeletonArray("motion", (2, 25, 3), "float32"),
    SkeletonArray("color_xy", (2, 25, 2), "float32"),
    SkeletonArray("tracking", (2, 25), "int8"),
)
PER_SHARD_FIELDS = {"num_frames": "int32", "num_bodies": "int16", "status": "int8", "error": str, "note": str}


def compressor() -> BloscCodec:
    return BloscCodec(cname=CODEC["cname"], clevel=CODEC["clevel"], shuffle=CODEC["shuffle"])


def num_shards(num_samples: int, shard_size: int) -> int:
    return -(-num_samples // shard_size)


def create_store(path: Path, names: list[str], meta: dict[str, np.ndarray], shard_size: int,
                 attrs: dict) -> zarr.Group:
    """Create the group with every array, the sample table's fixed columns filled in.

    names: (N,) sorted sample names; meta: META_FIELDS -> (N,) ints; attrs: the run's description.
    The group's `state` attribute is "creating" until everything exists, then "extracting".
    """
    n = len(names)
    # one atomic write of zarr.json with the attributes: a store is recognisably ours from the start
    group = zarr.open_group(str(path), mode="w", zarr_format=3,
                            attributes={**attrs, "format": FORMAT, "state": "creating"})
    samples = group.create_group("samples")
    name_array = samples.create_array("name", shape=(n,), dtype=str, chunks=(max(n, 1),))
    name_array[:] = np.asarray(names, dtype=object)
    for field in META_FIELDS:
        samples.create_array(field, shape=(n,), dtype="int16", chunks=(max(n, 1),))[:] = meta[field]
    for field, dtype in PER_SHARD_FIELDS.items():
        samples.create_array(field, shape=(n,), dtype=dtype, chunks=(shard_size,),
                             fill_value="" if dtype is str else 0)
    skeleton = group.create_group("skeleton")
    for spec in SKELETON_ARRAYS:
        skeleton.create_array(
            spec.name, shape=(n, MAX_FRAMES, *spec.tail), dtype=spec.dtype,
            chunks=(1, MAX_FRAMES, *spec.tail), shards=(shard_size, MAX_FRAMES, *spec.tail),
            compressors=compressor(), fill_value=0,
        )
    group.create_group("splits")
    group.create_group("progress").create_array(
        "shard_done", shape=(num_shards(n, shard_size),), dtype="uint8", chunks=(1,), fill_value=0)
    group.attrs["state"] = "extracting"
    return group


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a prepared store, refusing one of an unknown format."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreFormatError(f"{path}: not a zarr store (no zarr.json)")
    try:
        group = zarr.open_group(str(path), mode=mode, zarr_format=3)
    except Exception as err:  # zarr raises several kinds here; the user needs the path and the cause
        raise StoreFormatError(f"{path}: cannot open as a zarr v3 group: {err}") from err
    found = group.attrs.get("format")
    if found != FORMAT:
        raise StoreFormatError(f"{path}: format {found!r} is not {FORMAT!r}; this ntu-prep cannot read it")
    return group


def read_strings(array: zarr.Array) -> list[str]:
    return [str(s) for s in array[:]]


def read_sample(group: zarr.Group, index: int) -> dict[str, np.ndarray | str | int]:
    """One sample's arrays, trimmed to its frames kept, with its table row. Reads chunks, never fancy."""
    samples = group["samples"]
    n = int(samples["num_frames"][index])
    out: dict[str, np.ndarray | str | int] = {
        "name": str(samples["name"][index]),
        "status": STATUS_NAMES[int(samples["status"][index])],
        "num_frames": n,
    }
    for field in META_FIELDS:
        out[field] = int(samples[field][index])
    for spec in SKELETON_ARRAYS:
        out[spec.name] = group["skeleton"][spec.name][index, :n]
    return out


def status_counts(group: zarr.Group) -> dict[str, int]:
    status = group["samples/status"][:]
    return {name: int((status == code).sum()) for name, code in STATUS_CODES.items()}


def write_split(group: zarr.Group, protocol: str, train: np.ndarray, test: np.ndarray, attrs: dict) -> None:
    """Write splits/<protocol>/{train,test}, replacing an earlier split of that name."""
    split = group.require_group("splits").create_group(protocol, overwrite=True)
    split.attrs.update(attrs)
    for name, idx in (("train", train), ("test", test)):
        split.create_array(name, shape=idx.shape, dtype="int64", chunks=(max(len(idx), 1),))[:] = idx


def split_indices(group: zarr.Group, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    split = group["splits"][protocol]
    return split["train"][:], split["test"][:]


def verify_store(group: zarr.Group) -> list[str]:
    """Integrity problems of a store, [] when none: every array readable, every count consistent."""
    problems: list[str] = []
    attrs = dict(group.attrs)
    if attrs.get("state") != "complete":
        problems.append(f"state is {attrs.get('state')!r}, not 'complete': "
                        "rerun `ntu-prep extract` to finish it")
    samples = group["samples"]
    n = samples["name"].shape[0]
    names = read_strings(samples["name"])
    if names != sorted(names) or len(set(names)) != n:
        problems.append("samples/name is not sorted and unique")
    for key in (*META_FIELDS, *PER_SHARD_FIELDS):
        if samples[key].shape != (n,):
            problems.append(f"samples/{key} has shape {samples[key].shape}, expected ({n},)")
    status = samples["status"][:]
    unknown = set(np.unique(status).tolist()) - set(STATUS_NAMES)
    if unknown:
        problems.append(f"samples/status has unknown codes {sorted(unknown)}")
    counts = status_counts(group)
    if attrs.get("counts") is not None and {k: attrs["counts"].get(k) for k in counts} != counts:
        problems.append(f"attrs counts {attrs['counts']} differ from samples/status {counts}")
    num_frames = samples["num_frames"][:]
    ok = status == STATUS_CODES["ok"]
    if (num_frames[ok] <= 0).any():
        problems.append(f"{int((num_frames[ok] <= 0).sum())} ok samples have no frames")
    if (num_frames > MAX_FRAMES).any() or (num_frames < 0).any():
        problems.append("samples/num_frames outside [0, 300]")
    errors = read_strings(samples["error"])
    failed = np.flatnonzero(status == STATUS_CODES["failed"])
    if any(not errors[i] for i in failed):
        problems.append("a failed sample has no error message")
    shard_size = group["skeleton/joints"].shards[0]
    for spec in SKELETON_ARRAYS:
        array = group["skeleton"][spec.name]
        if array.shape != (n, MAX_FRAMES, *spec.tail):
            problems.append(f"skeleton/{spec.name} has shape {array.shape}")
            continue
        for lo in range(0, n, shard_size):  # by slice, shard by shard
            try:
                block = array[lo:lo + shard_size]
            except Exception as err:  # a corrupt shard: report it, keep checking the rest
                problems.append(f"skeleton/{spec.name} samples {lo}..{lo + shard_size - 1} unreadable: {err}")
                continue
            frames = np.arange(MAX_FRAMES)[None, :] >= num_frames[lo:lo + shard_size, None]
            if np.abs(block[frames]).sum() != 0:
                problems.append(f"skeleton/{spec.name} samples {lo}..: non-zero values past num_frames")
    done = group["progress/shard_done"][:]
    if not done.all():
        problems.append(f"{int((done == 0).sum())} of {len(done)} shards not written")
    for protocol in group["splits"].group_keys():
        train, test = split_indices(group, protocol)
        both = np.concatenate([train, test])
        if len(both) and (both.min() < 0 or both.max() >= n):
            problems.append(f"splits/{protocol} has indices outside [0, {n})")
        if len(np.unique(both)) != len(both):
            problems.append(f"splits/{protocol}: train and test overlap or repeat")
    return problems


def store_size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
