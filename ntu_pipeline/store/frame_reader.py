"""Read frames of a sharded per-frame array (`rgb/frames`) straight from its shard files, without zarr.

    reader = FrameReader("ntu60.zarr", "rgb/frames")    # reads zarr.json once, checks the layout
    clip = reader.read(i)                               # (T, S, S, 3) uint8, == group["rgb/frames"][i]
    clip = reader.read(i, np.array([0, 8, 8, 3]))       # (4, S, S, 3), == group["rgb/frames"][i][p]

Why: zarr 3.1 reads a clip through its async per-chunk pipeline, about 200 us of Python per inner
chunk on top of the JPEG decode (bench/rgb_loader.py: a training worker reading clips through zarr
delivers about half the clips/s of decoding alone). Here a read costs an open of the shard file, one
pread of the shard index (its crc32c checked, as zarr does), one pread per run of nearby chunks, and one
decode per distinct frame, written straight into the preallocated output.

The layout read, which both the project's shard writer (store/shards.py) and zarr itself write: a zarr
v3 array (N, T, *frame) whose one codec is the sharding codec with its index at the end (little-endian
uint64 (offset, nbytes) per inner chunk in C order of the shard's chunk grid, both 2**64 - 1 for an
absent chunk, then the index's crc32c as uint32), shards of whole samples (k, T, *frame), inner chunks
of one frame (1, 1, *frame), the default "/" chunk key encoding (shard s is the file c/s/0/.../0), and
as inner codecs either the project's JPEG codec (`ntu_prep.jpeg`, decoded with simplejpeg exactly as
JpegCodec decodes) or bytes + blosc (decoded with numcodecs; blosc's threads follow numcodecs's global
settings). Anything else is refused with a StoreFormatError naming the array.

Both writers lay a multi-sample shard's chunks out in Morton order, so one sample's frames lie spread
over most of its shard between other samples' frames (for shards of 16 x 32 frames, 83% of the file):
the chunks needed are read in runs (a chunk at most MAX_GAP bytes after the previous run joins it),
never the whole span. Absent chunks (an all-zero frame, frames past the end of a short video in a
`--frames all` store, a failed sample) read as the fill value (0), exactly as zarr reads them. In an
ntu-prep store the reader knows each shard file's size as its shard recorded it (`files.shard_sizes`):
a file missing or of another size (deleted, truncated, or the store replaced while it is read) is a
DamagedStoreError, never zeros; a missing file reads as zeros only where its shard wrote none, or for an
array no stage recorded (a plain zarr array). A damaged file (index checksum, an entry outside the file,
a chunk that does not decode) is a DamagedStoreError too: one line naming the file and the fix, which
stays one line when raised in a DataLoader worker (`errors.NTUPrepError`).

Processes: a reader keeps no file open between reads (each read opens and closes its shard file) and
pickles as a path and a few numbers, so it can be made in the main process and used in forked or
spawned DataLoader workers.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import google_crc32c
import numcodecs.blosc
import numpy as np
import simplejpeg
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

from ..errors import DamagedStoreError, StoreFormatError
from .files import NONE_WRITTEN, NOT_RECORDED, shard_sizes
from .jpeg_codec import CODEC_NAME, JpegCodec
from .schema import Codec, is_store

EMPTY = np.uint64(2**64 - 1)  # offset and nbytes of an absent chunk in a shard index
INDEX_ENTRY = 16  # bytes per chunk in the index: (offset, nbytes) as two uint64
CHECKSUM = 4  # bytes of the crc32c after the index
BLOSC_HEADER = 16  # bytes: version, version of the codec, flags, typesize, nbytes, blocksize, cbytes
# A chunk starting at most this many bytes after the previous run is read with it: a pread from the
# page cache costs a few microseconds, about what copying 16-32 KiB does. On the real 32 x 256² store
# (bench/rgb_loader.py) any gap from 0 to 64 KiB reads at the same speed; reading the whole span of a
# sample (83% of its shard) is ~10% slower.
MAX_GAP = 32 * 1024


@dataclass(frozen=True)
class FrameLayout:
    """What reading needs of a sharded per-frame array's zarr.json (`frame_layout` checks and makes it).

    folder: the array's directory; shape (N, T, *frame); samples_per_shard k; codec, a `schema.Codec`
    ("jpeg" or "blosc"); dtype (native byte order) and fill_value as zarr reads them. store: the ntu-prep
    store holding the array and sizes (shards,) the bytes its shards recorded per file (NONE_WRITTEN: no
    file), both None for an array outside an ntu-prep store."""

    folder: Path
    shape: tuple[int, ...]
    samples_per_shard: int
    codec: Codec
    dtype: np.dtype
    fill_value: int | float
    store: Path | None = None
    sizes: tuple[int, ...] | None = None

    def damaged(self, path: Path, what: str) -> DamagedStoreError:
        """The error for shard file `path` found damaged (`what`), naming the fix."""
        store = self.store or "STORE"
        return DamagedStoreError(f"{path}: {what}: the file is damaged, or the store was replaced while "
                                 f"being read; run `ntu-prep verify {store}`, then rerun the same "
                                 "`ntu-prep extract` command to rewrite it")

    @property
    def frames(self) -> int:
        return self.shape[1]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def index_nbytes(self) -> int:
        """The bytes of the index at the end of every shard file, its checksum included."""
        return self.samples_per_shard * self.frames * INDEX_ENTRY + CHECKSUM

    def shard_path(self, shard: int) -> Path:
        """The file of shard `shard` (along the first axis) under the default "/" chunk key encoding."""
        return Path(self.folder, "c", str(shard), *(["0"] * (len(self.shape) - 1)))


# --- the layout, from zarr's metadata -----------------------------------------------------------------

def _check_sharding(array: zarr.Array, name: str) -> ShardingCodec:
    """The array's one sharding codec, its index at the end, little-endian, followed by its crc32c."""
    codecs = tuple(array.metadata.codecs)
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        raise StoreFormatError(f"{name}: expected a sharded array (one sharding codec), found {codecs}")
    sharding = codecs[0]
    if sharding.index_location.value != "end":
        raise StoreFormatError(f"{name}: the shard index must be at the end of the shard, found it at the "
                               f"{sharding.index_location.value}")
    index = tuple(sharding.index_codecs)
    if not (len(index) == 2 and isinstance(index[0], BytesCodec) and isinstance(index[1], Crc32cCodec)
            and index[0].endian is not None and index[0].endian.value == "little"):
        raise StoreFormatError(f"{name}: the shard index must be little-endian uint64 followed by its "
                               f"crc32c (index codecs bytes + crc32c), found {index}")
    return sharding


def _check_grid(array: zarr.Array, sharding: ShardingCodec, name: str) -> int:
    """Samples per shard, for shards of whole samples and inner chunks of one frame."""
    shape = tuple(array.shape)
    shards = getattr(array.metadata.chunk_grid, "chunk_shape", None)
    if shards is None:
        raise StoreFormatError(f"{name}: needs a regular chunk grid, found {array.metadata.chunk_grid}")
    frame = (1, 1, *shape[2:])
    if tuple(sharding.chunk_shape) != frame:
        raise StoreFormatError(f"{name}: inner chunks must be one frame {frame}, "
                               f"found {sharding.chunk_shape}")
    if tuple(shards[1:]) != shape[1:]:
        whole = ", ".join(map(str, shape[1:]))
        raise StoreFormatError(f"{name}: shards must hold whole samples (k, {whole}), found {tuple(shards)}")
    return int(shards[0])


def _inner_codec(sharding: ShardingCodec, dtype: np.dtype, name: str) -> Codec:
    """"jpeg" or "blosc", the inner codecs this module decodes; StoreFormatError for any other."""
    inner = tuple(sharding.codecs)
    if len(inner) == 1 and isinstance(inner[0], JpegCodec):
        return "jpeg"
    if len(inner) == 2 and isinstance(inner[0], BytesCodec) and isinstance(inner[1], BloscCodec):
        if dtype.itemsize > 1 and (inner[0].endian is None or inner[0].endian.value != "little"):
            raise StoreFormatError(f"{name}: only little-endian chunks are read, found {inner[0]}")
        return "blosc"
    raise StoreFormatError(f"{name}: inner codecs must be the JPEG codec ({CODEC_NAME}) or bytes + "
                           f"blosc, found {inner}")


def frame_layout(array: zarr.Array, folder: Path) -> FrameLayout:
    """The layout of `array` (N, T, *frame) stored in `folder`. StoreFormatError, naming the array, for
    anything but whole-sample shards of one-frame chunks, index at the end, "/" keys, JPEG or blosc."""
    name = str(folder)
    meta = array.metadata
    if meta.zarr_format != 3:
        raise StoreFormatError(f"{name}: a zarr v3 array is needed, found zarr format {meta.zarr_format}")
    if array.ndim < 3:
        raise StoreFormatError(f"{name}: expected (samples, frames, *frame), found shape {array.shape}")
    if meta.storage_transformers:
        raise StoreFormatError(f"{name}: storage transformers are not read, "
                               f"found {meta.storage_transformers}")
    sharding = _check_sharding(array, name)
    per_shard = _check_grid(array, sharding, name)
    encoding = meta.chunk_key_encoding
    if encoding.name != "default" or getattr(encoding, "separator", None) != "/":
        raise StoreFormatError(f"{name}: needs the default chunk key encoding with '/', found {encoding}")
    dtype = np.dtype(array.dtype)
    codec = _inner_codec(sharding, dtype, name)
    fill = array.fill_value
    return FrameLayout(folder=Path(folder), shape=tuple(array.shape), samples_per_shard=per_shard,
                       codec=codec, dtype=dtype.newbyteorder("="),
                       fill_value=fill.item() if hasattr(fill, "item") else fill)


# --- one shard file -----------------------------------------------------------------------------------

def _pread(fd: int, path: Path, start: int, stop: int, layout: FrameLayout) -> bytes:
    data = os.pread(fd, stop - start, start)
    if len(data) != stop - start:
        raise layout.damaged(path, f"bytes {start}..{stop} asked for, the file ends at {start + len(data)} "
                                   "(truncated while being read?)")
    return data


def read_index(fd: int, path: Path, layout: FrameLayout) -> tuple[np.ndarray, int]:
    """The shard index of the open file `fd` (at `path`), its crc32c checked: (k * T, 2) uint64
    (offset, nbytes) per chunk in C order; and where the chunk data ends (the index's offset)."""
    size = os.fstat(fd).st_size
    if size < layout.index_nbytes:
        raise layout.damaged(path, f"{size} bytes, too short for its shard index of {layout.index_nbytes}")
    data_end = size - layout.index_nbytes
    raw = _pread(fd, path, data_end, size, layout)
    stored, computed = int.from_bytes(raw[-CHECKSUM:], "little"), google_crc32c.value(raw[:-CHECKSUM])
    if stored != computed:
        raise layout.damaged(path, f"shard index checksum mismatch (stored {stored:08x}, computed "
                                   f"{computed:08x})")
    index = np.frombuffer(raw, "<u8", count=(len(raw) - CHECKSUM) // 8)
    return index.reshape(-1, 2), data_end  # (k * T, 2)


def sample_entries(layout: FrameLayout, sample: int) -> np.ndarray:
    """(T, 2) uint64 (offset, nbytes) of sample `sample`'s chunks in its shard file (EMPTY: absent), the
    index's crc32c checked: where a sample's frames lie (tests and bench/rgb_loader.py look at that)."""
    path = layout.shard_path(sample // layout.samples_per_shard)
    fd = os.open(path, os.O_RDONLY)
    try:
        index, _ = read_index(fd, path, layout)
    finally:
        os.close(fd)
    local = sample % layout.samples_per_shard
    return index[local * layout.frames:(local + 1) * layout.frames]


def _present(entries: np.ndarray, data_end: int, path: Path, sample: int, frames: np.ndarray,
             layout: FrameLayout) -> np.ndarray:
    """(m,) bool: which index entries (m, 2) hold a chunk; DamagedStoreError for one outside the data."""
    offsets, sizes = entries[:, 0], entries[:, 1]
    present = offsets != EMPTY
    fits = (sizes > 0) & (sizes <= data_end) & (offsets <= data_end - np.minimum(sizes, data_end))
    outside = present & ~fits
    if outside.any():
        m = int(np.flatnonzero(outside)[0])
        raise layout.damaged(path, f"the index entry of sample {sample} frame {int(frames[m])} (offset "
                                   f"{int(offsets[m])}, {int(sizes[m])} bytes) lies outside the file's "
                                   f"{data_end} bytes of chunks")
    return present


def plan_reads(starts: np.ndarray, stops: np.ndarray, max_gap: int = MAX_GAP) -> list[tuple[int, int, list]]:
    """The reads covering chunks [starts[m], stops[m]) (m,): in file order, a chunk starting at most
    `max_gap` bytes after the previous read's end joins it (0: touching chunks only; -1: one read per
    chunk). Returns (start, stop, members) per read, members indexing `starts`."""
    reads: list[tuple[int, int, list]] = []
    for m in np.argsort(starts, kind="stable").tolist():
        start, stop = int(starts[m]), int(stops[m])
        if reads and start - reads[-1][1] <= max_gap:
            lo, hi, members = reads[-1]
            members.append(m)
            reads[-1] = (lo, max(hi, stop), members)
        else:
            reads.append((start, stop, [m]))
    return reads


def _decode_jpeg(data: memoryview, out: np.ndarray) -> None:
    image = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)  # JpegCodec's decode, in place
    if image.shape != out.shape:
        raise ValueError(f"a {image.shape[0]} x {image.shape[1]} JPEG where frames are {out.shape}")


def _decode_blosc(data: memoryview, out: np.ndarray) -> None:
    nbytes = int.from_bytes(data[4:8], "little")  # blosc's header: 4 bytes, then the decoded size
    if len(data) < BLOSC_HEADER or nbytes != out.nbytes:
        raise ValueError(f"a blosc chunk of {nbytes} bytes where a frame is {out.nbytes}")
    numcodecs.blosc.decompress(data, out)


# one per Codec (the store's codecs): chunk bytes -> decoded into the frame given
DECODERS: dict[Codec, Callable[[memoryview, np.ndarray], None]] = {"jpeg": _decode_jpeg,
                                                                   "blosc": _decode_blosc}


def read_shard_frames(layout: FrameLayout, sample: int, frames: np.ndarray, out: np.ndarray,
                      rows: np.ndarray) -> None:
    """Decode sample `sample`'s frames (m,) into out[rows] (rows (m,) into out (n, *frame)); absent
    chunks, and every frame of a shard file its shard did not write, get the fill value."""
    shard, local = divmod(sample, layout.samples_per_shard)
    path = layout.shard_path(shard)
    want = None if layout.sizes is None else layout.sizes[shard]
    if want == NOT_RECORDED:  # a shard not done: nothing recorded to check against
        want = None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # no chunk of the shard was written: zarr reads the fill value too
        if want is not None and want >= 0:
            raise layout.damaged(path, f"missing, where its shard wrote {want} bytes") from None
        out[rows] = layout.fill_value
        return
    try:
        index, data_end = read_index(fd, path, layout)
        found = data_end + layout.index_nbytes
        if want is not None and found != want:
            raise layout.damaged(path, f"{found} bytes where its shard wrote "
                                       + ("none" if want == NONE_WRITTEN else str(want)))
        entries = index[local * layout.frames + frames]  # (m, 2)
        present = _present(entries, data_end, path, sample, frames, layout)
        out[rows[~present]] = layout.fill_value
        have = np.flatnonzero(present)
        starts = entries[have, 0].astype(np.int64)
        stops = starts + entries[have, 1].astype(np.int64)
        decode = DECODERS[layout.codec]
        for lo, hi, members in plan_reads(starts, stops, MAX_GAP):
            view = memoryview(_pread(fd, path, lo, hi, layout))
            for m in members:
                start, stop, k = int(starts[m]), int(stops[m]), int(have[m])
                try:
                    decode(view[start - lo:stop - lo], out[rows[k]])
                except (ValueError, RuntimeError) as err:
                    where = f"sample {sample} frame {int(frames[k])} (bytes {start}..{stop})"
                    raise layout.damaged(path, f"{where} does not decode: {err}") from err
    finally:
        os.close(fd)


# --- the reader ---------------------------------------------------------------------------------------

def _in_range(index: np.ndarray, size: int, what: str, name: str) -> np.ndarray:
    """Indices (n,) in [-size, size) -> [0, size), as numpy and zarr take them; IndexError otherwise."""
    outside = (index < -size) | (index >= size)
    if outside.any():
        raise IndexError(f"{name}: {what} {int(index[outside][0])} is out of range for {size}")
    return np.where(index < 0, index + size, index)


class FrameReader:
    """Frames of a sharded per-frame array (N, T, *frame), e.g. rgb/frames (N, T, S, S, 3) uint8, read
    as zarr reads them. store: the group's folder; path: the array inside it ("" for an array folder).
    StoreFormatError, naming the array, for a layout it does not read (see the module docstring)."""

    def __init__(self, store: str | Path, path: str = "rgb/frames"):
        folder = Path(store, path)
        try:
            array = zarr.open_array(str(folder), mode="r")  # zarr.json, read once here
        except (FileNotFoundError, zarr.errors.BaseZarrError) as err:
            raise StoreFormatError(f"{folder}: no zarr array there ({err})") from err
        self.layout = frame_layout(array, folder)
        if path and is_store(Path(store)):  # an ntu-prep store: its shards recorded their files' sizes
            sizes = shard_sizes(zarr.open_group(str(store), mode="r"), path)
            if sizes is not None:
                self.layout = replace(self.layout, store=Path(store), sizes=tuple(sizes.tolist()))

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, T, *frame)."""
        return self.layout.shape

    def __len__(self) -> int:
        return self.layout.shape[0]

    def read(self, sample: int, positions: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Sample `sample`'s frames at `positions` (n,) ints in [-T, T), in any order, repeats allowed
        (None: all T): (n, *frame), e.g. (n, S, S, 3) uint8, equal to zarr's `array[sample][positions]`.

        Each distinct frame is decoded once, into `out` when given ((n, *frame), C-contiguous, the
        array's dtype). IndexError for an index out of range; DamagedStoreError, naming the shard file
        and the fix, for a shard file missing or of another size than recorded, or damaged (index
        checksum, an entry outside the file, a chunk that does not decode)."""
        layout = self.layout
        name = str(layout.folder)
        sample = int(_in_range(np.array([operator.index(sample)]), layout.shape[0], "sample", name)[0])
        positions = np.arange(layout.frames) if positions is None else np.asarray(positions)
        if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
            raise TypeError(f"{name}: positions must be a 1-d integer array, found {positions.dtype} "
                            f"{positions.shape}")
        positions = _in_range(positions.astype(np.int64), layout.frames, "frame", name)
        shape = (len(positions), *layout.frame_shape)
        if out is None:
            out = np.empty(shape, layout.dtype)
        elif out.shape != shape or out.dtype != layout.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{name}: out must be C-contiguous {shape} {layout.dtype}, found {out.shape} "
                             f"{out.dtype}")
        if len(positions) == 0:
            return out
        frames, first, inverse = np.unique(positions, return_index=True, return_inverse=True)
        read_shard_frames(layout, sample, frames, out, first)  # each distinct frame once, at its first row
        source = first[inverse.reshape(-1)]  # (n,) the row holding each position's frame
        repeats = np.flatnonzero(source != np.arange(len(positions)))
        if len(repeats):
            out[repeats] = out[source[repeats]]
        return out
