"""The RGB stage through `extract`: real videos, both modalities, adding RGB later, bad videos, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from stores import assert_same_arrays, shards_done

from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import STATUS_CODES, Status, open_store, read_strings, verify_store
from ntu_pipeline.synth.corpus import write_corpus

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
QUIET = {"progress": False, "dataset": "ntu60"}


def run(**options):
    return extract(ExtractConfig(**{**QUIET, **options}), say=lambda _: None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rgbraw")
    write_corpus(root, 12, 3, seed=3, videos=True)
    return root


@pytest.fixture(scope="module")
def both(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("both") / "s.zarr"
    run(skeletons=corpus, videos=corpus, out=out, shard_size=8, rgb_shard_size=4, rgb_frames=8, rgb_size=64)
    return out


def test_real_a001_pair_stores_32_frames_around_the_person(ntu_samples, tmp_path):
    out = tmp_path / "real.zarr"
    summary = run(skeletons=ntu_samples / "skeletons", videos=ntu_samples / "videos", out=out)
    assert {s.name: s.counts[Status.OK] for s in summary.stages} == {"skeleton": 16, "rgb": 2}
    group = open_store(out)
    names = read_strings(group["samples/name"])
    i = names.index("S001C001P001R001A001")
    assert group["rgb/num_source_frames"][i] == 103
    index = group["rgb/frame_index"][i]
    assert len(index) == 32 and (np.diff(index) > 0).all() and index[0] <= 2 and index[-1] >= 100
    x0, y0, x1, y1 = group["rgb/crop_box"][i]
    n = group["samples/num_frames"][i]
    xy = group["skeleton/color_xy"][i, :n].reshape(-1, 2)
    xy = xy[(xy != 0).all(axis=1)]
    assert (xy[:, 0] >= x0).all() and (xy[:, 0] <= x1).all()
    assert (xy[:, 1] >= y0).all() and (xy[:, 1] <= y1).all()
    assert (x1 - x0) * (y1 - y0) <= 0.25 * 1920 * 1080
    frames = group["rgb/frames"][i]
    assert frames.shape == (32, 256, 256, 3) and frames.dtype == np.uint8 and frames.std() > 10
    # the DIVX video has no skeleton here: stored with the fallback crop, and the note says so
    j = names.index("S004C002P003R002A046")
    assert group["samples/status"][j] == STATUS_CODES["absent"] and group["rgb/status"][j] == 0
    note = str(group["rgb/note"][j])
    assert "skeleton absent" in note and "centred square" in note
    assert group["rgb/num_source_frames"][j] > 32
    assert verify_store(group) == []


def test_both_modalities_are_aligned_by_sample(both, corpus):
    group = open_store(both)
    names = read_strings(group["samples/name"])
    assert len(names) == 12 and (group["rgb/status"][:] == 0).all()
    assert (group["samples/status"][:] == 0).all()
    assert group["rgb/frames"].shape == (12, 8, 64, 64, 3)
    for i in range(12):
        n = group["samples/num_frames"][i]
        source = group["skeleton/frame_index"][i, :n]
        rgb_index = group["rgb/frame_index"][i]
        assert set(rgb_index) <= set(range(group["rgb/num_source_frames"][i]))
        assert source.max() < group["rgb/num_source_frames"][i]  # one frame per skeleton frame in synth
    assert verify_store(group) == []


def test_rgb_added_later_equals_both_at_once_and_a_second_run_is_a_no_op(both, corpus, tmp_path):
    out = tmp_path / "added.zarr"
    run(skeletons=corpus, out=out, shard_size=8)
    skeleton_files = {p: p.stat().st_mtime_ns for p in (out / "skeleton").rglob("*") if p.is_file()}
    summary = run(videos=corpus, out=out, rgb_shard_size=4, rgb_frames=8, rgb_size=64)
    assert summary.stages[0].name == "rgb" and summary.stages[0].shards_written == 3
    assert {p: p.stat().st_mtime_ns for p in (out / "skeleton").rglob("*") if p.is_file()} == skeleton_files
    assert_same_arrays(both, out)
    again = run(videos=corpus, out=out, rgb_shard_size=4, rgb_frames=8, rgb_size=64)
    assert again.stages[0].shards_written == 0 and again.stages[0].shards_resumed == 3
    with pytest.raises(Exception, match="other options"):
        run(videos=corpus, out=out, rgb_shard_size=4, rgb_frames=16, rgb_size=64)


def test_the_store_reads_with_plain_zarr_in_a_fresh_process(both):
    code = ("import json, sys, zarr\n"
            "a = zarr.open_array(sys.argv[1] + '/rgb/frames', mode='r')\n"
            "x = a[3]\n"
            "print(json.dumps([str(x.dtype), list(x.shape), int(x.sum()),"
            " 'ntu_pipeline.store.jpeg_codec' in sys.modules]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code, str(both)], capture_output=True, text=True, env=env,
                            cwd="/")
    assert result.returncode == 0, result.stderr
    dtype, shape, total, codec_loaded = json.loads(result.stdout)
    assert dtype == "uint8" and shape == [8, 64, 64, 3]
    assert codec_loaded  # by zarr, through the "zarr.codecs" entry point: the script never imports us
    assert total == int(open_store(both)["rgb/frames"][3].astype(np.int64).sum())


def test_bad_videos_are_recorded_and_the_rest_finish(corpus, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(corpus, raw)
    videos = sorted(raw.rglob("*_rgb.avi"))
    videos[0].write_bytes(b"")  # zero bytes
    videos[1].write_bytes(videos[1].read_bytes()[:3000])  # truncated inside the first frames
    videos[2].write_text("this is not a video\n" * 100)  # not a video
    (raw / "holiday_rgb.avi").write_bytes(videos[3].read_bytes())  # not an NTU sample name
    summary = run(skeletons=raw, videos=raw, out=tmp_path / "s.zarr", shard_size=8, rgb_shard_size=4,
                  rgb_frames=8, rgb_size=64)
    rgb = summary.stages[1]
    failures = dict(rgb.failures)
    for path in videos[:3:2]:
        name = path.name[:20]
        assert name in failures and str(path) in failures[name], failures
    assert rgb.counts[Status.OK] + rgb.counts[Status.FAILED] == 12 and rgb.counts[Status.OK] >= 9
    assert any("holiday_rgb.avi" in path for path, _ in summary.ignored)
    assert verify_store(open_store(tmp_path / "s.zarr")) == []


def test_frames_all_keeps_every_frame_and_stores_nothing_past_the_end(corpus, tmp_path):
    out = tmp_path / "all.zarr"
    run(skeletons=corpus, videos=corpus, out=out, shard_size=8, rgb_shard_size=4, rgb_frames=None,
        rgb_size=32)
    group = open_store(out)
    assert group["rgb/frames"].shape == (12, 300, 32, 32, 3)
    for i in (0, 7):
        count = int(group["rgb/num_source_frames"][i])
        index = group["rgb/frame_index"][i]
        np.testing.assert_array_equal(index[:count], np.arange(count))
        assert (index[count:] == -1).all()
        frames = group["rgb/frames"][i]
        assert frames[:count].reshape(count, -1).any(axis=1).all() and not frames[count:].any()
    # frames past the end take no bytes: the store is about the size of the frames that exist
    frame_bytes = sum(p.stat().st_size for p in (out / "rgb/frames").rglob("*") if p.is_file())
    stored = int(group["rgb/num_source_frames"][:].sum())
    assert frame_bytes < stored * 32 * 32 * 3  # well under raw, and nothing per missing frame


def test_parallel_rgb_gives_the_same_store(both, corpus, tmp_path):
    out = tmp_path / "p.zarr"
    run(skeletons=corpus, videos=corpus, out=out, shard_size=8, rgb_shard_size=4, rgb_frames=8, rgb_size=64,
        jobs=2)
    assert_same_arrays(both, out)


@pytest.mark.slow
def test_kill_during_the_rgb_stage_and_resume_gives_the_same_store(corpus, both, tmp_path):
    out = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "cli.prep", "extract", "--skeletons", str(corpus), "--videos",
               str(corpus), "--out", str(out), "--dataset", "ntu60", "--shard-size", "8", "--rgb-shard-size",
               "4", "--frames", "8", "--size", "64", "--quiet"]
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while shards_done(out, "progress/rgb_shard_done") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert shards_done(out, "progress/rgb_shard_done") < 3
    finished = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert_same_arrays(both, out)
    assert verify_store(open_store(out)) == []


def test_preview_draws_the_skeleton_on_the_person(ntu_samples, tmp_path):
    from click.testing import CliRunner

    from cli.prep import main
    from ntu_pipeline.preview import skeleton_at_frames
    from ntu_pipeline.video.crop import project_to_crop

    out = tmp_path / "real.zarr"
    run(skeletons=ntu_samples / "skeletons", videos=ntu_samples / "videos", out=out, rgb_frames=16,
        rgb_size=128)
    group = open_store(out)
    i = read_strings(group["samples/name"]).index("S001C001P001R001A001")
    color = skeleton_at_frames(group, i, group["rgb/frame_index"][i])
    xy = project_to_crop(color, group["rgb/crop_box"][i], tuple(group["rgb/video_size"][i]), 128)
    inside = xy[np.isfinite(xy).all(axis=-1)]
    assert len(inside) >= 16 * 25  # every stored frame has actor 1 at its instant
    assert (inside > 0).all() and (inside < 128).all()  # all in the crop, margin kept
    png = tmp_path / "p.png"
    result = CliRunner().invoke(main, ["preview", str(out), "S001C001P001R001A001", "-o", str(png)])
    assert result.exit_code == 0, result.output
    import cv2

    image = cv2.imread(str(png))
    side = 2 * 128  # crops under 192 px are shown enlarged
    assert image.shape == (2 * side, 8 * side, 3)
    tile = image[:side, :side].astype(int)
    blue = (tile[..., 0] - tile[..., 2]) > 80
    u, v = (xy[0, 0, 1] * 2).round().astype(int)  # spine middle of actor 1 in frame 0: drawn in blue there
    assert blue[max(v - 3, 0):v + 4, max(u - 3, 0):u + 4].any()
    assert blue.mean() < 0.05  # lines, not a painted-over frame
    result = CliRunner().invoke(main, ["preview", str(out), "S001C001P001R001A002", "-o", str(png)])
    assert result.exit_code == 1 and "no RGB frames stored" in result.output
