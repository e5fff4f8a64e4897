"""The prepared-dataset store: one zarr v3 group, format "ntu-prep/2" (the README's format table).

Usage:
    group = open_store("ntu60.zarr")                 # refuses a format it does not know
    sample = read_sample(group, 0)                   # dict of arrays, trimmed to the frames kept
    problems = verify_store(group)                   # [] when the store is sound

Layout (N samples, the union of every input's sample names):
    samples/name (N,) str, sorted; samples/label, setup, camera, performer, replication (N,) int16
    and, per stage, the arrays it declares (`ArraySpec`): the skeleton stage's table keeps the /1 names
    (samples/status, error, note, num_frames, num_bodies), its arrays are skeleton/*; the RGB stage's
    are rgb/*. Each stage's options, input and bookkeeping are in attrs["stages"][name], and its
    progress in progress/<done> (1 once a shard is written) and progress/<digest> (size and crc32c of
    every file the shard wrote, which is how `verify` finds a deleted or damaged file).

Per-sample arrays are sharded, `shard_size` samples per shard, one chunk per sample (or per frame);
per-sample tables have one chunk per shard, so each writer task owns whole files. Readers read sample
by sample or by slice: fancy indexing on a sharded array is orders of magnitude slower in zarr 3.1.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..errors import StoreFormatError
from ..sample_id import SampleId
from .shards import file_digest, shard_path

FORMAT = "ntu-prep/2"
FORMAT_PREFIX = "ntu-prep/"
MAX_FRAMES = 300
STATUS_CODES = {"ok": 0, "missing_skeleton": 1, "failed": 2, "absent": 3}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
META_FIELDS = ("label", "setup", "camera", "performer", "replication")
# Chosen by bench/store_codec.py (figures in the README): 6.7x smaller than raw on real samples and the
# fastest to encode and decode; zstd is 15% smaller but its encoding alone costs more than the whole
# rest of the stage.
CODEC = {"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "shuffle"}


@dataclass(frozen=True)
class ArraySpec:
    """One per-sample array a stage writes: path in the group, per-sample shape, dtype, layout.

    layout: "sample" (sharded, one chunk per sample), "frame" (sharded, one chunk per frame along the
    first per-sample axis) or "table" (one chunk per shard, written through zarr).
    codec: "blosc" (CODEC) or "jpeg" (per-frame uint8 RGB, `jpeg_codec.JpegCodec`) for sharded arrays.
    """

    path: str
    tail: tuple[int, ...]
    dtype: object
    layout: str = "sample"
    codec: str = "blosc"
    fill: object = 0
    quality: int = 90  # of the jpeg codec

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def sharded(self) -> bool:
        return self.layout != "table"


# The skeleton stage's arrays (kept here as well as in the stage: `read_sample` and the README need them).
SKELETON_ARRAYS = (
    ArraySpec("skeleton/joints", (MAX_FRAMES, 2, 25, 3), "float32"),
    ArraySpec("skeleton/motion", (MAX_FRAMES, 2, 25, 3), "float32"),
    ArraySpec("skeleton/color_xy", (MAX_FRAMES, 2, 25, 2), "float32"),
    ArraySpec("skeleton/tracking", (MAX_FRAMES, 2, 25), "int8"),
)


def compressor() -> BloscCodec:
    return BloscCodec(cname=CODEC["cname"], clevel=CODEC["clevel"], shuffle=CODEC["shuffle"])


def num_shards(num_samples: int, shard_size: int) -> int:
    return -(-num_samples // shard_size)


def meta_columns(names: list[str]) -> dict[str, np.ndarray]:
    """META_FIELDS -> (N,) int16, computed from the sample names (what `verify` checks them against)."""
    ids = [SampleId.parse(n) for n in names]
    return {f: np.array([getattr(s, f) for s in ids], dtype="int16") for f in META_FIELDS}


def clear_store_folder(path: Path) -> None:
    """Empty a store's folder (the caller checked that it is a store, `is_store`)."""
    for child in Path(path).iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def create_store(path: Path, names: list[str], attrs: dict) -> zarr.Group:
    """Create the group and its sample table (names and the columns derived from them).

    The folder must be empty but for the lock file. attrs: the run's description. The group's `state`
    attribute is "creating" until the table exists, then "extracting"; stages add their arrays later
    (`create_stage_arrays`).
    """
    n = len(names)
    # one atomic write of zarr.json with the attributes: a store is recognisably ours from the start
    group = zarr.open_group(str(path), mode="a", zarr_format=3,
                            attributes={**attrs, "format": FORMAT, "state": "creating", "stages": {}})
    samples = group.create_group("samples")
    samples.create_array("name", shape=(n,), dtype=str, chunks=(max(n, 1),))[:] = np.asarray(names, object)
    for field, values in meta_columns(names).items():
        samples.create_array(field, shape=(n,), dtype="int16", chunks=(max(n, 1),))[:] = values
    group.create_group("splits")
    group.create_group("progress")
    group.attrs["state"] = "extracting"
    return group


def create_stage_arrays(group: zarr.Group, specs: tuple[ArraySpec, ...], shard_size: int,
                        done: str, digest: str) -> None:
    """Create a stage's arrays and its progress record (`done` and `digest` paths under the group)."""
    n = group["samples/name"].shape[0]
    for spec in specs:
        parent, name = spec.path.rsplit("/", 1)
        sub = group.require_group(parent)
        shape = (n, *spec.tail)
        if spec.layout == "table":
            chunks = (shard_size, *spec.tail)
            sub.create_array(name, shape=shape, dtype=spec.dtype, chunks=chunks, fill_value=spec.fill)
            continue
        inner = (1, *spec.tail) if spec.layout == "sample" else (1, 1, *spec.tail[1:])
        if spec.codec == "jpeg":
            from .jpeg_codec import JpegCodec

            codecs = {"serializer": JpegCodec(quality=spec.quality), "compressors": None}
        else:
            codecs = {"compressors": compressor()}
        sub.create_array(name, shape=shape, dtype=spec.dtype, chunks=inner, shards=(shard_size, *spec.tail),
                         fill_value=0, **codecs)
    shards = num_shards(n, shard_size)
    progress = group.require_group("progress")
    # one chunk per shard: parallel writers each mark their own shard, never one shared chunk file
    progress.create_array(done.rsplit("/", 1)[-1], shape=(shards,), dtype="uint8", chunks=(1,), fill_value=0)
    record = progress.create_array(digest.rsplit("/", 1)[-1], shape=(shards, len(specs)), dtype=str,
                                   chunks=(1, len(specs)), fill_value="")
    record.attrs["files"] = [spec.path for spec in specs]


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
    if found == "ntu-prep/1":
        raise StoreFormatError(
            f"{path}: made by an older ntu-prep (format ntu-prep/1, without per-modality tables and "
            f"frame indices); rebuild it: ntu-prep extract --skeletons DIR [--videos DIR] --out {path} "
            "--overwrite")
    if found != FORMAT:
        raise StoreFormatError(f"{path}: format {found!r} is not {FORMAT!r}; this ntu-prep cannot read it")
    return group


def is_store(path: Path) -> bool:
    """Whether `path` holds an ntu-prep store of any version (the only folders --overwrite replaces)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return str(meta.get("attributes", {}).get("format", "")).startswith(FORMAT_PREFIX)


def read_strings(array: zarr.Array) -> list[str]:
    return [str(s) for s in array[:]]


def stage_info(group: zarr.Group, stage: str) -> dict | None:
    return dict(group.attrs.get("stages", {})).get(stage)


def read_sample(group: zarr.Group, index: int) -> dict[str, np.ndarray | str | int]:
    """One sample's skeleton arrays, trimmed to its frames kept, with its table row. Reads chunks only."""
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
        out[spec.name] = group[spec.path][index, :n]
    out["frame_index"] = group["skeleton/frame_index"][index, :n]
    return out


def status_counts(group: zarr.Group, column: str = "samples/status") -> dict[str, int]:
    status = group[column][:]
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


def missing_arrays(group: zarr.Group) -> list[str]:
    """The arrays the store's attributes promise that do not open (a deleted folder or zarr.json)."""
    def opens(path: str) -> bool:
        try:
            group[path]
        except (KeyError, ValueError, OSError):
            return False
        return True

    expected = ["samples/name", *(f"samples/{field}" for field in META_FIELDS)]
    for info in dict(group.attrs).get("stages", {}).values():
        expected += [info["done"], info["digest"], info["status"], info["error"], info["note"]]
        if opens(info["digest"]):
            expected += group[info["digest"]].attrs["files"]
    return [path for path in dict.fromkeys(expected) if not opens(path)]


def verify_store(group: zarr.Group, deep: bool = False,
                 advance: Callable[[int], None] | None = None) -> list[str]:
    """Integrity problems of a store, [] when none.

    Checks the sample table against the names, each stage's status table, and every file each done
    shard wrote against its recorded size and crc32c (a deleted shard otherwise reads as zeros). With
    `deep`, also decodes every shard and checks the skeleton padding. `advance(k)` reports progress in
    shards.
    """
    missing = missing_arrays(group)
    if missing:  # nothing else can be checked reliably
        return [f"{path}: array missing or its zarr.json unreadable; rebuild the store (extract --overwrite)"
                for path in missing]
    problems: list[str] = []
    attrs = dict(group.attrs)
    if attrs.get("state") != "complete":
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
    unknown = set(np.unique(status).tolist()) - set(STATUS_NAMES)
    if unknown:
        problems.append(f"{info['status']} has unknown codes {sorted(unknown)}")
    counts = {name: int((status == code).sum()) for name, code in STATUS_CODES.items()}
    if info.get("counts") is not None and info["counts"] != counts:
        problems.append(f"{stage}: recorded counts {info['counts']} differ from {info['status']} {counts}")
    errors = read_strings(group[info["error"]])
    if any(not errors[i] for i in np.flatnonzero(status == STATUS_CODES["failed"])):
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
        ok = status == STATUS_CODES["ok"]
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
        except Exception as err:  # a corrupt shard: report it, keep checking the rest
            problems.append(f"{path} {_range(lo, hi)} unreadable: {err}")
            continue
        if stage == "skeleton" and path in {s.path for s in SKELETON_ARRAYS}:
            num_frames = group["samples/num_frames"][lo:hi]
            past = np.arange(MAX_FRAMES)[None, :] >= num_frames[:, None]
            if np.abs(block[past]).sum() != 0:
                problems.append(f"{path} {_range(lo, hi)}: non-zero values past num_frames")
    return problems


def store_size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
