"""Export a whole store to one HDF5 file: every array and group under the same names, with its attributes.

Usage:
    ntu-prep export ntu60.zarr --format hdf5 -o ntu60.h5 [--no-rgb]
    write_hdf5(ExportConfig(store=Path("ntu60.zarr"), out=Path("ntu60.h5"), format="hdf5"))

    with h5py.File("ntu60.h5") as f:                      # no ntu-prep needed to read it
        joints = f["skeleton/joints"][i]                   # (300, 2, 25, 3) float32, one chunk
        names = f["samples/name"].asstr()[:]
        attrs = python_attrs(f.attrs)                      # the store's attributes, JSON decoded

The zarr group is walked, not listed: whatever arrays a store holds (skeleton/*, rgb/*, samples/*,
splits/*, progress/*) come along. Per-sample arrays (first axis = samples, two or more axes, 1 KiB or
more a sample) get one sample per HDF5 chunk; tables get chunks of about 64 KiB (`h5_layout`). Strings are
variable-length UTF-8. Attributes HDF5 cannot hold (lists, dicts, None) are stored as JSON strings and
their names listed in the `json_attrs` attribute of the same object; `python_attrs` decodes them. The
file's attributes are the store's plus `export` (JSON): the store it came from, its format, the ntu-prep
version and the options. `--no-rgb` leaves out `rgb/frames` (the decoded frames: most of the size);
the other rgb/* arrays are still copied.

Compression: gzip level 1 with HDF5's byte shuffle. `bench/export_memory.py` on 4,000 synthetic samples
(5 skeleton arrays and the tables, 1,894 MiB decoded; the zarr store itself, blosc lz4, is 545 MiB), two
runs on this project's 2-core shared VM (times wander by up to 2x between runs):

    codec            size MiB  write s (run 1, run 2)  read skeleton/joints samples/s (run 1, run 2)
    none               1894.8     37.3   6.0                   9288  34360
    lzf+shuffle         540.4     68.5  11.8                    570   2765
    gzip1+shuffle       494.4     38.7  17.9                   1437   3009
    gzip4+shuffle       484.1     43.2  19.9                    819   1595

gzip1 is 9% smaller than lzf, reads as fast or faster, writes within the noise of it, and every HDF5
reader has it (lzf is h5py's own filter); gzip4 saves 2% more for slower writes and reads. Arrays are
copied block by block (at most a shard of the store and BLOCK_BYTES at a time), so memory stays bounded
by a block.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping

import h5py
import numpy as np
import zarr

from ..errors import NTUPrepError
from ..progress import ProgressBar
from .common import (
    BLOCK_BYTES,
    ExportConfig,
    ExportSummary,
    atomic_output,
    export_record,
    open_for_export,
    read_rows,
)

COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
SAMPLE_CHUNK_MIN_BYTES = 1024  # skeleton/frame_index (1.2 KB a sample) and up: one sample per chunk
TABLE_CHUNK_BYTES = 64 * 1024
JSON_ATTRS = "json_attrs"
RGB_FRAMES = "rgb/frames"


def walk(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Group | zarr.Array]]:
    """(path, node) for every group and array under `group`, parents before children, by name."""
    for name, node in sorted(group.members(), key=lambda item: item[0]):
        path = f"{prefix}{name}"
        yield path, node
        if isinstance(node, zarr.Group):
            yield from walk(node, f"{path}/")


def h5_attrs(attrs: Mapping) -> dict:
    """Attributes as HDF5 can hold them: str, bool, int, float as they are, the rest as JSON strings."""
    out, encoded = {}, []
    for key, value in attrs.items():
        if isinstance(value, str | float | bool) or (isinstance(value, int) and -2**63 <= value < 2**63):
            out[key] = value
        else:
            out[key] = json.dumps(value)
            encoded.append(key)
    if encoded:
        out[JSON_ATTRS] = json.dumps(sorted(encoded))
    return out


def python_attrs(attrs: Mapping) -> dict:
    """The inverse of `h5_attrs`, for an h5py object's `.attrs`: plain Python values."""
    encoded = set(json.loads(attrs[JSON_ATTRS])) if JSON_ATTRS in attrs else set()
    out = {}
    for key, value in attrs.items():
        if key == JSON_ATTRS:
            continue
        value = value.item() if isinstance(value, np.generic) else value
        out[key] = json.loads(value) if key in encoded else value
    return out


def is_string(array: zarr.Array) -> bool:
    return array.dtype.kind in "OTU"


def row_bytes(array: zarr.Array) -> int:
    """Bytes of one entry along the first axis (variable-length strings count as 16)."""
    return int(np.prod(array.shape[1:], dtype=np.int64)) * max(array.dtype.itemsize, 1)


def h5_layout(array: zarr.Array, num_samples: int) -> dict:
    """create_dataset keywords, compressed; none for an empty or 0-d array.

    Per-sample arrays (first axis = samples, two or more axes) get one sample per chunk, which is how a
    loader reads them; those whose samples are tiny (rgb/crop_box: 16 bytes) and 1-D tables get chunks
    of about TABLE_CHUNK_BYTES instead, as one-sample chunks of a few bytes cost more to index than hold.
    """
    shape = array.shape
    if not shape or not all(shape):
        return {}
    row = row_bytes(array)
    if len(shape) >= 2 and shape[0] == num_samples and row >= SAMPLE_CHUNK_MIN_BYTES:
        first = 1
    else:
        first = min(shape[0], max(1, TABLE_CHUNK_BYTES // row))
    return {"chunks": (first, *shape[1:]), **COMPRESSION}


def block_rows(array: zarr.Array) -> int:
    """Rows per copy step: the store's shard (or chunk) length, at most BLOCK_BYTES of it."""
    along = (array.shards or array.chunks)[0] if array.ndim else 1
    return max(1, min(along, BLOCK_BYTES // row_bytes(array)))


def copy_array(array: zarr.Array, target: h5py.Group, name: str, num_samples: int,
               advance, check=lambda: None) -> h5py.Dataset:
    """Copy one zarr array into `target[name]`, block by block; returns the dataset. `check()` runs
    after each block (GuardedFile.check: stop once a write failed)."""
    dtype = h5py.string_dtype("utf-8") if is_string(array) else array.dtype
    dataset = target.create_dataset(name, shape=array.shape, dtype=dtype, **h5_layout(array, num_samples))
    dataset.attrs.update(h5_attrs(array.attrs))
    if array.ndim == 0:
        value = array[()]
        dataset[()] = str(value) if is_string(array) else value
        return dataset
    step = block_rows(array)
    for lo in range(0, array.shape[0], step):
        block = read_rows(array, lo, lo + step)
        dataset[lo:lo + len(block)] = np.asarray(block, dtype=object) if is_string(array) else block
        advance(len(block))
        check()
    return dataset


class GuardedFile(io.FileIO):
    """The file HDF5 writes through (h5py's fileobj driver), keeping the first OS error instead of
    passing it on.

    HDF5 does not survive a failed write: every later flush fails again, h5py reports each failure as an
    'Exception ignored' traceback while objects are freed, and the interpreter crashes at exit. So a
    write the OS refuses (a full disk, a file-size limit) is remembered in `error` and pretended done;
    the copy stops at the next block, HDF5 closes its file normally, and the caller raises the error.
    """

    error: OSError | None = None

    def write(self, data) -> int:
        if self.error is None:
            try:
                return super().write(data)
            except OSError as err:
                self.error = err
        return len(memoryview(data))

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return super().truncate(size)
            except OSError as err:
                self.error = err
        return self.tell() if size is None else size

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def write_hdf5(config: ExportConfig) -> ExportSummary:
    """Copy `config.store` into the HDF5 file `config.out`; see the module docstring."""
    started = time.monotonic()
    group = open_for_export(config.store)
    num_samples = group["samples/name"].shape[0]
    nodes = list(walk(group))
    skipped = [path for path, node in nodes if path == RGB_FRAMES and not config.rgb]
    arrays = [(path, node) for path, node in nodes if isinstance(node, zarr.Array) and path not in skipped]
    total_rows = sum(node.shape[0] if node.ndim else 1 for _, node in arrays)
    record = export_record(group, config, left_out_arrays=skipped)

    try:
        with atomic_output(config.out, config.overwrite) as tmp, GuardedFile(tmp, "w+") as raw, \
                h5py.File(raw, "w") as f, ProgressBar(total_rows, "rows", "export hdf5",
                                                      enabled=config.progress) as bar:
            f.attrs.update(h5_attrs({**dict(group.attrs), "export": record}))
            for path, node in nodes:
                if path in skipped:
                    continue
                if isinstance(node, zarr.Group):
                    f.create_group(path).attrs.update(h5_attrs(node.attrs))
                else:
                    parent, _, name = path.rpartition("/")
                    copy_array(node, f[parent] if parent else f, name, num_samples, bar.advance, raw.check)
            f.close()
            raw.check()  # the writes of the close itself
    except OSError as err:  # the file system refused (full, over a size limit): one line, nothing left
        reason = err.strerror or str(err)
        raise NTUPrepError(f"{config.out}: cannot write the HDF5 file: {reason}") from None
    what = f"{num_samples} samples, {len(arrays)} arrays"
    return ExportSummary("hdf5", {config.out: what}, left_out=[(p, "--no-rgb") for p in skipped],
                         seconds=time.monotonic() - started)
