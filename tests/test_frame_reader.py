"""FrameReader reads rgb/frames straight from the shard files: every read is checked against zarr's own
read of the same array (`array[i]`, `array[i, p]`), on stores made by the real pipeline (JPEG, lz4,
`--frames all`), on arrays written by zarr itself (its Morton layout), and on the real videos."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ShardingCodec

import ntu_pipeline.store.frame_reader as frame_reader
from ntu_pipeline.errors import StoreFormatError
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import STATUS_CODES, open_store
from ntu_pipeline.store.frame_reader import EMPTY, FrameReader, plan_reads, sample_entries
from ntu_pipeline.store.jpeg_codec import JpegCodec
from ntu_pipeline.synth.corpus import write_corpus

SAMPLES, PER_SHARD = 6, 4  # two shards, the last one partial
FAILED = 1  # the sample whose video is broken: every chunk absent


def make_store(corpus: Path, out: Path, **options) -> Path:
    extract(ExtractConfig(videos=corpus, out=out, dataset="ntu60", rgb_shard_size=PER_SHARD, progress=False,
                          **{"rgb_frames": 8, "rgb_size": 32, **options}), say=lambda _: None)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six synthetic samples with videos; the second one's video cut short inside its first frames."""
    root = tmp_path_factory.mktemp("frame_reader_raw")
    write_corpus(root, SAMPLES, 2, seed=5, videos=True)
    videos = sorted(root.rglob("*_rgb.avi"))
    videos[FAILED].write_bytes(videos[FAILED].read_bytes()[:2000])
    return root


STORES = {"jpeg": {}, "lz4": {"rgb_codec": "lz4"}, "all": {"rgb_frames": None, "rgb_size": 24}}


@pytest.fixture(scope="module")
def stores(corpus, tmp_path_factory):
    """kind -> the store of that kind ("jpeg", "lz4", or "all": `--frames all`), made on first use."""
    root = tmp_path_factory.mktemp("frame_reader_stores")
    made: dict[str, Path] = {}

    def store(kind: str) -> Path:
        if kind not in made:
            made[kind] = make_store(corpus, root / f"{kind}.zarr", **STORES[kind])
        return made[kind]
    return store


def frames_of(store: Path) -> zarr.Array:
    return open_store(store)["rgb/frames"]


def interleaved(entries: np.ndarray) -> bool:
    """Whether other bytes lie between a sample's chunks (its (T, 2) entries) in the shard file."""
    present = entries[entries[:, 0] != EMPTY].astype(np.int64)
    present = present[np.argsort(present[:, 0])]
    return bool((present[1:, 0] != present[:-1].sum(axis=1)).any())


@pytest.mark.parametrize("codec", ["jpeg", "lz4"])
def test_pipeline_stores_read_as_zarr_reads_them(stores, codec):
    """Catches a chunk looked up at the wrong index entry (the wrong local sample or frame row, the
    partial last shard), reliance on a sample's chunks lying together (the stage's writer interleaves
    samples in Morton order, as zarr does), frames decoded in another colour order, and a failed
    sample not reading as zeros."""
    array = frames_of(stores(codec))
    reader = FrameReader(stores(codec), "rgb/frames")
    assert reader.shape == array.shape == (SAMPLES, 8, 32, 32, 3) and len(reader) == SAMPLES
    assert reader.layout.codec == {"jpeg": "jpeg", "lz4": "blosc"}[codec]
    assert interleaved(sample_entries(reader.layout, 0)), "the stage's shards interleave samples"
    status = open_store(stores(codec))["rgb/status"][:]
    assert status[FAILED] == STATUS_CODES["failed"] and (status != STATUS_CODES["failed"]).sum() == 5
    for i in range(SAMPLES):
        clip = reader.read(i)
        np.testing.assert_array_equal(clip, array[i], err_msg=f"sample {i}")
        assert clip.any() == (i != FAILED)
        p = np.array([1, 4, 7])
        np.testing.assert_array_equal(reader.read(i, p), array[i, p], err_msg=f"sample {i} at {p}")


def test_frames_past_a_videos_end_read_as_zeros(stores):
    """`--frames all`: catches an absent chunk (index entry 2**64 - 1) read as if present, or left as
    whatever the output buffer held instead of zeros (the buffer given here is full of 255)."""
    store = stores("all")
    array = frames_of(store)
    reader = FrameReader(store)
    frame_index = open_store(store)["rgb/frame_index"][:]
    assert reader.shape[1] == 300
    for i in range(SAMPLES):
        stored = int((frame_index[i] >= 0).sum())
        assert stored < 300
        assert (sample_entries(reader.layout, i)[stored:] == EMPTY).all()
        p = np.array([0, max(stored - 1, 0), stored, stored + 1, 299])
        out = np.full((len(p), 24, 24, 3), 255, np.uint8)
        assert reader.read(i, p, out=out) is out
        np.testing.assert_array_equal(out, array[i, p], err_msg=f"sample {i}")
        assert not out[2:].any()
        assert out[0].any() == (i != FAILED)


def test_repeated_and_unsorted_positions_decode_each_frame_once(stores, monkeypatch):
    """Catches rows returned in sorted rather than requested order, a repeat copied from the wrong row,
    negative positions misread, and a frame decoded once per repeat instead of once."""
    store = stores("jpeg")
    array, reader = frames_of(store), FrameReader(store)
    calls = []
    decode = frame_reader.DECODERS["jpeg"]
    monkeypatch.setitem(frame_reader.DECODERS, "jpeg", lambda data, out: calls.append(1) or decode(data, out))
    p = np.array([5, 0, 5, 2, 7, 0, -1, 3])
    for i in (0, 3, 5):
        calls.clear()
        clip = reader.read(i, p)
        np.testing.assert_array_equal(clip, array[i][p], err_msg=f"sample {i}")
        np.testing.assert_array_equal(clip, array[i, p], err_msg=f"sample {i}")
        assert len(calls) == 5, "5 distinct frames, each decoded once"
        assert not np.array_equal(clip[0], clip[1])


def test_out_of_range_and_malformed_requests_are_refused(stores):
    """Catches an index past the end read from the next sample's rows (or a neighbouring shard)."""
    reader = FrameReader(stores("jpeg"))
    with pytest.raises(IndexError, match="sample 6"):
        reader.read(SAMPLES)
    with pytest.raises(IndexError, match="frame 8"):
        reader.read(0, np.array([0, 8]))
    with pytest.raises(TypeError, match="integer"):
        reader.read(0, np.array([0.5]))
    with pytest.raises(ValueError, match="C-contiguous"):
        reader.read(0, np.array([0]), out=np.zeros((2, 32, 32, 3), np.uint8))
    assert reader.read(0, np.array([], np.int64)).shape == (0, 32, 32, 3)


def zarr_array(folder: Path, codec: str, n: int = 10, t: int = 6,
               side: int = 16) -> tuple[zarr.Array, np.ndarray]:
    """An array written by zarr itself, shards of 4 samples: shard 1 all zero (no file), shard 2 partial;
    a zero frame and a zero sample inside shard 0. Returns the array and what was written."""
    codecs = {"jpeg": {"serializer": JpegCodec(quality=85), "compressors": None},
              "blosc": {"compressors": BloscCodec(cname="lz4", shuffle="bitshuffle")}}[codec]
    array = zarr.create_array(str(folder), shape=(n, t, side, side, 3), dtype="uint8", fill_value=0,
                              chunks=(1, 1, side, side, 3), shards=(4, t, side, side, 3), **codecs)
    y, x = np.mgrid[0:side, 0:side]
    data = np.zeros(array.shape, np.uint8)
    for i in range(n):
        for k in range(t):
            data[i, k] = (np.stack([x * 9 + 20 * k, y * 11 + 7 * i, (x + y) * 5], -1) % 256).astype(np.uint8)
    data[1, 2] = 0
    data[3] = 0
    data[4:8] = 0
    array[:] = data
    return array, data


@pytest.mark.parametrize("codec", ["jpeg", "blosc"])
@pytest.mark.parametrize("max_gap", [-1, frame_reader.MAX_GAP, 2**40])
def test_arrays_written_by_zarr_itself(tmp_path, codec, max_gap, monkeypatch):
    """zarr's Morton layout read chunk by chunk (max_gap -1), in runs (the default) and as one span: catches
    a chunk cut out of a merged read at the wrong place, a sample assumed contiguous, and a missing shard
    file (zarr writes none for an all-zero shard) raising instead of reading zeros."""
    monkeypatch.setattr(frame_reader, "MAX_GAP", max_gap)
    array, data = zarr_array(tmp_path / "z.zarr", codec)
    reader = FrameReader(tmp_path / "z.zarr", "")
    assert not reader.layout.shard_path(1).exists() and reader.layout.shard_path(2).exists()
    assert interleaved(sample_entries(reader.layout, 0)), "zarr's shards interleave samples"
    rng = np.random.default_rng(0)
    for i in range(array.shape[0]):
        np.testing.assert_array_equal(reader.read(i), array[i], err_msg=f"sample {i}")
        p = rng.integers(-6, 6, 9)
        np.testing.assert_array_equal(reader.read(i, p), array[i, p], err_msg=f"sample {i} at {p}")
    if codec == "blosc":
        np.testing.assert_array_equal(np.stack([reader.read(i) for i in range(array.shape[0])]), data)


def test_plan_reads_joins_only_near_neighbours():
    """Catches a plan that reads a whole shard span for scattered chunks, or loses a chunk."""
    starts, stops = np.array([100, 0, 40, 5000]), np.array([140, 30, 100, 5100])
    plan = plan_reads(starts, stops, max_gap=20)
    assert [(lo, hi, sorted(m)) for lo, hi, m in plan] == [(0, 140, [0, 1, 2]), (5000, 5100, [3])]
    touching = [(lo, hi) for lo, hi, _ in plan_reads(starts, stops, max_gap=0)]
    assert touching == [(0, 30), (40, 140), (5000, 5100)]
    assert len(plan_reads(starts, stops, max_gap=-1)) == 4


def copy_store(store: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / store.name
    shutil.copytree(store, copy)
    return copy, FrameReader(copy).layout.shard_path(0)


def test_a_damaged_index_is_refused_naming_the_shard_file(stores, tmp_path):
    """Catches an index used without its crc32c checked (garbage offsets decoded as frames), a file
    too short for its index read from a negative offset, an entry pointing past the chunk data, and a
    chunk that does not decode reported without its file."""
    store, shard = copy_store(stores("jpeg"), tmp_path)
    good = shard.read_bytes()
    damaged = bytearray(good)
    damaged[-30] ^= 0x01  # inside the index
    shard.write_bytes(bytes(damaged))
    with pytest.raises(StoreFormatError, match=rf"{shard}: shard index checksum mismatch"):
        FrameReader(store).read(0)
    with pytest.raises(Exception, match="checksum"):  # zarr refuses it too
        frames_of(store)[0]

    shard.write_bytes(good[:100])
    with pytest.raises(StoreFormatError, match=rf"{shard}: 100 bytes, too short"):
        FrameReader(store).read(2)

    layout = FrameReader(store).layout
    index = np.frombuffer(good[-layout.index_nbytes:-4], "<u8").reshape(-1, 2).copy()
    index[0] = (len(good), 10)  # past the end of the chunks, with a valid checksum
    body = index.astype("<u8").tobytes()
    crc = google_crc32c.value(body).to_bytes(4, "little")
    shard.write_bytes(good[:-layout.index_nbytes] + body + crc)
    with pytest.raises(StoreFormatError, match=rf"{shard}: the index entry of sample 0 frame 0.*outside"):
        FrameReader(store).read(0)

    offset = int(np.frombuffer(good[-layout.index_nbytes:-4], "<u8").reshape(-1, 2)[1, 0])
    broken = bytearray(good)
    broken[offset:offset + 4] = b"\0\0\0\0"  # the JPEG of sample 0 frame 1 loses its start marker
    shard.write_bytes(bytes(broken))
    with pytest.raises(StoreFormatError, match=rf"{shard}: sample 0 frame 1 .* does not decode"):
        FrameReader(store).read(0)


def refused_arrays(root: Path) -> dict[str, tuple[str, str]]:
    """Arrays of layouts the reader must refuse: name -> (array folder, what the message says)."""
    shape, frame, shards = (4, 3, 8, 8, 3), (1, 1, 8, 8, 3), (2, 3, 8, 8, 3)
    blosc = BloscCodec(cname="lz4")
    dots = {"name": "default", "separator": "."}
    made = {
        "unsharded": ({"chunks": frame, "compressors": blosc}, "expected a sharded array"),
        "two frames a chunk": ({"chunks": (1, 2, 8, 8, 3), "shards": (2, 4, 8, 8, 3), "compressors": blosc,
                                "shape": (4, 4, 8, 8, 3)}, "inner chunks must be one frame"),
        "shards split the frames": ({"chunks": frame, "shards": (2, 1, 8, 8, 3), "compressors": blosc},
                                    "shards must hold whole samples"),
        "index at the start": ({"chunks": shards, "compressors": None, "serializer": ShardingCodec(
            chunk_shape=frame, codecs=[BytesCodec(), blosc], index_location="start")}, "at the end"),
        "index without checksum": ({"chunks": shards, "compressors": None, "serializer": ShardingCodec(
            chunk_shape=frame, codecs=[BytesCodec(), blosc], index_codecs=[BytesCodec()])}, "crc32c"),
        "dot chunk keys": ({"chunks": frame, "shards": shards, "compressors": blosc,
                            "chunk_key_encoding": dots}, "chunk key encoding"),
        "gzip": ({"chunks": frame, "shards": shards, "compressors": GzipCodec()}, "inner codecs"),
        "zarr's default zstd": ({"chunks": frame, "shards": shards}, "inner codecs"),
        "zarr v2": ({"chunks": frame, "zarr_format": 2}, "zarr v3"),
    }
    out = {}
    for name, (options, message) in made.items():
        folder = root / name.replace(" ", "_")
        zarr.create_array(str(folder), **{"shape": shape, "dtype": "uint8", **options})
        out[name] = (str(folder), message)
    return out


def test_unsupported_layouts_are_refused_naming_the_array(tmp_path):
    """Catches a layout read as if it were ours: '.' chunk keys would read every frame as zeros (no
    file where the reader looks), an index at the start would be read from the end, gzip or zstd chunks
    handed to blosc, chunks of two frames cut as one."""
    for name, (folder, message) in refused_arrays(tmp_path).items():
        with pytest.raises(StoreFormatError, match=message) as caught:
            FrameReader(folder, "")
        assert folder in str(caught.value), name
    with pytest.raises(StoreFormatError, match="no zarr array"):
        FrameReader(tmp_path, "nothing/here")


def _read_in_child(reader: FrameReader, sample: int) -> bytes:
    return reader.read(sample).tobytes()


def test_a_reader_made_here_works_in_forked_and_spawned_workers(stores):
    """Catches a reader that keeps files open (leaked descriptors, a handle shared across fork) or
    holds state that does not pickle for a spawned DataLoader worker."""
    store = stores("lz4")
    reader = FrameReader(store)
    expected = [frames_of(store)[i].tobytes() for i in range(SAMPLES)]
    open_before = len(os.listdir("/proc/self/fd"))
    assert [reader.read(i).tobytes() for i in range(SAMPLES)] == expected
    assert len(os.listdir("/proc/self/fd")) == open_before, "no file left open between reads"
    assert pickle.loads(pickle.dumps(reader)).read(2).tobytes() == expected[2]
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            got = pool.starmap(_read_in_child, [(reader, i) for i in range(SAMPLES)])
        assert got == expected, method


@pytest.mark.slow
def test_real_videos_read_as_zarr_reads_them(ntu_samples, tmp_path):
    """Conformance on the two real videos (an H.264 re-encode and a DIVX original), stored by the stage
    in one shard of Morton-interleaved JPEG chunks: catches anything the synthetic frames do not show
    (real chunk sizes, real JPEG content)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for video in sorted((ntu_samples / "videos").glob("*_rgb.avi")):
        (raw / video.name).symlink_to(video)
    store = tmp_path / "real.zarr"
    extract(ExtractConfig(videos=raw, out=store, dataset="ntu120", rgb_frames=16, rgb_size=64,
                          progress=False), say=lambda _: None)
    array, reader = frames_of(store), FrameReader(store)
    assert reader.layout.samples_per_shard == 16 and len(reader) == 2
    rng = np.random.default_rng(1)
    for i in range(2):
        clip = reader.read(i)
        assert clip.any()
        np.testing.assert_array_equal(clip, array[i])
        p = rng.integers(0, 16, 12)
        np.testing.assert_array_equal(reader.read(i, p), array[i, p])


def test_every_codec_of_the_store_has_a_decoder():
    """The reader's codecs are the store's (`schema.Codec`): catches a codec added to the store that the
    reader would only meet as a KeyError in a training worker."""
    from typing import get_args

    from ntu_pipeline.store.schema import Codec

    assert set(frame_reader.DECODERS) == set(get_args(Codec))
