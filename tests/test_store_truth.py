"""A store never feeds wrong data to training: unwritten rows, unfinished stages, missing modalities,
writers that outlive their lock, inputs behind links, and the one-line errors of what users type.

Interrupted runs are real processes that die at a chosen point (`os._exit` from inside the run, which
is what kill -9 leaves behind), or real kill -9 of the main process alone.
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
from click.testing import CliRunner
from stores import assert_same_arrays, shards_done

from cli.prep import main
from cli.train import main as train_main
from model.data.split import read_split
from ntu_pipeline.errors import IncompleteStoreError, StoreFormatError
from ntu_pipeline.export.common import ExportConfig, SampleTable
from ntu_pipeline.export.hdf5 import write_hdf5
from ntu_pipeline.export.pyskl import write_pyskl
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import State, Status, open_store, verify_store
from ntu_pipeline.store.lock import lock_path, store_lock
from ntu_pipeline.store.splits import make_split, usable_skeleton
from ntu_pipeline.synth.corpus import write_corpus

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
QUIET = {"progress": False, "dataset": "ntu60"}


def run(**options):
    return extract(ExtractConfig(**{**QUIET, **options}), say=lambda _: None)


def die_during(config: str, where: str, after: int) -> None:
    """Run `extract(ExtractConfig(<config>))` in a fresh process that dies (os._exit(9), no cleanup, as
    kill -9) when `where` ("write_shard": a shard task, "create_stage_arrays") is called the
    `after + 1`-th time."""
    module = {"write_shard": "ntu_pipeline.stages.backends",
              "create_stage_arrays": "ntu_pipeline.stages.runner"}[where]
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        import {module} as target
        from ntu_pipeline.stages.runner import ExtractConfig, extract
        real, calls = target.{where}, [0]
        def dying(*args):
            if calls[0] == {after}:
                if "{where}" == "create_stage_arrays":
                    real(args[0], args[1][:3], *args[2:])  # some of the arrays made, then the kill
                os._exit(9)
            calls[0] += 1
            return real(*args)
        target.{where} = dying
        extract(ExtractConfig({config}, progress=False, dataset="ntu60"), say=lambda _: None)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True)
    assert result.returncode == 9, result.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """16 samples of 3 classes with videos."""
    root = tmp_path_factory.mktemp("truthraw")
    write_corpus(root, 16, 3, seed=7, videos=True)
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("truthref") / "r.zarr"
    run(skeletons=corpus, videos=corpus, out=out, shard_size=4, rgb_shard_size=4, rgb_frames=4, rgb_size=32)
    return out


def both_config(corpus: Path, out: Path, videos: bool = True) -> str:
    return (f"skeletons=Path({str(corpus)!r}), " + (f"videos=Path({str(corpus)!r}), " if videos else "")
            + f"out=Path({str(out)!r}), shard_size=4, rgb_shard_size=4, rgb_frames=4, rgb_size=32")


def test_unwritten_rows_read_as_pending_and_no_consumer_takes_them(corpus, reference, tmp_path):
    """Catches status columns filled with 0 (= ok): a run killed after 2 of 4 skeleton shards left 8
    rows that read as ok with 0 frames, and split, fit and export took them."""
    out = tmp_path / "s.zarr"
    die_during(both_config(corpus, out, videos=False), "write_shard", after=2)
    group = open_store(out)
    status = group["samples/status"][:]
    assert (status == Status.PENDING).sum() == 8 and (status == Status.OK).sum() == 8
    assert group.attrs["state"] == State.EXTRACTING
    assert group.attrs["stages"]["skeleton"]["state"] == State.EXTRACTING

    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "state extracting" in info.output
    assert "8 of 16 samples pending" in info.output
    split = CliRunner().invoke(main, ["split", "--protocol", "xsub", str(out)])
    assert split.exit_code == 1 and "8 of 16 samples pending" in split.output
    assert "rerun the same `ntu-prep extract` command" in split.output and "Traceback" not in split.output
    with pytest.raises(IncompleteStoreError, match="skeleton stage is unfinished"):
        read_split(out, "xsub", "train")
    with pytest.raises(IncompleteStoreError, match="rerun the same"):
        write_pyskl(ExportConfig(store=out, out=tmp_path / "a.pkl", format="pyskl", progress=False))
    verify = CliRunner().invoke(main, ["verify", "--quiet", str(out)])
    assert verify.exit_code == 1 and "shards not written" in verify.output

    run(skeletons=corpus, out=out, shard_size=4)  # the same command finishes it
    assert open_store(out).attrs["state"] == State.COMPLETE and verify_store(open_store(out)) == []


def test_a_stage_being_added_is_unfinished_for_the_whole_run(corpus, tmp_path):
    """Catches the group (and the RGB stage) reading `complete` while videos are added to a complete
    store: an export then took the half-written RGB stage. A skeleton export (pyskl) needs only the
    finished skeleton stage."""
    out = tmp_path / "s.zarr"
    run(skeletons=corpus, out=out, shard_size=4)
    make_split(open_store(out, mode="r+"), "xsub")
    die_during(f"videos=Path({str(corpus)!r}), out=Path({str(out)!r}), rgb_shard_size=4, rgb_frames=4, "
               "rgb_size=32", "write_shard", after=1)
    group = open_store(out)
    assert group.attrs["state"] == State.EXTRACTING
    assert group.attrs["stages"]["rgb"]["state"] == State.EXTRACTING
    assert group.attrs["stages"]["skeleton"]["state"] == State.COMPLETE
    assert (group["rgb/status"][:] == Status.PENDING).sum() == 12
    with pytest.raises(IncompleteStoreError, match="rgb stage is unfinished"):
        write_hdf5(ExportConfig(store=out, out=tmp_path / "a.h5", format="hdf5", progress=False))
    write_pyskl(ExportConfig(store=out, out=tmp_path / "a.pkl", format="pyskl", progress=False))
    with pytest.raises(IncompleteStoreError, match="rgb stage is unfinished"):
        read_split(out, "xsub", "train", need_rgb=True)
    assert len(read_split(out, "xsub", "train")) > 0  # a skeleton model needs only the finished stage


def test_a_kill_while_a_stage_creates_its_arrays_resumes(corpus, reference, tmp_path):
    """Catches a rerun failing with "array already exists" after a kill between creating a stage's
    arrays and recording it, which only --overwrite (wiping the skeleton stage too) got out of; and the
    store reading `complete` in that window, so that verify passed it and an export took its
    half-created rgb arrays. Catches zarr's own temporary files surviving the rerun."""
    out = tmp_path / "s.zarr"
    run(skeletons=corpus, out=out, shard_size=4)
    joints = out / "skeleton/joints/c/0/0/0/0/0"
    before = joints.stat().st_mtime_ns
    die_during(f"videos=Path({str(corpus)!r}), out=Path({str(out)!r}), rgb_shard_size=4, rgb_frames=4, "
               "rgb_size=32", "create_stage_arrays", after=0)
    assert (out / "rgb").is_dir() and "rgb" not in open_store(out).attrs["stages"]
    assert open_store(out).attrs["state"] == State.EXTRACTING
    with pytest.raises(IncompleteStoreError, match="not complete"):
        write_hdf5(ExportConfig(store=out, out=tmp_path / "a.h5", format="hdf5", progress=False))
    assert any("not 'complete'" in problem for problem in verify_store(open_store(out)))
    zarr_tmp = out / "rgb" / "zarr.0123456789abcdef0123456789abcdef.partial"  # zarr's own temporary name
    zarr_tmp.write_bytes(b"{")
    run(videos=corpus, out=out, rgb_shard_size=4, rgb_frames=4, rgb_size=32)
    assert not zarr_tmp.exists()
    assert joints.stat().st_mtime_ns == before  # the skeleton stage untouched
    assert verify_store(open_store(out)) == []
    assert_same_arrays(reference, out)


def test_a_split_is_membership_and_each_model_takes_what_it_can_use(corpus, tmp_path):
    """Catches samples without a skeleton file trained as all-zero skeletons, and a store of videos
    alone that cannot be split ("samples/status: missing from the store")."""
    raw = tmp_path / "raw"
    shutil.copytree(corpus, raw)
    gone = sorted(raw.rglob("*.skeleton"))[:3]
    for path in gone:
        path.unlink()
    out = tmp_path / "s.zarr"
    run(skeletons=raw, videos=raw, out=out, shard_size=4, rgb_shard_size=4, rgb_frames=4, rgb_size=32)
    split = make_split(open_store(out, mode="r+"), "xsub")
    assert len(split.train) + len(split.test) == 16 and split.modalities["skeleton"][Status.ABSENT] == 3
    absent = set(np.flatnonzero(open_store(out)["samples/status"][:] == Status.ABSENT).tolist())
    for part in ("train", "test"):
        skeleton = read_split(out, "xsub", part)
        rgb = read_split(out, "xsub", part, need_rgb=True, need_skeleton=False)
        fused = read_split(out, "xsub", part, need_rgb=True)
        assert not absent & set(skeleton.indices.tolist()) and not absent & set(fused.indices.tolist())
        members = len(split.train if part == "train" else split.test)
        assert len(rgb) == members and len(skeleton) + skeleton.left_out.get("skeleton absent", 0) == members
    assert sum(read_split(out, "xsub", p).left_out.get("skeleton absent", 0) for p in ("train", "test")) == 3

    videos_only = tmp_path / "v.zarr"
    run(videos=raw, out=videos_only, rgb_shard_size=4, rgb_frames=4, rgb_size=32)
    result = CliRunner().invoke(main, ["split", "--protocol", "xsub", str(videos_only)])
    assert result.exit_code == 0, result.output
    assert len(read_split(videos_only, "xsub", "test", need_rgb=True, need_skeleton=False)) > 0
    with pytest.raises(StoreFormatError, match="has no skeletons"):
        read_split(videos_only, "xsub", "test")


def test_one_usable_skeleton_rule_for_models_and_exports():
    """Training (`usable_samples`) and exports (`SampleTable.exportable`) take the same skeletons: ok ones,
    and missing-list ones with frames where the split kept them (catches either copy of the rule
    drifting: a missing-list skeleton with no frame exported as zeros, a failed one trained on)."""
    status = np.array([Status.OK, Status.MISSING_SKELETON, Status.MISSING_SKELETON, Status.FAILED,
                       Status.ABSENT, Status.PENDING], np.int8)
    frames = np.array([40, 30, 0, 0, 0, 0])
    assert usable_skeleton(status, frames, keep_missing=False).tolist() == [True] + [False] * 5
    assert usable_skeleton(status, frames, keep_missing=True).tolist() == [True, True] + [False] * 4
    table = SampleTable([f"s{i}" for i in range(6)], np.zeros(6, np.int64), frames, status)
    kept, left_out = table.exportable(np.arange(6))
    assert kept.tolist() == [0, 1]
    assert left_out[0] == ("s2", "skeleton status missing_skeleton, 0 frames")
    assert [name for name, _ in left_out] == ["s2", "s3", "s4", "s5"]


def test_an_empty_side_is_one_line(corpus, tmp_path):
    """Catches a split whose every sample lacks the modality failing deep inside the loader."""
    raw = tmp_path / "raw"
    shutil.copytree(corpus, raw)
    for path in raw.rglob("*.skeleton"):
        path.unlink()
    (raw / "S001C001P001R001A001.skeleton").write_text("1\n0\n")  # the only skeleton: no body, failed
    out = tmp_path / "s.zarr"
    run(skeletons=raw, videos=raw, out=out, shard_size=4, rgb_shard_size=4, rgb_frames=4, rgb_size=32)
    make_split(open_store(out, mode="r+"), "xsub")
    with pytest.raises(StoreFormatError, match=r"no sample with a usable skeleton \(left out: skeleton ab"):
        read_split(out, "xsub", "test")


@pytest.mark.slow
def test_workers_write_nothing_once_their_parent_is_killed(tmp_path):
    """Catches loky workers writing shards and done flags into the store for tens of seconds after the
    main process (the lock holder) died."""
    raw = tmp_path / "raw"
    write_corpus(raw, 32, 3, seed=8, videos=True)
    out = tmp_path / "s.zarr"
    extract(ExtractConfig(skeletons=raw, out=out, shard_size=8, **QUIET))
    # 4 shards of 8 videos, about a second of work each for a worker: 3 are still in flight after the first
    command = [sys.executable, "-m", "cli.prep", "extract", "--videos", str(raw), "--out", str(out),
               "--jobs", "2", "--rgb-shard-size", "8", "--frames", "all", "--size", "128", "--quiet"]
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while shards_done(out, "progress/rgb_shard_done") < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    process.kill()  # the main process alone: its workers keep running
    process.wait()

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}

    time.sleep(0.05)  # a shard already past its last lease check (milliseconds before its write) lands
    before = snapshot()
    time.sleep(4)
    assert snapshot() == before
    assert shards_done(out, "progress/rgb_shard_done") < 4  # the workers had work left
    finished = subprocess.run(command[:-1] + ["--quiet"], env=ENV, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert verify_store(open_store(out)) == []


def test_linked_folders_are_followed_and_loops_reported(corpus, tmp_path):
    """Catches symlinked subfolders of the input skipped without a word."""
    raw = tmp_path / "raw"
    raw.mkdir()
    setups = sorted(p for p in corpus.iterdir() if p.is_dir())
    for folder in setups[1:]:
        shutil.copytree(folder, raw / folder.name)
    (raw / setups[0].name).symlink_to(setups[0], target_is_directory=True)  # a linked setup folder
    (raw / "again").symlink_to(raw, target_is_directory=True)  # a loop
    summary = run(skeletons=raw, out=tmp_path / "s.zarr", shard_size=4)
    assert summary.num_samples == 16
    assert any(path.endswith("again") and "loop" in why for path, why in summary.ignored)


def test_locks_do_not_pile_up_and_verify_names_a_writer(corpus, reference, tmp_path):
    """Catches lock files left beside every store ever made, and verify telling a user to rerun extract
    on a store another process is writing."""
    out = tmp_path / "s.zarr"
    run(skeletons=corpus, out=out, shard_size=4)
    run(skeletons=corpus, out=out, shard_size=4, overwrite=True)
    make_split(open_store(out, mode="r+"), "xsub")
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    with store_lock(out, "extract"):
        result = CliRunner().invoke(main, ["verify", "--quiet", str(out)])
        assert result.exit_code == 1 and f"writing this store now (pid and task: {os.getpid()} extract)" in \
            result.output and "rerun" not in result.output
        assert f"being written now by pid and task: {os.getpid()} extract" in CliRunner().invoke(
            main, ["info", str(out)]).output
    assert not lock_path(out).exists()


def test_what_users_type_gets_one_line(reference, tmp_path):
    """Catches the tracebacks and misleading messages of the issue: sheet --samples 0, info | head,
    a protocol of the other dataset, ntu-train -h."""
    result = CliRunner().invoke(main, ["sheet", str(reference), str(tmp_path / "s.png"), "--samples", "0"])
    assert result.exit_code == 2 and "--samples" in result.output and "Traceback" not in result.output
    piped = subprocess.run(f"{sys.executable} -m cli.prep info {reference} | head -1", shell=True, env=ENV,
                           capture_output=True, text=True)
    assert piped.stderr == "" and piped.stdout.startswith(str(reference))
    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)
    make_split(open_store(store, mode="r+"), "xsub")
    result = CliRunner().invoke(train_main, ["fit", "--store", str(store), "--protocol", "xsub120", "--model",
                                             "hcn", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 1 and "xsub120 is defined on ntu120; this store holds ntu60" in result.output
    assert "ntu-prep split" not in result.output
    assert CliRunner().invoke(train_main, ["-h"]).exit_code == 0


def test_an_hdf5_export_over_a_file_size_limit_is_one_line(reference, tmp_path):
    """Catches h5py's chained tracebacks (and a crash at exit) when the OS refuses a write."""
    def small_files():  # writes past 200 kB fail with EFBIG ([Errno 27] File too large)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "a.h5"
    result = subprocess.run([sys.executable, "-m", "cli.prep", "export", str(reference), "--format", "hdf5",
                             "-o", str(out), "--quiet"], env=ENV, capture_output=True, text=True,
                            preexec_fn=small_files)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"Error: {out}: cannot write the HDF5 file: File too large"
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_any_even_size_works(corpus, tmp_path):
    """Catches --size 250 (any size of 2 mod 4) failing every RGB sample with a reshape error."""
    summary = run(skeletons=corpus, videos=corpus, out=tmp_path / "s.zarr", shard_size=4, rgb_shard_size=4,
                  rgb_frames=2, rgb_size=250)
    assert summary.stages[1].counts[Status.OK] == 16
    assert open_store(tmp_path / "s.zarr")["rgb/frames"].shape == (16, 2, 250, 250, 3)
