"""What is left around a store and a run after things go wrong, and how options that cannot work are
refused: lock files of deleted stores, a reader told that a writer is at work, inputs that are not what
they seem (a missing-list sample without its file, broken links), usage errors, and commands that must
not leave or delete anything when they refuse.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from exports import MISSING_NAME

from cli.prep import main
from cli.train import main as train_main
from ntu_pipeline.errors import ConfigError, IncompleteStoreError
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import Status, open_store
from ntu_pipeline.store.lock import lock_path, other_writer, store_lock
from ntu_pipeline.store.schema import require_complete
from ntu_pipeline.synth.corpus import MARKER, write_corpus, write_synthetic_corpus

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run(**options):
    return extract(ExtractConfig(**{"progress": False, "dataset": "ntu60", **options}), say=lambda _: None)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """8 skeletons of 2 classes with their videos."""
    root = tmp_path_factory.mktemp("guardsraw")
    write_corpus(root, 8, 2, seed=3, videos=True)
    return root


def test_a_lock_left_by_a_killed_writer_goes_with_its_store(raw, tmp_path):
    """Catches `.<store>.ntu-prep-lock` files piling up beside stores deleted after a kill -9 (the only
    way a holder cannot remove its own file)."""
    gone = tmp_path / "gone.zarr"
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from ntu_pipeline.store.lock import store_lock
        with store_lock(Path({str(gone)!r}), "extract"):
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script], env=ENV).returncode == 9
    assert lock_path(gone).exists()
    shutil.rmtree(gone)
    kept = tmp_path / "kept.zarr"  # a store whose writer was killed too: its lock file stays for reuse
    kept.mkdir()
    lock_path(kept).write_text("")
    run(skeletons=raw, out=tmp_path / "new.zarr", shard_size=4)
    assert not lock_path(gone).exists()
    assert lock_path(kept).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kept.zarr.ntu-prep-lock", "kept.zarr", "new.zarr"]


def test_a_reader_of_a_store_being_written_is_told_to_wait(raw, tmp_path):
    """Catches split/fit/export telling a user to rerun extract while another process is writing the
    store (a second extract would then fail on the lock)."""
    out = tmp_path / "s.zarr"
    run(skeletons=raw, out=out, shard_size=4)
    group = open_store(out, mode="r+")
    group.attrs["stages"] = {"skeleton": {**group.attrs["stages"]["skeleton"], "state": "extracting"}}
    with pytest.raises(IncompleteStoreError, match="rerun the same `ntu-prep extract`"):
        require_complete(open_store(out))
    with store_lock(out, "split"):  # this process's own hold is not another writer
        with pytest.raises(IncompleteStoreError, match="rerun the same `ntu-prep extract`"):
            require_complete(open_store(out))
    script = (f"from ntu_pipeline.store.lock import store_lock\n"
              f"with store_lock({str(out)!r}, 'extract'): input()")
    writer = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdin=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while other_writer(out) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(IncompleteStoreError, match=f"writing it now \\(pid and task: {writer.pid} "
                                                       "extract\\): wait for it to finish"):
            require_complete(open_store(out))
    finally:
        writer.communicate("\n")


def test_a_missing_list_sample_without_its_file_is_missing_not_absent(raw, tmp_path):
    """Catches `absent` overriding `missing_skeleton`: a sample on the official missing list has no
    skeleton file by definition, and --keep-missing must still know it for what it is."""
    videos = tmp_path / "videos"
    shutil.copytree(raw, videos)
    shutil.copy(next(videos.rglob("*_rgb.avi")), videos / f"{MISSING_NAME}_rgb.avi")
    out = tmp_path / "s.zarr"
    run(skeletons=raw, videos=videos, out=out, shard_size=4, rgb_shard_size=4, rgb_frames=4, rgb_size=32)
    group = open_store(out)
    i = list(group["samples/name"][:]).index(MISSING_NAME)
    assert group["samples/status"][i] == Status.MISSING_SKELETON
    assert group["rgb/status"][i] == Status.OK


def test_every_broken_link_in_an_input_folder_is_reported(raw, tmp_path):
    """Catches a broken link skipped without a word when its name is not a sample file's (it may have
    been a linked folder of samples)."""
    skeletons = tmp_path / "skeletons"
    shutil.copytree(raw, skeletons, ignore=shutil.ignore_patterns("*.avi"))
    (skeletons / "more_setups").symlink_to(tmp_path / "unmounted", target_is_directory=True)
    (skeletons / "S017C001P001R001A001.skeleton").symlink_to(tmp_path / "nothing.skeleton")
    summary = run(skeletons=skeletons, out=tmp_path / "s.zarr", shard_size=4)
    reasons = dict(summary.ignored)
    assert reasons[str(skeletons / "more_setups")].startswith("broken link to ")
    assert reasons[str(skeletons / "S017C001P001R001A001.skeleton")].startswith("broken link to ")
    assert summary.num_samples == 8


def test_options_that_cannot_work_are_usage_errors(raw, tmp_path):
    """Catches the README's exit 2 for usage errors holding only for what click checks: --size 17 and
    --epochs 0 exited 1 while --samples 0 exited 2."""
    result = CliRunner().invoke(main, ["extract", "--videos", str(raw), "--out", str(tmp_path / "s.zarr"),
                                       "--size", "17"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("Error: --size must be an even number in 16..1080")
    assert result.output.endswith(", got 17\n")
    assert not (tmp_path / "s.zarr").exists()
    result = CliRunner().invoke(main, ["extract", "--skeletons", str(raw), "--out", str(tmp_path / "s.zarr"),
                                       "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs" in result.output


def test_export_to_standard_output_is_refused_not_written_to_a_file_named_dash(raw, tmp_path, monkeypatch):
    out = tmp_path / "s.zarr"
    run(skeletons=raw, out=out, shard_size=4)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", str(out), "--format", "pyskl", "-o", "-"])
    assert result.exit_code == 2 and "not to standard output" in result.output
    assert not (tmp_path / "-").exists()


def test_synth_checks_its_counts_before_it_replaces_a_corpus(tmp_path):
    """Catches synth deleting the corpus it wrote earlier, then failing on --classes 500 with a
    traceback."""
    out = tmp_path / "raw"
    write_synthetic_corpus(out, 4, 2, videos=False, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ConfigError, match="num_classes must be 1..120, got 500"):
        write_synthetic_corpus(out, 4, 500, videos=False, progress=False)
    with pytest.raises(ConfigError, match=r"--samples must be 1\.\.8160 for 2 classes .*, got 0"):
        write_synthetic_corpus(out, 0, 2, videos=False, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and (out / MARKER).is_file()
    result = CliRunner().invoke(main, ["synth", str(out), "--classes", "500"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_fit_refused_before_training_leaves_no_folder(raw, tmp_path):
    """Catches an empty --out folder left by every fit that failed its checks (here: no split)."""
    out = tmp_path / "s.zarr"
    run(skeletons=raw, out=out, shard_size=4)
    run_dir = tmp_path / "hcn"
    result = CliRunner().invoke(train_main, ["fit", "--store", str(out), "--protocol", "xsub", "--model",
                                             "hcn", "--out", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 1 and "ntu-prep split" in result.output
    assert not run_dir.exists()


def test_a_file_that_is_not_a_pytorch_i3d_checkpoint_is_one_line(tmp_path):
    from model import build
    from model.training.checkpoint import pretrained_names
    from ntu_pipeline.errors import CheckpointError

    bad = tmp_path / "rgb_imagenet.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"--i3d-checkpoint {bad}: not a pytorch-i3d checkpoint"):
        pretrained_names(build("i3d", num_classes=6), str(bad))
