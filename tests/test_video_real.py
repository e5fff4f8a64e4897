"""decode_clip on the real samples in ../shared/ntu_samples: exact frames, the YUV crop, damaged copies."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from video_files import assert_names_file, chunk_spans, overwrite, plain_crops, psnr

from ntu_pipeline.errors import VideoDecodeError
from ntu_pipeline.skeleton.actors import select_actors
from ntu_pipeline.skeleton.parse import parse_skeleton
from ntu_pipeline.video.crop import COLOR_FRAME_SIZE, fallback_crop_box, person_crop_box, usable_joints
from ntu_pipeline.video.decode import decode_clip
from ntu_pipeline.video.pixels import crop_frame, crop_resize_rgb, snap_box
from ntu_pipeline.video.timeline import sample_indices

A001 = "S001C001P001R001A001"
DIVX = "S004C002P003R002A046"


@pytest.fixture(scope="module")
def videos(ntu_samples) -> Path:
    folder = ntu_samples / "videos"
    missing = [n for n in (A001, DIVX) if not (folder / f"{n}_rgb.avi").exists()]
    if missing:
        pytest.skip(f"real NTU videos {missing} not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def a001_box(ntu_samples):
    actors = select_actors(parse_skeleton(ntu_samples / "skeletons" / f"{A001}.skeleton"))
    return actors, person_crop_box(actors.color_xy)


@pytest.mark.slow
def test_a001_stores_32_of_its_103_frames_in_a_box_around_its_performer(videos, a001_box):
    actors, box = a001_box
    clip = decode_clip(videos / f"{A001}_rgb.avi", box)
    assert clip.frames.shape == (32, 256, 256, 3)
    assert clip.num_source_frames == 103 and clip.header_frames == 103 and clip.note == ""
    assert np.array_equal(clip.frame_index, sample_indices(103, 32))
    assert clip.frame_index[0] == 1 and clip.frame_index[-1] == 101
    assert clip.video_size == COLOR_FRAME_SIZE
    joints = usable_joints(actors.color_xy)
    x0, y0, x1, y1 = clip.box
    assert len(joints) > 1000
    assert (joints[:, 0] >= x0).all() and (joints[:, 0] <= x1).all()
    assert (joints[:, 1] >= y0).all() and (joints[:, 1] <= y1).all()
    assert (x1 - x0) * (y1 - y0) <= 0.25 * 1920 * 1080


@pytest.mark.slow
@pytest.mark.parametrize("name", [A001, DIVX])
def test_real_clip_equals_a_full_decode_at_its_indices(videos, a001_box, name):
    """Frame numbering (B-frames in display order) and the GOP skip (DIVX) are exact."""
    path = videos / f"{name}_rgb.avi"
    clip = decode_clip(path, a001_box[1])
    full, _ = plain_crops(path, clip.frame_index.tolist(), lambda f: crop_frame(f, snap_box(clip.box), 256))
    assert np.array_equal(clip.frames, full)


@pytest.mark.slow
def test_divx_decodes_to_its_true_frame_count(videos):
    path = videos / f"{DIVX}_rgb.avi"
    _, count = plain_crops(path, [], None)
    clip = decode_clip(path, None, size=64, frames=None)
    assert clip.num_source_frames == count == clip.frames.shape[0] == 67
    assert np.array_equal(clip.frame_index, np.arange(count))
    assert np.array_equal(decode_clip(path, None, size=64).frame_index, sample_indices(count, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name,box", [(A001, "skeleton"), (DIVX, "skeleton"), (DIVX, "fallback")])
def test_yuv_crop_is_close_to_the_naive_rgb_path(videos, a001_box, name, box):
    """Crop and resize in YUV, then convert == convert the whole frame, crop, resize (PSNR > 35 dB)."""
    box = a001_box[1] if box == "skeleton" else fallback_crop_box()
    path = videos / f"{name}_rgb.avi"
    clip = decode_clip(path, box, frames=8)
    x0, y0, x1, y1 = snap_box(clip.box)

    def naive_crop(frame):
        rgb = frame.to_ndarray(format="rgb24")
        pad = ((max(-y0, 0), max(y1 - rgb.shape[0], 0)), (max(-x0, 0), max(x1 - rgb.shape[1], 0)), (0, 0))
        crop = np.pad(rgb[max(y0, 0): y1, max(x0, 0): x1], pad)
        return cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)

    naive, _ = plain_crops(path, clip.frame_index.tolist(), naive_crop)
    assert psnr(clip.frames, naive) > 35


@pytest.mark.slow
@pytest.mark.parametrize("size", [250, 254, 256])
def test_real_sizes_of_2_mod_4_are_close_to_the_rgb_path(videos, a001_box, size):
    for name in (A001, DIVX):
        path = videos / f"{name}_rgb.avi"
        clip = decode_clip(path, a001_box[1], size=size, frames=8)
        box = snap_box(clip.box)

        def convert_all_then_crop(frame, box=box):
            return crop_resize_rgb(frame.to_ndarray(format="rgb24"), box, size)

        reference, _ = plain_crops(path, clip.frame_index.tolist(), convert_all_then_crop)
        assert clip.frames.shape == (8, size, size, 3) and psnr(clip.frames, reference) > 35


@pytest.mark.slow
@pytest.mark.parametrize("name", [A001, DIVX])
@pytest.mark.parametrize("frames", [32, None])
def test_real_clean_video_is_stored_as_a_full_decode(videos, a001_box, name, frames):
    """Undamaged videos: the frames and frame numbers of decoding every frame, nothing replaced."""
    path = videos / f"{name}_rgb.avi"
    clip = decode_clip(path, a001_box[1], frames=frames)
    _, count = plain_crops(path, [], None)
    wanted = np.arange(count) if frames is None else sample_indices(count, frames)
    full, _ = plain_crops(path, wanted.tolist(), lambda f: crop_frame(f, snap_box(clip.box), 256))
    assert np.array_equal(clip.frame_index, wanted) and np.array_equal(clip.frames, full)
    assert not clip.replaced.any() and clip.note == "" and clip.num_source_frames == count


@pytest.fixture(scope="module")
def divx_every_frame(videos) -> np.ndarray:
    """(67, 64, 64, 3): the clean DIVX original's every frame, fallback box, the oracle for damage."""
    return decode_clip(videos / f"{DIVX}_rgb.avi", None, size=64, frames=None).frames


def damaged_divx(videos, tmp_path, at: float | int, nbytes: int) -> Path:
    """The DIVX original with `nbytes` random bytes written at byte `at` (an int) or at that share."""
    source = videos / f"{DIVX}_rgb.avi"
    start = at if isinstance(at, int) else int(source.stat().st_size * at)
    return overwrite(source, tmp_path / f"{DIVX}_rgb.avi", [(start, start + nbytes)])


@pytest.mark.slow
def test_real_divx_200kb_hit_stores_frames_under_their_own_numbers(videos, tmp_path, divx_every_frame):
    """The issue's repro (dd bs=1024 count=200 seek=10): frame 0 concealed, chunks 1-3 lost, 4-11
    predicted from them. Before: 64 frames numbered 0-63, frames 4-31 of the clip 3 frames off."""
    clip = decode_clip(damaged_divx(videos, tmp_path, 10 * 1024, 200 * 1024), None, size=64)
    assert np.array_equal(clip.frames, divx_every_frame[clip.frame_index])  # each is the frame it says
    wanted = sample_indices(67, 32)
    assert clip.num_source_frames == 67
    assert wanted[clip.replaced].tolist() == [1, 3, 5, 7, 9, 11]  # 6 of 32: within the 20% rule
    assert clip.frame_index[clip.replaced].tolist() == [12] * 6  # the first good frame, keyframe 12
    assert np.array_equal(clip.frame_index[~clip.replaced], wanted[~clip.replaced])
    assert "3 of 67 frames not in the stream" in clip.note and "replaced 6 of the 32" in clip.note


@pytest.mark.slow
@pytest.mark.parametrize("frames", [32, None])
def test_real_divx_20kb_hit_replaces_the_frames_with_artefacts(videos, tmp_path, divx_every_frame, frames):
    """20 KB at 40% of the file: frame 25 concealed (flagged corrupt), 26-35 predicted from it with
    visible blocks, none flagged. Before: stored with no note."""
    clip = decode_clip(damaged_divx(videos, tmp_path, 0.4, 20 * 1024), None, size=64, frames=frames)
    assert np.array_equal(clip.frames, divx_every_frame[clip.frame_index])
    wanted = np.arange(67) if frames is None else sample_indices(67, 32)
    bad = [j for j in wanted.tolist() if 25 <= j <= 35]
    assert wanted[clip.replaced].tolist() == bad
    assert clip.frame_index[clip.replaced].tolist() == [24 if j <= 30 else 36 for j in bad]  # nearest good
    assert f"replaced {len(bad)} of the {len(wanted)}" in clip.note


@pytest.mark.slow
@pytest.mark.parametrize("keep_index", [True, False])
def test_real_divx_with_one_readable_frame_of_67_fails(videos, tmp_path, keep_index):
    source = videos / f"{DIVX}_rgb.avi"
    data = source.read_bytes()
    end = data.rindex(b"idx1") if keep_index else len(data)
    path = overwrite(source, tmp_path / f"{DIVX}_rgb.avi", [(chunk_spans(source)[1][0], end)])
    for frames in (32, None):
        with pytest.raises(VideoDecodeError, match="of the .* frames needed are corrupt or missing") as e:
            decode_clip(path, None, size=64, frames=frames)
        assert_names_file(e.value, path)


@pytest.mark.slow
def test_real_h264_damage_fails_where_its_only_keyframe_leaves_no_clean_frame(videos, tmp_path):
    """A001's re-encode has one keyframe: every frame decoded after the damage is predicted from it."""
    source = videos / f"{A001}_rgb.avi"
    start = int(source.stat().st_size * 0.4)
    path = overwrite(source, tmp_path / f"{A001}_rgb.avi", [(start, start + 20 * 1024)])
    with pytest.raises(VideoDecodeError, match="26 of the 32 frames needed are corrupt or missing") as e:
        decode_clip(path, None, size=64)
    assert_names_file(e.value, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [DIVX, A001])
def test_real_random_damage_is_never_stored_as_a_clean_frame(videos, tmp_path, name):
    """Random hits of 16 B to 100 KB: each clip either fails or stores only clean frames, each the
    frame its frame_index says (the oracle: the clean video's every frame)."""
    source = videos / f"{name}_rgb.avi"
    clean = decode_clip(source, None, size=32, frames=None).frames
    data = source.read_bytes()
    movi, idx1 = data.index(b"movi"), data.rindex(b"idx1")
    rng = np.random.default_rng(7)
    outcomes = []
    for trial in range(8):
        nbytes = int(rng.choice([16, 2048, 20480, 102400]))
        start = int(rng.integers(movi, idx1 - nbytes))
        path = overwrite(source, tmp_path / f"{trial}.avi", [(start, start + nbytes)], seed=trial)
        for frames in (32, None):
            try:
                clip = decode_clip(path, None, size=32, frames=frames)
            except VideoDecodeError:
                outcomes.append("failed")
                continue
            assert np.array_equal(clip.frames, clean[clip.frame_index]), (start, nbytes, frames, clip.note)
            outcomes.append("replaced" if clip.replaced.any() else "ok")
    assert len(outcomes) == 16 and (name == A001 or "replaced" in outcomes), outcomes
