"""Write one whole shard of a sharded zarr v3 array, encoding it here instead of through zarr.

    write_whole_shard(store_root, group["skeleton/joints"], shard=3, block=joints)  # (S, 300, 2, 25, 3)

    # or chunk by chunk, as the stage does (one small padded buffer, no shard-sized block):
    encoder = chunk_encoder(array)
    chunks = [encode_chunk(encoder, sample) for sample in samples]
    write_shard_file(store_root, array, 3, assemble_shard(chunks, shard_grid(array)))

Why: zarr 3.1's shard writer spends about 350 us of Python per inner chunk (its async codec pipeline),
~1 ms per sample for the skeleton arrays, which is most of the whole stage's budget (bench/store_codec.py
and bench/skeleton_stage.py measure it). The bytes written are exactly what zarr writes for the same
data (tests/test_shards.py compares them), so zarr reads the result natively.

The format (zarr v3 sharding codec, index at the end): the encoded inner chunks one after another in
Morton order (for a chunk grid that varies along the first axis only, plain order), then the index,
an array (chunk grid of the shard..., 2) of little-endian uint64 (offset, nbytes), both 2**64 - 1 for
a chunk left out, followed by the crc32c of the index as little-endian uint32. A chunk equal to the
fill value is left out (zarr's write_empty_chunks=False), and a shard with no chunk is no file at all.
"""

from __future__ import annotations

from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec
from zarr.core.indexing import morton_order_iter  # zarr's own order of chunks in a shard

from ..atomic import atomic_write_bytes
from ..errors import StoreWriteError

EMPTY = np.uint64(2**64 - 1)


def chunk_encoder(array: zarr.Array) -> numcodecs.Blosc:
    """The numcodecs Blosc that zarr itself would use for this array's inner chunks."""
    (sharding,) = array.metadata.codecs
    if not isinstance(sharding, ShardingCodec):
        raise ValueError(f"{array.path}: not a sharded array")
    inner = sharding.codecs
    if len(inner) != 2 or not isinstance(inner[0], BytesCodec) or not isinstance(inner[1], BloscCodec):
        raise ValueError(f"{array.path}: expected inner codecs bytes + blosc, found {inner}")
    if sharding.index_location.value != "end":
        raise ValueError(f"{array.path}: shard index must be at the end")
    blosc = inner[1]
    shuffle = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
               "bitshuffle": numcodecs.Blosc.BITSHUFFLE}[blosc.shuffle.value]
    return numcodecs.Blosc(cname=blosc.cname.value, clevel=blosc.clevel, shuffle=shuffle,
                           blocksize=blosc.blocksize, typesize=array.dtype.itemsize)


def encode_chunk(encoder: numcodecs.Blosc, chunk: np.ndarray) -> bytes | None:
    """One inner chunk's bytes, or None for a chunk equal to the fill value 0 (zarr leaves it out)."""
    if not chunk.any():
        return None
    return encoder.encode(np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("<")))


def assemble_shard(chunks: list[bytes | None], grid: int | tuple[int, ...]) -> bytes | None:
    """The bytes of a shard from its encoded inner chunks (None: the chunk is left out).

    chunks: in C order over the shard's chunk grid `grid` (an int for a grid along the first axis
    only); it may be shorter than the grid (the last shard of an array). The chunks are laid out in
    Morton order, as zarr does, and the index is in C order. None when every chunk is left out.
    """
    grid = (grid,) if isinstance(grid, int) else tuple(grid)
    index = np.full((*grid, 2), EMPTY, dtype="<u8")
    flat = index.reshape(-1, 2)
    parts, offset = [], 0
    for coords in morton_order_iter(grid):
        i = int(np.ravel_multi_index(coords, grid))
        data = chunks[i] if i < len(chunks) else None
        if data is None:
            continue
        parts.append(data)
        flat[i] = (offset, len(data))
        offset += len(data)
    if not parts:
        return None
    index_bytes = index.tobytes()
    checksum = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
    return b"".join([*parts, index_bytes, checksum])


def encode_shard(block: np.ndarray, chunks_per_shard: int, encoder: numcodecs.Blosc) -> bytes | None:
    """The bytes of a shard whose inner chunks are block[0], block[1], ...; block (k, *chunk_shape).

    A chunk equal to the fill value 0 is left out."""
    return assemble_shard([encode_chunk(encoder, b) for b in block], chunks_per_shard)


def shard_path(store_root: Path, array: zarr.Array, shard: int) -> Path:
    """The file of shard `shard` (along the first axis) under the default "/" chunk key encoding."""
    encoding = array.metadata.chunk_key_encoding
    if getattr(encoding, "separator", "/") != "/" or encoding.name != "default":
        raise ValueError(f"{array.path}: unsupported chunk key encoding {encoding}")
    return Path(store_root, array.path, "c", str(shard), *(["0"] * (array.ndim - 1)))


def shard_grid(array: zarr.Array) -> tuple[int, ...]:
    """The chunk grid of one shard: (samples per shard, chunks per sample along the other axes)."""
    return tuple(s // c for s, c in zip(array.shards, array.chunks, strict=True))


def check_layout(array: zarr.Array) -> None:
    """Refuse an array this module cannot write: whole samples per shard, fill value 0."""
    if array.chunks[0] != 1 or array.shards[1:] != array.shape[1:]:
        raise ValueError(f"{array.path}: expected one sample per chunk row and whole samples per shard")
    if array.fill_value != 0:
        raise ValueError(f"{array.path}: fill value must be 0")


def bytes_digest(data: bytes | None) -> str:
    """What the progress record keeps of a file's bytes: "size:crc32c", or "-" for no file (None)."""
    return "-" if data is None else f"{len(data)}:{google_crc32c.value(data):08x}"


def file_digest(path: Path) -> str:
    """`bytes_digest` of the file at `path` as it is on disk ("-" when there is none)."""
    try:
        return bytes_digest(path.read_bytes())
    except FileNotFoundError:
        return "-"


def write_shard_file(store_root: Path, array: zarr.Array, shard: int, data: bytes | None) -> str:
    """Write shard `shard`'s bytes atomically (as zarr's own writes are), or remove it when None; returns
    their `bytes_digest` (what was written, without reading it back).

    An OSError is re-raised naming the file (`[Errno 27] File too large` alone says nothing)."""
    path = shard_path(store_root, array, shard)
    try:
        if data is None:
            path.unlink(missing_ok=True)
            return bytes_digest(None)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return bytes_digest(data)
    except OSError as err:
        reason = err.strerror or str(err)
        raise StoreWriteError(f"{path}: cannot write shard {shard} of {array.path}: {reason}") from err


def write_whole_shard(store_root: Path, array: zarr.Array, shard: int, block: np.ndarray) -> None:
    """Write (or remove, when all empty) shard `shard` of `array`; block as in encode_shard."""
    check_layout(array)
    write_shard_file(store_root, array, shard, encode_shard(block, array.shards[0], chunk_encoder(array)))
