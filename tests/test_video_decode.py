"""decode_clip on synthetic MPEG-4 and H.264 videos: the frames it stores, bad inputs, damaged streams."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from video_files import (
    WHOLE,
    H,
    W,
    assert_names_file,
    chunk_spans,
    frame_image,
    numbers,
    overwrite,
    plain_crops,
    write_video,
)

from ntu_pipeline.errors import VideoDecodeError
from ntu_pipeline.video.decode import _gop_needed, decode_clip
from ntu_pipeline.video.pixels import crop_frame, snap_box
from ntu_pipeline.video.timeline import sample_indices


def write_with_garbage(path: Path, good: int, bad: int) -> Path:
    """An MPEG-4 AVI of `good` real frames, then `bad` packets of random bytes."""
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=30, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, 30)
        for k in range(good):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(k), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        rng = np.random.default_rng(0)
        for k in range(bad):
            packet = av.Packet(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
            packet.stream = stream
            packet.pts = packet.dts = good + k
            packet.time_base = stream.time_base
            container.mux(packet)
    return path


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


CODECS = ["mpeg4", pytest.param("libx264", marks=pytest.mark.skipif(
    not has_encoder("libx264"), reason="this PyAV build has no libx264 encoder"))]


# ---------------------------------------------------------------- decode_clip on synthetic videos


@pytest.mark.parametrize("codec", CODECS)
def test_decode_clip_stores_the_frames_it_says(tmp_path, codec):
    path = write_video(tmp_path / "v.avi", 100, codec)
    clip = decode_clip(path, WHOLE, size=64, frames=8, box_frame_size=(W, H))
    assert clip.frames.shape == (8, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.frame_index.dtype == np.int32
    assert np.array_equal(clip.frame_index, sample_indices(100, 8))
    assert numbers(clip) == clip.frame_index.tolist()
    assert clip.num_source_frames == 100 and clip.header_frames == 100
    assert clip.note == ""


@pytest.mark.parametrize("codec", CODECS)
def test_decode_clip_every_frame(tmp_path, codec):
    path = write_video(tmp_path / "v.avi", 40, codec)
    clip = decode_clip(path, WHOLE, size=32, frames=None, box_frame_size=(W, H))
    assert clip.frames.shape == (40, 32, 32, 3)
    assert numbers(clip) == list(range(40)) == clip.frame_index.tolist()


def test_decode_clip_every_frame_stops_at_300(tmp_path):
    path = write_video(tmp_path / "v.avi", 310, gop=50)
    clip = decode_clip(path, WHOLE, size=32, frames=None, box_frame_size=(W, H))
    assert clip.frames.shape == (300, 32, 32, 3) and clip.num_source_frames == 310
    assert numbers(clip) == [k % 256 for k in range(300)] and "first 300" in clip.note


def test_gop_skip_decodes_only_up_to_the_last_wanted_frame_of_each_gop():
    class Packet:
        def __init__(self, key):
            self.is_keyframe = key

    packets = [Packet(k % 12 == 0) for k in range(40)]
    needed = _gop_needed(packets, np.array([1, 30]))
    assert np.flatnonzero(needed).tolist() == [0, 1] + list(range(24, 31))


def test_gop_skip_gives_the_frames_of_a_full_decode(tmp_path):
    path = write_video(tmp_path / "v.avi", 120, "mpeg4")
    clip = decode_clip(path, np.array([8, 4, 72, 60]), size=32, frames=5, box_frame_size=(W, H))
    index = clip.frame_index.tolist()
    full, count = plain_crops(path, index, lambda f: crop_frame(f, snap_box(clip.box), 32))
    assert np.array_equal(clip.frames, full) and count == clip.num_source_frames == 120


@pytest.mark.parametrize("codec", CODECS)
def test_decode_clip_shorter_than_t_repeats_and_says_so(tmp_path, codec):
    path = write_video(tmp_path / "v.avi", 5, codec)
    clip = decode_clip(path, WHOLE, size=32, frames=12, box_frame_size=(W, H))
    assert clip.frames.shape == (12, 32, 32, 3)
    assert np.array_equal(clip.frame_index, sample_indices(5, 12))
    assert numbers(clip) == clip.frame_index.tolist()
    assert clip.num_source_frames == 5 and "repeated" in clip.note


def test_decode_clip_scales_the_box_to_a_resized_video(tmp_path):
    size = (192, 108)  # a mirror at 1/10 of 1920x1080
    with av.open(str(tmp_path / "v.avi"), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=30, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        img = np.zeros((108, 192, 3), np.uint8)
        img[:, 100:] = 255  # white from x = 100 (x = 1000 at colour-camera scale)
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    white = decode_clip(tmp_path / "v.avi", np.array([1040, 200, 1840, 1000]), size=16, frames=2)
    black = decode_clip(tmp_path / "v.avi", np.array([80, 200, 880, 1000]), size=16, frames=2)
    assert np.array_equal(white.box, [104, 20, 184, 100]) and white.video_size == size
    assert white.frames.min() >= 240 and black.frames.max() <= 15


def test_decode_clip_without_a_box_uses_the_fallback_and_says_so(tmp_path):
    path = write_video(tmp_path / "v.avi", 10, size=(128, 64))
    clip = decode_clip(path, None, size=32, frames=4, box_frame_size=(128, 64))
    assert np.array_equal(clip.box, [32, 0, 96, 64]) and "fallback_crop_box" in clip.note


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("keep", [0.24, 0.32, 0.45, 0.57, 0.6])
def test_truncated_file_is_sampled_over_the_frames_it_holds(tmp_path, codec, keep):
    """Cut the bytes: the count comes from the content, and every stored frame is the one it says.

    (With B-frames, a cut can drop frames shown just before the last ones decoded; those are dropped.)
    """
    path = write_video(tmp_path / "v.avi", 60, codec)
    data = path.read_bytes()
    movi = data.index(b"movi")  # the frames follow the (padded) header
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: movi + int((len(data) - movi) * keep)])
    clip = decode_clip(cut, WHOLE, size=32, frames=16, box_frame_size=(W, H))
    n = clip.num_source_frames
    assert 0 < n < 60 and clip.header_frames == 60
    assert f"declares 60 frames, the stream holds {n}" in clip.note
    assert np.array_equal(clip.frame_index, sample_indices(n, 16))
    assert numbers(clip) == clip.frame_index.tolist()


def test_missing_header_count_is_not_needed(tmp_path):
    path = write_video(tmp_path / "v.m4v", 30, fmt="m4v")  # a raw MPEG-4 stream declares no count
    clip = decode_clip(path, WHOLE, size=32, frames=8, box_frame_size=(W, H))
    assert clip.header_frames == 0 and clip.num_source_frames == 30
    assert numbers(clip) == sample_indices(30, 8).tolist()


# ---------------------------------------------------------------- bad inputs



def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty_rgb.avi"
    path.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty file") as e:
        decode_clip(path, None)
    assert_names_file(e.value, path)


def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="cannot be opened") as e:
        decode_clip(tmp_path / "nothing.avi", None)
    assert_names_file(e.value, tmp_path / "nothing.avi")


def test_not_a_video(tmp_path):
    path = tmp_path / "text_rgb.avi"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match="cannot be opened") as e:
        decode_clip(path, None)
    assert_names_file(e.value, path)


def test_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match="no video stream") as e:
        decode_clip(path, None)
    assert_names_file(e.value, path)


def test_truncated_to_its_header(tmp_path):
    path = write_video(tmp_path / "v.avi", 40)
    data = path.read_bytes()
    movi = data.index(b"movi")
    for cut, message in [(100, "cannot be opened"), (movi + 4, "no video packets")]:
        short = tmp_path / f"cut{cut}.avi"
        short.write_bytes(data[:cut])
        with pytest.raises(VideoDecodeError, match=message) as e:
            decode_clip(short, WHOLE, box_frame_size=(W, H))
        assert_names_file(e.value, short)


def test_no_decodable_frame(tmp_path):
    path = write_with_garbage(tmp_path / "garbage.avi", good=0, bad=10)
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(path, WHOLE, box_frame_size=(W, H))
    assert_names_file(e.value, path)
    assert e.value.frame == 0


def test_decode_error_halfway_names_the_frame(tmp_path):
    path = write_with_garbage(tmp_path / "half.avi", good=10, bad=10)
    with pytest.raises(VideoDecodeError, match="decoder error") as e:
        decode_clip(path, WHOLE, frames=16, box_frame_size=(W, H))
    assert_names_file(e.value, path)
    assert e.value.frame == 10


@pytest.mark.parametrize("kwargs", [{"size": 33}, {"size": 0}, {"frames": 0}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        decode_clip(tmp_path / "v.avi", None, **kwargs)


# ---------------------------------------------------------------- damaged streams


def wreck(path: Path, out: Path, frames, part: str) -> Path:
    """Overwrite the whole chunk of each frame ("chunk": the demuxer loses it) or the last two thirds of
    its data ("data": it is read, and decodes to garbage or not at all)."""
    spans = chunk_spans(path)
    if part == "data":
        spans = [(a + 8 + (b - a - 8) // 3, b) for a, b in spans]
    return overwrite(path, out, [spans[f] for f in frames])


def assert_true_to_content(clip, count: int, frames: int | None):
    """Every stored frame is the frame its frame_index says; the others are the ones sampled."""
    assert numbers(clip) == clip.frame_index.tolist()
    wanted = np.arange(count) if frames is None else sample_indices(count, frames)
    assert np.array_equal(clip.frame_index[~clip.replaced], wanted[~clip.replaced])
    assert clip.num_source_frames == count


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("frames", [16, None])
def test_lost_chunks_do_not_shift_the_frames_after_them(tmp_path, codec, frames):
    """The demuxer skips unreadable chunks and its pts count the chunks it found; the index keeps
    every frame's number, and frames 20-22 and those predicted from them are replaced by good ones.

    (With B-frames, frames shown around a lost one cannot be placed, and are bad too.)
    """
    path = wreck(write_video(tmp_path / "v.avi", 60, codec), tmp_path / "d.avi", [20, 21, 22], "chunk")
    clip = decode_clip(path, WHOLE, size=32, frames=frames, box_frame_size=(W, H))
    assert_true_to_content(clip, 60, frames)
    wanted = np.arange(60) if frames is None else sample_indices(60, 16)
    assert {20, 21, 22} & set(wanted.tolist()) <= set(wanted[clip.replaced].tolist())
    assert set(wanted[clip.replaced].tolist()) <= set(range(17, 24))  # up to the next keyframe, 24
    assert "not in the stream" in clip.note and "replaced" in clip.note


@pytest.mark.parametrize("codec", CODECS)
def test_a_corrupt_frame_and_those_predicted_from_it_are_replaced(tmp_path, codec):
    path = wreck(write_video(tmp_path / "v.avi", 60, codec), tmp_path / "d.avi", [26], "data")
    clip = decode_clip(path, WHOLE, size=32, frames=None, box_frame_size=(W, H))
    assert_true_to_content(clip, 60, None)
    replaced = set(np.flatnonzero(clip.replaced).tolist())
    if codec == "mpeg4":  # I/P: frame 26 and every frame after it up to keyframe 36
        assert replaced == set(range(26, 36))
    else:  # with B-frames, decode order (the damage's) is not display order: within the same GOP
        assert len(replaced) >= 8 and replaced <= set(range(24, 36))
    assert f"replaced {len(replaced)} of the 60 frames needed" in clip.note


@pytest.mark.parametrize("frames", [16, None])
def test_more_than_a_fifth_of_the_frames_bad_fails_the_sample(tmp_path, frames):
    path = wreck(write_video(tmp_path / "v.avi", 60), tmp_path / "d.avi", [13, 40], "data")
    with pytest.raises(VideoDecodeError, match="frames needed are corrupt or missing") as e:
        decode_clip(path, WHOLE, size=32, frames=frames, box_frame_size=(W, H))
    assert_names_file(e.value, path)
    assert e.value.frame == 13
    assert ("5 of the 16" if frames else "19 of the 60") in str(e.value)  # 13-23 and 40-47: two GOPs


@pytest.mark.parametrize("keep_index", [True, False])
def test_one_readable_frame_fails(tmp_path, keep_index):
    """Every chunk after the first unreadable: with the index the frames are known lost; without it,
    the unreadable bytes where they were still tell a damaged file from a truncated one."""
    source = write_video(tmp_path / "v.avi", 60)
    data = source.read_bytes()
    end = data.rindex(b"idx1") if keep_index else len(data)
    path = overwrite(source, tmp_path / "d.avi", [(chunk_spans(source)[1][0], end)])
    for frames in (16, None):
        with pytest.raises(VideoDecodeError, match="corrupt or missing") as e:
            decode_clip(path, WHOLE, size=32, frames=frames, box_frame_size=(W, H))
        assert_names_file(e.value, path)
