"""What a user's attacks on a store and on `ntu-prep` must meet: a shard file deleted, truncated, damaged or
replaced under a reader; a writer while a reader reads; a video that holds a tenth of its frames; a joint
no Kinect can measure; sizes past what can work; Ctrl-C while a finished extract exits; and the words
`preview` and `export` use. Each test names what it catches.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from cli.prep import main
from ntu_pipeline.errors import NTUPrepError, SkeletonFormatError, StoreFormatError
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import Status, open_store, read_strings
from ntu_pipeline.store.lock import lock_path, store_lock
from ntu_pipeline.synth.corpus import write_corpus

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
RGB = {"rgb_shard_size": 4, "rgb_frames": 8, "rgb_size": 32}


def run(**options):
    return extract(ExtractConfig(**{"progress": False, "dataset": "ntu60", "shard_size": 4, **options}),
                   say=lambda _: None)


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """8 skeletons of 2 classes with their videos."""
    root = tmp_path_factory.mktemp("attacks_raw")
    write_corpus(root, 8, 2, seed=3, videos=True)
    return root


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("attacks_ref") / "r.zarr"
    run(skeletons=raw, videos=raw, out=out, **RGB)
    return out


@pytest.fixture
def store(reference, tmp_path) -> Path:
    out = tmp_path / "s.zarr"
    shutil.copytree(reference, out)
    return out


# --- 1. a shard file gone, truncated or damaged ----------------------------------------------------------

def test_a_deleted_or_truncated_shard_file_is_refused_before_a_consumer_reads_it(reference, store, tmp_path):
    """Catches a complete store whose deleted shard reads as zeros: `export --format pyskl` wrote 0.0
    keypoints, `sheet` drew nothing, and training (which calls `require_stages`) read zeros."""
    joints = store / "skeleton/joints/c/1/0/0/0/0"
    joints.unlink()
    for command in (["export", str(store), "--format", "pyskl", "-o", str(tmp_path / "a.pkl"), "--quiet"],
                    ["sheet", str(store), str(tmp_path / "sheet.png")]):
        result = CliRunner().invoke(main, command)
        line = one_line(result.output)
        assert result.exit_code == 1, result.output
        assert str(store) in line and "skeleton/joints/c/1/0/0/0/0" in line and "is missing" in line
        assert f"ntu-prep verify {store}" in line and "ntu-prep extract" in line
    assert not (tmp_path / "a.pkl").exists() and not (tmp_path / "sheet.png").exists()
    from ntu_pipeline.errors import DamagedStoreError
    from ntu_pipeline.store.schema import require_stages  # as model/ calls it

    with pytest.raises(DamagedStoreError, match="missing"):
        require_stages(open_store(store), ("skeleton",))

    shutil.copy(reference / "skeleton/joints/c/1/0/0/0/0", joints)
    motion = store / "skeleton/motion/c/1/0/0/0/0"
    size = motion.stat().st_size
    motion.write_bytes(motion.read_bytes()[:-10])
    with pytest.raises(DamagedStoreError, match=rf"{size - 10} bytes where its shard wrote {size}"):
        require_stages(open_store(store), ("skeleton",))

    frames = store / "rgb/frames/c/0/0/0/0/0"
    frames.unlink()
    result = CliRunner().invoke(main, ["preview", str(store), "-o", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "rgb/frames/c/0/0/0/0/0" in one_line(result.output)


def _read_clip(reader, sample: int):
    return reader.read(sample)


def test_a_shard_file_damaged_or_replaced_under_a_reader_is_one_line_even_in_a_worker(store):
    """Catches a FrameReader (made when training starts) that read a shard deleted since as zeros, and a
    damaged shard met in a DataLoader worker that reached the command line as the worker's traceback."""
    import torch

    from ntu_pipeline.store.frame_reader import FrameReader

    reader = FrameReader(store, "rgb/frames")
    shard = store / "rgb/frames/c/0/0/0/0/0"
    good = shard.read_bytes()
    shard.unlink()  # the store removed (or being replaced) under a running reader
    with pytest.raises(StoreFormatError, match="missing, where its shard wrote"):
        reader.read(0)
    shard.write_bytes(bytes(32) + good)  # another file (its index still sound): another size
    with pytest.raises(StoreFormatError, match=f"{len(good) + 32} bytes where its shard wrote {len(good)}"):
        reader.read(1)

    damaged = bytearray(good)
    damaged[-30] ^= 0x01  # inside the index: the same size, found when read
    shard.write_bytes(bytes(damaged))

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.from_numpy(_read_clip(reader, i))

    loader = torch.utils.data.DataLoader(Clips(), batch_size=2, num_workers=1)
    with pytest.raises(StoreFormatError) as caught:
        next(iter(loader))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert str(shard) in message and "checksum mismatch" in message and "ntu-prep verify" in message
    assert type(caught.value).__name__ == "DamagedStoreError"


# --- 2. readers hold the store --------------------------------------------------------------------------

def test_a_writer_is_refused_while_a_reader_holds_the_store_and_a_reader_while_a_writer_does(raw, store):
    """Catches `extract --overwrite` (and `split`) replacing a store while `ntu-train fit` or an export
    reads it."""
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from ntu_pipeline.store import hold_store_for_reading
        with hold_store_for_reading({str(store)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "held"
        before = (store / "zarr.json").read_bytes()
        started = time.monotonic()
        for command in (["extract", "--skeletons", str(raw), "--out", str(store), "--overwrite", "--quiet"],
                        ["split", "--protocol", "xsub", str(store)]):
            result = CliRunner().invoke(main, command)
            line = one_line(result.output)
            assert result.exit_code == 1 and f"{store}: is being read by pid {reader.pid} (" in line, line
            assert "wait for it to finish or stop it" in line
        assert time.monotonic() - started < 10
        assert (store / "zarr.json").read_bytes() == before and "splits/xsub" not in open_store(store)
        from ntu_pipeline.store import hold_store_for_reading

        with hold_store_for_reading(store):  # readers share it
            pass
    finally:
        reader.kill()
        reader.wait()
    from ntu_pipeline.errors import StoreLockedError
    from ntu_pipeline.store import hold_store_for_reading

    with store_lock(store, "extract"):
        writing = rf"another ntu-prep is writing this store .*{os.getpid()}"
        with pytest.raises(StoreLockedError, match=writing):
            hold_store_for_reading(store)
    with hold_store_for_reading(store) as hold:
        assert hold.held and lock_path(store).exists()
    assert not lock_path(store).exists()  # the last reader removes the lock file, as a writer does
    run(skeletons=raw, videos=raw, out=store, overwrite=True, **RGB)


# --- 3. a short video -----------------------------------------------------------------------------------

def cut_video(path: Path, most: float) -> None:
    """Keep the header and the first frames' bytes (a truncated download), as many as leave at least one
    frame and at most `most` of them."""
    from ntu_pipeline.video.decode import decode_clip

    data = path.read_bytes()
    movi = data.index(b"movi")
    for keep in np.linspace(most, 0.05, 20):
        path.write_bytes(data[: movi + int((len(data) - movi) * keep)])
        try:
            clip = decode_clip(path, None, size=16, frames=1)
        except NTUPrepError:
            continue  # no whole frame left
        if clip.num_source_frames <= most * clip.header_frames:
            return
    raise AssertionError(f"{path}: no cut holds between 1 frame and {most:.0%} of them")


def test_a_video_holding_a_tenth_of_its_frames_fails_and_noted_samples_are_counted(raw, tmp_path):
    """Catches a video cut to 10% stored `ok`, its few frames repeated to fill the clip, with the only
    word of it in rgb/note."""
    corpus = tmp_path / "raw"
    shutil.copytree(raw, corpus)
    videos = sorted(corpus.rglob("*_rgb.avi"))
    cut_video(videos[0], 0.2)  # a tenth or so of its frames
    cut_video(videos[1], 0.8)  # most of it: kept, with a note
    out = tmp_path / "s.zarr"
    summary = run(skeletons=corpus, videos=corpus, out=out, **RGB)
    group = open_store(out)
    names = read_strings(group["samples/name"])
    short, long = names.index(videos[0].name[:20]), names.index(videos[1].name[:20])
    assert group["rgb/status"][short] == Status.FAILED
    error = str(group["rgb/error"][short])
    assert str(videos[0]) in error and "fewer than 50%" in error and "whole action" in error
    assert group["rgb/status"][long] == Status.OK and str(group["rgb/note"][long])
    rgb = summary.stages[1].describe()[0]
    assert rgb.startswith("rgb: ok 7 (") and "noted), failed 1" in rgb, rgb
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "noted), failed 1; state complete" in info.output, info.output


# --- 4. joints no Kinect can measure --------------------------------------------------------------------

BODY = "72057594037927936 0 1 1 1 1 0 0.1 0.2 2\n25\n"


def skeleton_text(bad: str, axis: int) -> str:
    """3 frames: one body, none, one body; frame 3's joint 5 has `bad` as coordinate `axis` (line 38)."""
    joint = ["0.1", "0.2", "3.0", "250", "200", "960", "540", "1", "0", "0", "0", "2"]
    body = BODY + "".join(" ".join(joint) + "\n" for _ in range(25))
    odd = joint.copy()
    odd[axis] = bad
    last = BODY + "".join(" ".join(odd if j == 4 else joint) + "\n" for j in range(25))
    return "3\n1\n" + body + "0\n1\n" + last


@pytest.mark.parametrize(("bad", "axis"), [("1e30", 2), ("100000.0", 2), ("1.0e5", 2), ("-0.5", 2),
                                           ("11.0", 0), ("-1.1e1", 1)])
def test_a_joint_no_kinect_can_measure_fails_the_sample_naming_its_line(tmp_path, bad, axis):
    """Catches a joint at 1e30 m stored ok. Each number form takes another parser path (the compiled fast
    path, its exact slow path, Python's float for exponents past 22): all are judged alike."""
    from ntu_pipeline.skeleton.parse import parse_skeleton
    from ntu_pipeline.stages.skeleton import prepare_skeleton
    from ntu_pipeline.stages.stage import SampleEntry

    (tmp_path / "raw").mkdir()
    path = tmp_path / "raw" / "S001C001P001R001A001.skeleton"
    path.write_text(skeleton_text(bad, axis))
    assert parse_skeleton(path).joints.shape == (2, 25, 12)  # the parse keeps what the file says
    with pytest.raises(SkeletonFormatError) as caught:
        prepare_skeleton(SampleEntry(path.stem, 0, str(path), False))
    assert caught.value.line == 38 and caught.value.path == str(path)
    assert "frame 3, body 1, joint 5" in str(caught.value) and "Kinect" in str(caught.value)
    summary = run(skeletons=tmp_path / "raw", out=tmp_path / "s.zarr")
    assert summary.stages[0].failures == [(path.stem, str(caught.value))]


# --- 5. sizes past what can work ------------------------------------------------------------------------

@pytest.mark.timeout(60)  # synth --samples 10**9 drew names for ever
def test_sizes_past_what_can_work_are_refused_before_anything_is_touched(raw, reference, tmp_path):
    """Catches `extract --size 100000` failing every video ("Unable to allocate 894 GiB") after creating
    the store, and every other size option that could fork, allocate or loop without end."""
    out = tmp_path / "s.zarr"
    both = ["extract", "--skeletons", str(raw), "--videos", str(raw), "--out", str(out), "--quiet"]
    for options, name in ((["--size", "100000"], "--size"), (["--jobs", "100000"], "--jobs"),
                          (["--shard-size", "1000000000"], "--shard-size"),
                          (["--rgb-shard-size", "1000000000"], "--rgb-shard-size"),
                          (["--size", "1080", "--frames", "all", "--rgb-shard-size", "1024", "--rgb-codec",
                            "lz4"], "--size")):
        result = CliRunner().invoke(main, both + options)
        last = result.output.strip().splitlines()[-1]  # click's own range errors show the usage first
        assert result.exit_code == 2 and last.startswith("Error:") and name in last, (options, result.output)
        assert "Traceback" not in result.output and not out.exists()
    memory = CliRunner().invoke(main, both + ["--size", "1080", "--frames", "all", "--rgb-shard-size", "1024",
                                              "--rgb-codec", "lz4"])
    assert "this extract would hold about" in memory.output and "available" in memory.output
    synth = tmp_path / "synth"
    for options in (["--samples", "1000000000"], ["--jobs", "100000"]):
        result = CliRunner().invoke(main, ["synth", str(synth), "--quiet", *options])
        assert result.exit_code == 2 and options[0] in one_line(result.output), result.output
        assert not synth.exists()
    for command in (["sheet", str(reference), str(tmp_path / "s.png"), "--columns", "1000000"],
                    ["sheet", str(reference), str(tmp_path / "s.png"), "--samples", "1000000"],
                    ["preview", str(reference), "-o", str(tmp_path / "p.png"), "--columns", "1000000"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_the_last_line_of_extract_never_contradicts_its_summary(raw, tmp_path):
    """Catches "every sample failed: nothing usable was prepared" after a summary of skeletons all ok
    (every video had failed)."""
    corpus = tmp_path / "raw"
    shutil.copytree(raw, corpus)
    for video in corpus.rglob("*_rgb.avi"):
        video.write_text("this is not a video\n" * 20)
    result = CliRunner().invoke(main, ["extract", "--skeletons", str(corpus), "--videos", str(corpus),
                                       "--out", str(tmp_path / "s.zarr"), "--quiet", "--dataset", "ntu60"])
    assert result.exit_code == 1
    assert "skeleton: ok " in result.output and "rgb: failed 8" in result.output
    last = result.output.strip().splitlines()[-1]
    assert "nothing usable" not in last and "every rgb sample failed" in last
    assert "stored: skeleton ok " in last


# --- 6. Ctrl-C while a finished extract exits -----------------------------------------------------------

def test_ctrl_c_while_a_finished_extract_exits_is_quiet(raw, tmp_path):
    """Catches "Exception ignored in: <module 'threading'> ... KeyboardInterrupt" printed when Ctrl-C
    lands while the interpreter joins loky's threads after the summary (a real process, a real SIGINT)."""
    command = [sys.executable, "-m", "cli.prep", "extract", "--skeletons", str(raw), "--out",
               str(tmp_path / "s.zarr"), "--dataset", "ntu60", "--jobs", "2", "--shard-size", "2", "--quiet"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # the summary's first line: the work is done
    assert first.startswith("store:"), first
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert "Traceback" not in err and "Exception ignored" not in err and "KeyboardInterrupt" not in err, err
    assert process.returncode in (0, 130) and len(err.strip().splitlines()) <= 1, (process.returncode, err)


# --- 7. what preview and export say and need ------------------------------------------------------------

def test_preview_says_why_a_sample_has_no_frames(raw, tmp_path):
    """Catches "no RGB frames stored (absent: absent)"."""
    corpus = tmp_path / "raw"
    shutil.copytree(raw, corpus)
    video = sorted(corpus.rglob("*_rgb.avi"))[0]
    video.unlink()
    out = tmp_path / "s.zarr"
    run(skeletons=corpus, videos=corpus, out=out, **RGB)
    result = CliRunner().invoke(main, ["preview", str(out), video.name[:20], "-o", str(tmp_path / "p.png")])
    line = one_line(result.output)
    assert result.exit_code == 1 and "absent: absent" not in line and "no video of it" in line, line


def test_skeleton_exports_need_only_the_skeleton_stage(store, tmp_path):
    """Catches `export --format pyskl` (and ctrgcn) refusing a store whose RGB stage is unfinished,
    though neither holds any RGB; hdf5 copies the RGB and still refuses."""
    group = zarr.open_group(str(store), mode="r+")
    stages = dict(group.attrs["stages"])
    stages["rgb"] = {**stages["rgb"], "state": "extracting"}
    group.attrs.update({"stages": stages, "state": "extracting"})
    for fmt, target in (("pyskl", tmp_path / "a.pkl"), ("ctrgcn", tmp_path / "npz")):
        result = CliRunner().invoke(main, ["export", str(store), "--format", fmt, "-o", str(target),
                                           "--quiet"])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["export", str(store), "--format", "hdf5", "-o",
                                       str(tmp_path / "a.h5")])
    assert result.exit_code == 1 and "its rgb stage is unfinished" in one_line(result.output)


# --- the cost of the check at NTU60's size --------------------------------------------------------------

@pytest.mark.slow
def test_checking_every_shard_file_of_ntu60_costs_little(tmp_path):
    """NTU60's layout with default shards (56,880 samples: 445 skeleton shards of 10 files, 3,555 RGB
    shards of 8), its records written as the stages write them, every file present at its size; prints
    the time of `check_shard_files` (README: Guarantees)."""
    from ntu_pipeline.manifests import all_samples
    from ntu_pipeline.stages.rgb import rgb_arrays
    from ntu_pipeline.stages.rgb_options import RgbOptions
    from ntu_pipeline.stages.skeleton import skeleton_stage
    from ntu_pipeline.store.files import check_shard_files
    from ntu_pipeline.store.schema import create_stage_arrays, create_store, num_shards
    from ntu_pipeline.store.shards import shard_path

    names = sorted(all_samples("ntu60"))
    out = tmp_path / "ntu60.zarr"
    out.mkdir()
    group = create_store(out, names, {"dataset": "ntu60"})
    stages = {"skeleton": (skeleton_stage(128).arrays, 128, "progress/shard_done", "progress/shard_digest"),
              "rgb": (rgb_arrays(RgbOptions()), 16, "progress/rgb_shard_done", "progress/rgb_shard_digest")}
    files = 0
    for name, (specs, shard_size, done, digest) in stages.items():
        create_stage_arrays(group, specs, shard_size, done, digest)
        shards = num_shards(len(names), shard_size)
        arrays = [group[s.path] for s in specs]
        record = np.empty((shards, len(specs)), dtype=object)
        for shard in range(shards):
            for k, array in enumerate(arrays):
                path = shard_path(out, array, shard)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * (100 + k))
                record[shard, k] = f"{100 + k}:00000000"
                files += 1
        group[digest][:] = record  # `done` is not read for a complete stage
        group.attrs["stages"] = {**group.attrs["stages"], name: {
            "shard_size": shard_size, "done": done, "digest": digest, "state": "complete"}}
    assert files == 445 * 10 + 3555 * 8
    group = open_store(out, check=False)
    timings = {}
    for label, which in (("skeleton", ("skeleton",)), ("both", None)):
        best = min(_timed(lambda w=which: check_shard_files(group, w)) for _ in range(3))
        timings[label] = best
    print(f"\ncheck_shard_files at NTU60: skeleton (4,450 files) {timings['skeleton'] * 1e3:.0f} ms, "
          f"skeleton + RGB ({files:,} files) {timings['both'] * 1e3:.0f} ms")
    assert timings["both"] < 5.0


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def test_every_error_of_ours_raised_in_a_worker_keeps_its_one_line():
    """torch rebuilds a worker's error from "Caught X in DataLoader worker process 0.\\nOriginal Traceback
    ..."; ours keep their last line only."""
    wrapped = ("Caught NTUPrepError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
               "last):\n  File \"x.py\", line 1, in <module>\nntu_pipeline.errors.NTUPrepError: store: bad")
    assert str(NTUPrepError(wrapped)) == "store: bad"
    assert str(NTUPrepError("Caught nothing")) == "Caught nothing"
