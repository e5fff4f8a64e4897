"""Our whole-shard writer produces exactly the bytes zarr writes, and zarr reads them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from ntu_pipeline.store.shards import shard_path, write_whole_shard


def make_array(root: Path, name: str, dtype: str, tail: tuple[int, ...], codec: BloscCodec, n=10, per=4):
    group = zarr.open_group(str(root), mode="a", zarr_format=3)
    return group.create_array(name, shape=(n, *tail), dtype=dtype, chunks=(1, *tail), shards=(per, *tail),
                              compressors=codec, fill_value=0)


def sample_block(rng, k, tail, dtype):
    block = (rng.standard_normal((k, *tail)) * 50).astype(dtype)
    block[1] = 0  # an empty chunk: left out of the shard
    block[:, tail[0] // 2:] = 0  # zero padding, as in the store
    return block


@pytest.mark.parametrize("dtype,tail", [("float32", (30, 2, 25, 3)), ("int8", (30, 2, 25))])
@pytest.mark.parametrize("cname,shuffle", [("lz4", "shuffle"), ("zstd", "bitshuffle")])
def test_bytes_equal_zarrs_own_writer(tmp_path, dtype, tail, cname, shuffle):
    rng = np.random.default_rng(0)
    codec = BloscCodec(cname=cname, clevel=5, shuffle=shuffle)
    ours = make_array(tmp_path / "ours.zarr", "x", dtype, tail, codec)
    theirs = make_array(tmp_path / "theirs.zarr", "x", dtype, tail, codec)
    for shard, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 10)]):  # the last shard is short
        block = sample_block(rng, hi - lo, tail, dtype)
        write_whole_shard(tmp_path / "ours.zarr", ours, shard, block)
        theirs[lo:hi] = block
        ours_bytes = shard_path(tmp_path / "ours.zarr", ours, shard).read_bytes()
        theirs_bytes = shard_path(tmp_path / "theirs.zarr", theirs, shard).read_bytes()
        assert ours_bytes == theirs_bytes, f"shard {shard} differs"
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours.zarr" / "x"))[:], theirs[:])


def test_an_all_empty_shard_is_no_file(tmp_path):
    codec = BloscCodec(cname="lz4", shuffle="shuffle")
    array = make_array(tmp_path / "s.zarr", "x", "float32", (4, 3), codec)
    write_whole_shard(tmp_path / "s.zarr", array, 0, np.ones((4, 4, 3), "float32"))
    assert shard_path(tmp_path / "s.zarr", array, 0).exists()
    write_whole_shard(tmp_path / "s.zarr", array, 0, np.zeros((4, 4, 3), "float32"))
    assert not shard_path(tmp_path / "s.zarr", array, 0).exists()
    assert not zarr.open_array(str(tmp_path / "s.zarr" / "x"))[:].any()


def test_per_frame_chunks_are_laid_out_in_zarrs_morton_order(tmp_path):
    """A shard of (samples x frames) chunks, as rgb/frames has: the same bytes as zarr's writer."""
    from ntu_pipeline.store.shards import assemble_shard, chunk_encoder, encode_chunk, shard_grid

    codec = BloscCodec(cname="lz4", shuffle="shuffle")
    tail = (5, 6, 6, 3)  # frames, height, width, channels
    arrays = []
    for name in ("ours", "theirs"):
        group = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="a", zarr_format=3)
        arrays.append(group.create_array("x", shape=(6, *tail), dtype="uint8", chunks=(1, 1, 6, 6, 3),
                                         shards=(3, *tail), compressors=codec, fill_value=0))
    ours, theirs = arrays
    block = np.random.default_rng(1).integers(1, 255, (3, *tail), dtype=np.uint8)
    block[1, 2] = 0  # a frame left out
    theirs[0:3] = block
    encoder = chunk_encoder(ours)
    chunks = [encode_chunk(encoder, frame) for sample in block for frame in sample]  # C order
    assert shard_grid(ours) == (3, 5, 1, 1, 1)
    data = assemble_shard(chunks, shard_grid(ours))
    assert data == shard_path(tmp_path / "theirs.zarr", theirs, 0).read_bytes()
