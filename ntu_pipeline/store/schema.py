"""The prepared-dataset store: one zarr v3 group, format "ntu-prep/2" (the README's format table).

Usage:
    group = open_store("ntu60.zarr")                 # refuses a format it does not know
    sample = read_sample(group, 0)                   # dict of arrays, trimmed to the frames kept
    require_complete(group, ("skeleton",))           # IncompleteStoreError while rows are pending,
                                                     # DamagedStoreError for a shard file gone or resized
    require_stages(group, ("rgb",))                  # StoreFormatError naming the fix if it has none

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
Status columns are filled with `Status.PENDING` (store/status.py), so a row no task wrote never reads
as ok. `verify.py` checks a store against what its stages recorded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..errors import IncompleteStoreError, StoreFormatError
from ..sample_id import SampleId
from .files import check_shard_files
from .lock import other_writer
from .status import State, Status, status_counts

FORMAT = "ntu-prep/2"
FORMAT_PREFIX = "ntu-prep/"
MAX_FRAMES = 300
META_FIELDS = ("label", "setup", "camera", "performer", "replication")
# Chosen by bench/store_codec.py (figures in the README): 6.7x smaller than raw on real samples and the
# fastest to encode and decode; zstd is 15% smaller but its encoding alone costs more than the whole
# rest of the stage.
CODEC = {"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "shuffle"}
# What reading a damaged shard through zarr raises: OSError (the file system), ValueError (zarr's shard
# index checksum, a JPEG that does not decode), RuntimeError (blosc's decompression). Anything else is a bug.
SHARD_READ_ERRORS = (OSError, ValueError, RuntimeError)


Layout = Literal["sample", "frame", "table"]
Codec = Literal["blosc", "jpeg"]


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
    layout: Layout = "sample"
    codec: Codec = "blosc"
    fill: object = 0
    quality: int = 90  # of the jpeg codec

    def __post_init__(self):
        if self.layout not in get_args(Layout):
            raise ValueError(f"{self.path}: layout must be one of {get_args(Layout)}, not {self.layout!r}")
        if self.codec not in get_args(Codec):
            raise ValueError(f"{self.path}: codec must be one of {get_args(Codec)}, not {self.codec!r}")
        if self.codec == "jpeg" and (self.layout != "frame" or self.dtype != "uint8"):
            raise ValueError(f"{self.path}: the jpeg codec stores uint8 frames (layout 'frame')")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def sharded(self) -> bool:
        return self.layout != "table"


def status_column(path: str) -> ArraySpec:
    """A stage's status column: int8 `Status` codes, unwritten rows `Status.PENDING`."""
    return ArraySpec(path, (), "int8", "table", fill=int(Status.PENDING))


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

    The folder must be empty. attrs: the run's description. The group's `state` attribute is
    "creating" until the table exists, then "extracting"; stages add their arrays later
    (`create_stage_arrays`).
    """
    n = len(names)
    # one atomic write of zarr.json with the attributes: a store is recognisably ours from the start
    group = zarr.open_group(str(path), mode="a", zarr_format=3,
                            attributes={**attrs, "format": FORMAT, "state": State.CREATING, "stages": {}})
    samples = group.create_group("samples")
    samples.create_array("name", shape=(n,), dtype=str, chunks=(max(n, 1),))[:] = np.asarray(names, object)
    for field, values in meta_columns(names).items():
        samples.create_array(field, shape=(n,), dtype="int16", chunks=(max(n, 1),))[:] = values
    group.create_group("splits")
    group.create_group("progress")
    group.attrs["state"] = State.EXTRACTING
    return group


def create_stage_arrays(group: zarr.Group, specs: tuple[ArraySpec, ...], shard_size: int,
                        done: str, digest: str) -> None:
    """Create a stage's arrays and its progress record (`done` and `digest` paths under the group).

    Any array of those names is replaced: the stage is not recorded yet (the caller records it after
    this), so nothing was written into them, and a kill while they were being made leaves some behind
    that the rerun must be able to make again."""
    n = group["samples/name"].shape[0]
    for spec in specs:
        parent, name = spec.path.rsplit("/", 1)
        sub = group.require_group(parent)
        shape = (n, *spec.tail)
        if spec.layout == "table":
            chunks = (shard_size, *spec.tail)
            sub.create_array(name, shape=shape, dtype=spec.dtype, chunks=chunks, fill_value=spec.fill,
                             overwrite=True)
            continue
        inner = (1, *spec.tail) if spec.layout == "sample" else (1, 1, *spec.tail[1:])
        if spec.codec == "jpeg":
            from .jpeg_codec import JpegCodec

            codecs = {"serializer": JpegCodec(quality=spec.quality), "compressors": None}
        else:
            codecs = {"compressors": compressor()}
        sub.create_array(name, shape=shape, dtype=spec.dtype, chunks=inner, shards=(shard_size, *spec.tail),
                         fill_value=0, overwrite=True, **codecs)
    shards = num_shards(n, shard_size)
    progress = group.require_group("progress")
    # one chunk per shard: parallel writers each mark their own shard, never one shared chunk file
    progress.create_array(done.rsplit("/", 1)[-1], shape=(shards,), dtype="uint8", chunks=(1,), fill_value=0,
                          overwrite=True)
    record = progress.create_array(digest.rsplit("/", 1)[-1], shape=(shards, len(specs)), dtype=str,
                                   chunks=(1, len(specs)), fill_value="", overwrite=True)
    record.attrs["files"] = [spec.path for spec in specs]


def open_store(path: str | Path, mode: str = "r", check: bool = True) -> zarr.Group:
    """Open a prepared store, refusing one of an unknown format, and with `check` one whose attributes
    promise arrays that do not open (a deleted folder or zarr.json: `verify` reports those itself)."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreFormatError(f"{path}: not a zarr store (no zarr.json)")
    try:
        group = zarr.open_group(str(path), mode=mode, zarr_format=3)
    # the file system; zarr's own errors (ValueError: zarr.json not JSON, an array or no group there, a codec
    # it does not know); metadata of the wrong shape (TypeError, AttributeError: zarr.json not an object)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise StoreFormatError(f"{path}: cannot open as a zarr v3 group: {err}") from err
    found = group.attrs.get("format")
    if found == "ntu-prep/1":
        raise StoreFormatError(
            f"{path}: made by an older ntu-prep (format ntu-prep/1, without per-modality tables and "
            f"frame indices); rebuild it: ntu-prep extract --skeletons DIR [--videos DIR] --out {path} "
            "--overwrite")
    if found != FORMAT:
        raise StoreFormatError(f"{path}: format {found!r} is not {FORMAT!r}; this ntu-prep cannot read it")
    missing = missing_arrays(group) if check else []
    if missing:
        listed = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise StoreFormatError(f"{path}: {listed} missing or unreadable; `ntu-prep verify` lists what is "
                               "damaged (rebuild the store with extract --overwrite)")
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


def has_stage(group: zarr.Group, stage: str) -> bool:
    return stage_info(group, stage) is not None


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


def unfinished(group: zarr.Group, stages: tuple[str, ...] | None = None) -> list[str]:
    """Why the store, or the named stages of it (None: all of them), cannot be read yet: one line per
    unfinished stage ([] when all are complete). Stages the store does not have are the caller's."""
    attrs = dict(group.attrs)
    if attrs.get("state") == State.CREATING:
        return ["the store is still being created"]
    recorded = dict(attrs.get("stages", {}))
    out = []
    for name in recorded if stages is None else [s for s in stages if s in recorded]:
        info = recorded[name]
        if info.get("state") != State.COMPLETE:
            counts = status_counts(group[info["status"]][:])
            out.append(f"its {name} stage is unfinished ({counts[Status.PENDING]} of "
                       f"{sum(counts.values())} samples pending)")
    if stages is None and not out and attrs.get("state") != State.COMPLETE:
        out.append(f"the store is not complete (state {attrs.get('state')!r})")
    return out


def require_complete(group: zarr.Group, stages: tuple[str, ...] | None = None) -> None:
    """IncompleteStoreError, in one line naming the fix, unless the stages (None: every stage) are done;
    then DamagedStoreError unless every file their shards wrote is there at its recorded size
    (`files.check_shard_files`: what every consumer checks before reading)."""
    problems = unfinished(group, stages)
    if problems:
        root = Path(group.store.root)
        writer = other_writer(root)
        fix = (f"another ntu-prep is writing it now (pid and task: {writer}): wait for it to finish" if writer
               else "rerun the same `ntu-prep extract` command to finish it")
        raise IncompleteStoreError(f"{root}: {'; '.join(problems)}; {fix}")
    check_shard_files(group, stages)


# What each stage stores, and the `ntu-prep extract` input that adds it to a store (the fix a refusal names).
STAGE_INPUTS = {"skeleton": ("skeletons", "--skeletons DIR"), "rgb": ("RGB frames", "--videos DIR")}


def require_stages(group: zarr.Group, stages: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """StoreFormatError, in one line naming the command that adds it, for the first of `stages` the store
    lacks; then `require_complete` over `stages` and those of `optional` the store has (a reader that
    uses a stage where present, e.g. a preview's skeletons)."""
    root = Path(group.store.root)
    for stage in stages:
        if not has_stage(group, stage):
            what, option = STAGE_INPUTS[stage]
            raise StoreFormatError(f"{root}: the store has no {what}; prepare them with: "
                                   f"ntu-prep extract {option} --out {root}")
    require_complete(group, (*stages, *optional))


def read_sample(group: zarr.Group, index: int) -> dict[str, np.ndarray | str | int]:
    """One sample's skeleton arrays, trimmed to its frames kept, with its table row. Reads chunks only."""
    samples = group["samples"]
    n = int(samples["num_frames"][index])
    out: dict[str, np.ndarray | str | int] = {
        "name": str(samples["name"][index]),
        "status": Status(int(samples["status"][index])).label,
        "num_frames": n,
    }
    for field in META_FIELDS:
        out[field] = int(samples[field][index])
    for spec in SKELETON_ARRAYS:
        out[spec.name] = group[spec.path][index, :n]
    out["frame_index"] = group["skeleton/frame_index"][index, :n]
    return out


def write_split(group: zarr.Group, protocol: str, train: np.ndarray, test: np.ndarray, attrs: dict) -> None:
    """Write splits/<protocol>/{train,test}, replacing an earlier split of that name."""
    split = group.require_group("splits").create_group(protocol, overwrite=True)
    split.attrs.update(attrs)
    for name, idx in (("train", train), ("test", test)):
        split.create_array(name, shape=idx.shape, dtype="int64", chunks=(max(len(idx), 1),))[:] = idx


def split_indices(group: zarr.Group, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    split = group["splits"][protocol]
    return split["train"][:], split["test"][:]


def store_size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
