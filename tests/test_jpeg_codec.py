"""The JPEG codec of rgb/frames: a zarr v3 codec any process reads through the entry point, and the bytes
the stage's own shard writer makes from `encode_frame` are the bytes zarr writes through the codec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from ntu_pipeline.store.jpeg_codec import JpegCodec, decode_frame, encode_frame, encode_frame_chunk
from ntu_pipeline.store.shards import EMPTY, assemble_shard, shard_grid, shard_path, write_shard_file

T, H, W = 4, 48, 64  # frames per sample, frame size (not square: height and width must not be swapped)


def clips(n: int, seed: int = 0) -> np.ndarray:
    """(n, T, H, W, 3) uint8: smooth moving colour gradients and a disc, as a camera would see."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    out = np.zeros((n, T, H, W, 3), np.uint8)
    for i in range(n):
        for t in range(T):
            a, b, c = rng.uniform(0, 2 * np.pi, 3)
            waves = [np.sin(x / 15 + a + t), np.cos(y / 12 + b), np.sin((x + y) / 20 + c)]
            base = 128 + 60 * np.stack(waves, -1)  # (H, W, 3)
            disc = (x - 20 - 3 * t) ** 2 + (y - 24) ** 2 < 81
            base[disc] = (230, 40, 30)
            out[i, t] = base.clip(0, 255).astype(np.uint8)
    return out


def make_array(root: Path, n: int, per: int, codec: JpegCodec | None = None) -> zarr.Array:
    return zarr.create_array(str(root), shape=(n, T, H, W, 3), dtype="uint8", chunks=(1, 1, H, W, 3),
                             shards=(per, T, H, W, 3), serializer=codec or JpegCodec(), compressors=None,
                             fill_value=0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_round_trip_through_zarr_is_close_and_empty_frames_stay_exact(tmp_path):
    data = clips(3)
    data[1, 2] = 0  # an empty (padding) frame
    array = make_array(tmp_path / "a.zarr", 3, 2)
    array[:] = data
    back = zarr.open_array(str(tmp_path / "a.zarr"))[:]
    assert back.dtype == np.uint8 and back.shape == data.shape
    assert psnr(back, data) > 28  # saturated red edges on small frames are 4:2:0's worst case
    assert not back[1, 2].any(), "a zero frame is not stored, it reads back as exact zeros"
    for i, t in np.ndindex(3, T):
        if (i, t) != (1, 2):
            np.testing.assert_array_equal(back[i, t], decode_frame(encode_frame(data[i, t])))


def test_metadata_names_the_codec_and_its_configuration(tmp_path):
    make_array(tmp_path / "a.zarr", 2, 2, JpegCodec(quality=95, subsampling="444"))
    (sharding,) = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())["codecs"]
    assert sharding["configuration"]["codecs"] == [
        {"name": "ntu_prep.jpeg", "configuration": {"quality": 95, "subsampling": "444"}}]
    codec = JpegCodec(quality=70)
    assert JpegCodec.from_dict(codec.to_dict()) == codec
    assert JpegCodec.from_dict({"name": "ntu_prep.jpeg"}) == JpegCodec()


def test_a_fresh_process_reads_plain_uint8_through_the_entry_point(tmp_path):
    data = clips(2)
    make_array(tmp_path / "a.zarr", 2, 2)[:] = data
    here = zarr.open_array(str(tmp_path / "a.zarr"))[:]
    script = (
        "import sys, numpy as np, zarr\n"
        "assert not any(m.startswith('ntu_pipeline') for m in sys.modules)\n"
        f"a = zarr.open({str(tmp_path / 'a.zarr')!r}, mode='r')\n"
        f"np.save({str(tmp_path / 'x.npy')!r}, a[:])\n"
        "print(type(a).__name__, a.dtype, type(a.metadata.codecs[0].codecs[0]).__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Array", "uint8", "ntu_pipeline.store.jpeg_codec"]
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), here)


def test_what_one_jpeg_per_chunk_cannot_store_is_refused(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        zarr.create_array(str(tmp_path / "f.zarr"), shape=(2, T, H, W, 3), dtype="float32",
                          chunks=(1, 1, H, W, 3), shards=(2, T, H, W, 3), serializer=JpegCodec(),
                          compressors=None)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        zarr.create_array(str(tmp_path / "c.zarr"), shape=(2, T, H, W, 4), dtype="uint8",
                          chunks=(1, 1, H, W, 4), serializer=JpegCodec(), compressors=None)
    with pytest.raises(ValueError, match="one frame per chunk"):
        zarr.create_array(str(tmp_path / "u.zarr"), shape=(2, T, H, W, 3), dtype="uint8",
                          chunks=(1, 2, H, W, 3), serializer=JpegCodec(), compressors=None)
    # inside a shard zarr does not validate inner codecs: the first write says it
    array = zarr.create_array(str(tmp_path / "s.zarr"), shape=(2, T, H, W, 3), dtype="uint8",
                              chunks=(1, 2, H, W, 3), shards=(2, T, H, W, 3), serializer=JpegCodec(),
                              compressors=None)
    with pytest.raises(ValueError, match=r"one frame per chunk.*\(1, 2, 48, 64, 3\)"):
        array[:] = clips(2)
    with pytest.raises(ValueError, match="quality"):
        JpegCodec(quality=101)
    with pytest.raises(ValueError, match="subsampling"):
        JpegCodec(subsampling="411")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encode_frame(np.zeros((H, W), np.uint8))


def chunk_slices(shard: bytes, count: int) -> list[bytes | None]:
    """The inner chunks' bytes cut out of a shard file by its index, in C order of the chunk grid."""
    index = np.frombuffer(shard[-(16 * count + 4):-4], "<u8").reshape(count, 2)
    return [None if offset == EMPTY else shard[offset:offset + size] for offset, size in index]


def test_a_one_sample_shard_is_byte_identical_to_zarrs(tmp_path):
    data = clips(3, seed=1)
    data[1, 3] = 0
    theirs = make_array(tmp_path / "theirs.zarr", 3, 1)
    ours = make_array(tmp_path / "ours.zarr", 3, 1)
    theirs[:] = data
    for s in range(3):
        chunks = [encode_frame_chunk(frame, JpegCodec()) for frame in data[s]]
        write_shard_file(tmp_path / "ours.zarr", ours, s, assemble_shard(chunks, T))
        ours_bytes = shard_path(tmp_path / "ours.zarr", ours, s).read_bytes()
        assert ours_bytes == shard_path(tmp_path / "theirs.zarr", theirs, s).read_bytes(), f"shard {s}"
        assert chunk_slices(ours_bytes, T) == chunks
        assert (chunks[3] is None) == (s == 1), "the empty frame is left out"


def test_a_several_sample_shard_is_byte_identical_to_zarrs(tmp_path):
    """zarr lays the inner chunks of a (samples, frames) grid out in Morton order, interleaving samples;
    `assemble_shard` given the shard's chunk grid does the same, so the files are identical."""
    per, n = 3, 5  # the last shard is short
    data = clips(n, seed=2)
    data[1, 0] = 0
    data[4] = 0  # a whole empty sample
    theirs = make_array(tmp_path / "theirs.zarr", n, per)
    ours = make_array(tmp_path / "ours.zarr", n, per)
    theirs[:] = data
    for s, lo in enumerate(range(0, n, per)):
        block = data[lo:lo + per]
        chunks = [encode_frame_chunk(frame, JpegCodec()) for frame in block.reshape(-1, H, W, 3)]
        write_shard_file(tmp_path / "ours.zarr", ours, s, assemble_shard(chunks, shard_grid(ours)))
        ours_bytes = shard_path(tmp_path / "ours.zarr", ours, s).read_bytes()
        assert ours_bytes == shard_path(tmp_path / "theirs.zarr", theirs, s).read_bytes(), f"shard {s}"
        assert chunk_slices(ours_bytes, per * T) == chunks + [None] * (per * T - len(chunks))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours.zarr"))[:], theirs[:])


def test_real_frames_keep_their_detail(ntu_samples):
    import av
    import cv2

    with av.open(str(ntu_samples / "videos" / "S004C002P003R002A046_rgb.avi")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")  # (1080, 1920, 3)
    crop = cv2.resize(frame[260:900, 610:1250], (256, 256), interpolation=cv2.INTER_AREA)
    data = encode_frame(crop, 90)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "a complete JFIF file"
    assert psnr(decode_frame(data), crop) > 36
    assert len(data) < crop.nbytes / 8
