"""A zarr v3 codec storing each (1, ..., 1, H, W, 3) uint8 chunk as one JPEG (libjpeg-turbo via simplejpeg).

Usage:
    codec = JpegCodec(quality=90)                   # 4:2:0 chroma subsampling by default
    array = group.create_array("rgb/frames", shape=(N, 32, 256, 256, 3), dtype="uint8",
                               chunks=(1, 1, 256, 256, 3), shards=(16, 32, 256, 256, 3),
                               serializer=codec, compressors=None, fill_value=0)
    array[0] = clip                                 # (32, 256, 256, 3) uint8
    zarr.open_array(path)[0]                        # in any process: (32, 256, 256, 3) uint8

    # the stage's own shard writer (store/shards.py) encodes chunks without zarr's machinery:
    chunks = [encode_frame_chunk(f, codec) for clip in block for f in clip]  # bytes, or None: all zero
    write_shard_file(root, array, shard, assemble_shard(chunks, shard_grid(array)))  # (16, 32, S, S, 3)

Each chunk is one frame (all axes but the last three of length 1), its bytes a complete JFIF file, so
any JPEG reader can read a frame cut out of a shard at the offset its index gives. zarr.json names the
codec "ntu_prep.jpeg" with its configuration ({"quality": 90, "subsampling": "420"}); the package's
`zarr.codecs` entry point (pyproject.toml) maps that name to this class, so `zarr.open` reads the array
as plain uint8 wherever ntu-prep is installed, without the caller importing it; importing this module
also registers it (for a source checkout that was never installed).

JPEG is lossy: decoded frames differ from what was written (about 41 dB PSNR at quality 90 on real
NTU crops; bench/rgb_codec.py). A chunk equal to the fill value 0 is never encoded: zarr leaves it out
of the shard (write_empty_chunks=False), and `encode_frame_chunk` returns None for it, so both writers
produce the same chunks. Such a frame reads back as exact zeros, not as a JPEG of black.

Every chunk's bytes are identical whichever writer made them, and so are the shard files: both lay a
multi-sample shard's (samples, frames) grid out in Morton order (interleaving samples), so one sample's
frames lie spread over its shard (`frame_reader.py` reads them in runs; tests/test_jpeg_codec.py
compares the writers' bytes).

zarr 3.1's ShardingCodec does not call its inner codecs' `validate`, so inside a shard the inner chunk
shape is checked when a chunk is encoded or decoded; the dtype and the last axis are checked when the
array's metadata is built, sharded or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import simplejpeg
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

CODEC_NAME = "ntu_prep.jpeg"
SUBSAMPLINGS = ("444", "422", "420")
MAX_SIDE = 65535  # a JPEG's height and width are 16-bit


def encode_frame(frame: np.ndarray, quality: int = 90, subsampling: str = "420") -> bytes:
    """(H, W, 3) uint8 RGB -> the bytes of one baseline JPEG (exactly what JpegCodec stores)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, found {frame.shape} {frame.dtype}")
    return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality, colorspace="RGB",
                                  colorsubsampling=subsampling)


def decode_frame(data: bytes | np.ndarray | memoryview) -> np.ndarray:
    """The bytes of one JPEG -> (H, W, 3) uint8 RGB."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def encode_frame_chunk(frame: np.ndarray, codec: JpegCodec) -> bytes | None:
    """One inner chunk's bytes as zarr would write them through `codec`, or None for an all-zero frame
    (zarr leaves a chunk equal to the fill value 0 out of the shard). frame (H, W, 3) uint8."""
    if not frame.any():
        return None
    return encode_frame(frame, codec.quality, codec.subsampling)


def _check_dtype_and_shape(dtype, shape: tuple[int, ...], what: str) -> None:
    """Refuse what one RGB JPEG per chunk cannot store, saying what was found."""
    native = dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else np.dtype(dtype)
    if native != np.uint8:
        raise ValueError(f"{CODEC_NAME}: stores uint8 RGB frames; the array's dtype is {native}")
    if len(shape) < 3 or shape[-1] != 3:
        raise ValueError(f"{CODEC_NAME}: the {what} must end in (H, W, 3) RGB; found {shape}")


def _check_chunk_shape(shape: tuple[int, ...]) -> None:
    _check_dtype_and_shape(np.dtype("uint8"), shape, "chunk shape")
    if any(n != 1 for n in shape[:-3]):
        raise ValueError(f"{CODEC_NAME}: one frame per chunk: the chunk shape must be (1, ..., 1, H, W, 3); "
                         f"found {shape}")
    if not (1 <= shape[-3] <= MAX_SIDE and 1 <= shape[-2] <= MAX_SIDE):
        raise ValueError(f"{CODEC_NAME}: a JPEG is 1..{MAX_SIDE} pixels a side; the chunk shape is {shape}")


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Array -> bytes codec: each chunk (1, ..., 1, H, W, 3) uint8 is one RGB JPEG.

    quality: libjpeg quality 1-100; subsampling: chroma subsampling "420" (default), "422" or "444".
    """

    is_fixed_size = False

    quality: int = 90
    subsampling: str = "420"

    def __post_init__(self) -> None:
        if type(self.quality) is not int or not 1 <= self.quality <= 100:
            raise ValueError(f"{CODEC_NAME}: quality must be an integer 1..100, got {self.quality!r}")
        if self.subsampling not in SUBSAMPLINGS:
            raise ValueError(f"{CODEC_NAME}: subsampling must be one of {SUBSAMPLINGS}, "
                             f"got {self.subsampling!r}")

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        configuration = {"quality": self.quality, "subsampling": self.subsampling}
        return {"name": CODEC_NAME, "configuration": configuration}

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        # Called with the array's shape at the top level and with the inner chunk's inside a shard: only
        # what holds for both can be checked here.
        _check_dtype_and_shape(array_spec.dtype, array_spec.shape, "array shape")
        return self

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar],
                 chunk_grid: ChunkGrid) -> None:
        _check_dtype_and_shape(dtype, shape, "array shape")
        chunk_shape = getattr(chunk_grid, "chunk_shape", None)
        if chunk_shape is None:
            raise ValueError(f"{CODEC_NAME}: needs a regular chunk grid, found {chunk_grid}")
        _check_chunk_shape(tuple(chunk_shape))

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        _check_chunk_shape(chunk_spec.shape)
        frame = np.asarray(chunk_array.as_numpy_array()).reshape(chunk_spec.shape[-3:])  # (H, W, 3)
        return chunk_spec.prototype.buffer.from_bytes(encode_frame(frame, self.quality, self.subsampling))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        _check_chunk_shape(chunk_spec.shape)
        frame = decode_frame(chunk_bytes.as_numpy_array())  # (H, W, 3)
        if frame.shape != chunk_spec.shape[-3:]:
            raise ValueError(f"{CODEC_NAME}: a stored JPEG is {frame.shape[:2]} pixels, the chunk shape "
                             f"{chunk_spec.shape} expects {chunk_spec.shape[-3:-1]}")
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(frame.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"{CODEC_NAME}: a JPEG's size depends on the image")


# The entry point (pyproject.toml) finds the class in a process that never imports this module; an
# explicit registration makes it work from a source checkout too. Both register the same class under
# the same key, so zarr never has to choose.
register_codec(CODEC_NAME, JpegCodec)
