"""What a user breaks first: two writers, damaged stores, folders that are not stores, Ctrl-C, exit codes."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner
from stores import assert_same_arrays, shards_done

from cli.prep import main
from ntu_pipeline.errors import NTUPrepError, StoreFormatError, StoreLockedError
from ntu_pipeline.stages.runner import ExtractConfig, discover, extract
from ntu_pipeline.store import open_store, verify_store
from ntu_pipeline.store.lock import store_lock
from ntu_pipeline.synth.corpus import write_corpus, write_synthetic_corpus

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_corpus(root, 24, 3, seed=4)
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "r.zarr"
    extract(ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", shard_size=8, progress=False),
            say=lambda _: None)
    return out


def run_extract(corpus: Path, out: Path, **options):
    config = ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", shard_size=8, progress=False,
                           **options)
    return extract(config, say=lambda _: None)


def test_a_second_writer_fails_at_once_naming_the_holder(corpus, tmp_path):
    out = tmp_path / "s.zarr"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from ntu_pipeline.store.lock import store_lock\n"
        f"with store_lock(Path({str(out)!r}), 'test'):\n    print('held', flush=True); time.sleep(60)")],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(StoreLockedError, match=rf"{holder.pid} test"):
            run_extract(corpus, out)
        assert time.monotonic() - started < 5
        result = CliRunner().invoke(main, ["extract", "--skeletons", str(corpus), "--out", str(out)])
        assert result.exit_code == 1 and "another ntu-prep is writing this store" in result.output
    finally:
        holder.kill()  # kill -9 of the holder releases the lock: no stale lock to clear
        holder.wait()
    run_extract(corpus, out)
    assert verify_store(open_store(out)) == []


def test_split_takes_the_lock_too(reference, tmp_path):
    out = tmp_path / "copy.zarr"
    shutil.copytree(reference, out)
    with store_lock(out, "holder"):
        result = CliRunner().invoke(main, ["split", "--protocol", "xsub", str(out)])
    assert result.exit_code == 1 and "another ntu-prep" in result.output


@pytest.mark.parametrize("damage", ["joints shard deleted", "label chunk deleted", "motion shard truncated",
                                    "error chunk deleted"])
def test_verify_finds_damage_and_a_rerun_repairs_exactly_it(corpus, reference, tmp_path, damage):
    out = tmp_path / "damaged.zarr"
    shutil.copytree(reference, out)
    if damage == "joints shard deleted":
        (out / "skeleton/joints/c/1/0/0/0/0").unlink()
        expected = "skeleton/joints samples 8..15 (shard 1): file missing"
    elif damage == "label chunk deleted":
        (out / "samples/label/c/0").unlink()
        expected = "samples/label"
    elif damage == "motion shard truncated":
        path = out / "skeleton/motion/c/2/0/0/0/0"
        path.write_bytes(path.read_bytes()[:-10])
        expected = "skeleton/motion samples 16..23 (shard 2): content changed"
    else:
        zarr.open_group(str(out), mode="r+")["samples/error"][0] = "a failure that never happened"
        expected = "samples/error samples 0..7 (shard 0): file present but the shard wrote none"
    problems = verify_store(open_store(out))
    assert any(expected in p for p in problems), problems
    result = CliRunner().invoke(main, ["verify", "--quiet", str(out)])
    assert result.exit_code == 1 and expected in result.output and "Traceback" not in result.output
    summary = run_extract(corpus, out)
    repaired = summary.stages[0].shards_repaired
    assert repaired == (0 if damage == "label chunk deleted" else 1)
    assert verify_store(open_store(out)) == []
    assert_same_arrays(reference, out)


def test_a_file_changed_in_place_is_new_input_and_a_moved_folder_is_not(corpus, reference, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(corpus, moved, copy_function=shutil.copy2)  # keeps the modification times
    out = tmp_path / "s.zarr"
    shutil.copytree(reference, out)
    summary = run_extract(moved, out)  # same files elsewhere: resumes, nothing to do
    assert summary.stages[0].shards_written == 0
    victim = sorted(moved.rglob("*.skeleton"))[0]
    victim.write_text(victim.read_text())  # same bytes, new time: in-place edits cannot be told apart
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    with pytest.raises(StoreFormatError, match="made from other .skeleton files"):
        run_extract(moved, out)


def test_overwrite_never_deletes_a_folder_that_is_not_a_store(corpus, tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    for flags in ([], ["--overwrite"]):
        command = ["extract", "--skeletons", str(corpus), "--out", str(folder), *flags]
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, result.output
        assert "not an ntu-prep store" in result.output and "--overwrite" not in result.output
    assert (folder / "thesis.tex").read_text() == "years of work"
    with pytest.raises(NTUPrepError, match="inside the input folder"):
        run_extract(corpus, corpus / "store.zarr")


def test_overwrite_replaces_a_store(corpus, reference, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(reference, out)
    (out / "skeleton/joints/c/0/0/0/0/0").unlink()
    run_extract(corpus, out, overwrite=True)
    assert_same_arrays(reference, out)


def test_synth_refuses_a_folder_it_did_not_write(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(NTUPrepError, match="did not write"):
        write_synthetic_corpus(folder, 3, 2, videos=False, progress=False)
    assert (folder / "notes.txt").read_text() == "mine"
    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, 6, 2, seed=0, videos=False, progress=False)
    write_synthetic_corpus(corpus, 3, 2, seed=1, videos=False, progress=False)  # replaces its own corpus
    assert len(list(corpus.rglob("*.skeleton"))) == 3


def test_inputs_are_absolute_paths_for_remote_workers(corpus, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    files, _ = discover(Path(corpus.name), ".skeleton")
    assert files and all(p.is_absolute() for p in files.values())


def test_every_sample_failing_exits_1(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(3):
        (raw / f"S001C001P001R001A00{k + 1}.skeleton").write_text("2\n0\n0\n")
    result = CliRunner().invoke(main, ["extract", "--skeletons", str(raw), "--out", str(tmp_path / "s.zarr"),
                                       "--quiet"])
    assert result.exit_code == 1
    assert "every sample failed" in result.output and "no body" in result.output


def test_an_os_error_names_the_file(corpus, tmp_path):
    def small_files():  # writes past 20 kB fail with EFBIG ([Errno 27] File too large)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run(
        [sys.executable, "-m", "cli.prep", "extract", "--skeletons", str(corpus), "--out",
         str(tmp_path / "s.zarr"), "--dataset", "ntu60", "--quiet"],
        env=ENV, capture_output=True, text=True, preexec_fn=small_files)
    assert result.returncode == 1, result.stderr
    assert "File too large" in result.stderr and str(tmp_path / "s.zarr") in result.stderr
    assert "Traceback" not in result.stderr


def test_every_option_has_help_and_the_command_list_is_whole():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    assert "..." not in commands, commands  # click cuts a long first line of a command's help
    for name in main.commands:
        assert f"  {name} " in commands
    for name, command in main.commands.items():
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"ntu-prep {name} {param.opts[0]} has no help text"
    assert "rerun the same command" in CliRunner().invoke(main, ["extract", "--help"]).output


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_with_one_line_and_exit_130(tmp_path, jobs):
    raw = tmp_path / "raw"
    write_corpus(raw, 600, 3, seed=5)  # 38 shards of 16
    out = tmp_path / "s.zarr"
    command = [sys.executable, "-m", "cli.prep", "extract", "--skeletons", str(raw), "--out", str(out),
               "--dataset", "ntu60", "--shard-size", "16", "--jobs", str(jobs), "--quiet"]
    for fraction in (0.1, 0.5):  # early, then midway: Ctrl-C lands while shards are being written
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        while shards_done(out) < fraction * 38 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGINT)  # as the terminal does: the whole process group
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert shards_done(out) < 38
    finished = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert verify_store(open_store(out)) == []


def test_a_missing_array_is_a_problem_not_a_traceback(reference, tmp_path):
    out = tmp_path / "copy.zarr"
    shutil.copytree(reference, out)
    (out / "skeleton/motion/zarr.json").unlink()
    for command in (["verify", "--quiet", str(out)], ["info", str(out)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, result.output
        assert "skeleton/motion" in result.output and "Traceback" not in result.output
        assert not isinstance(result.exception, KeyError)


def test_a_bug_in_a_stage_reads_as_a_bug_in_the_failure_table(corpus, tmp_path, monkeypatch):
    """The run records every failing sample and finishes; a named error (bad input) is recorded as its
    own message, anything else (a bug) with its type name, so the failure table tells the two apart."""
    import ntu_pipeline.stages.skeleton as skeleton_stage
    from ntu_pipeline.store import Status, read_strings

    files = sorted(corpus.rglob("*.skeleton"))
    real = skeleton_stage.parse_skeleton

    def parse(path):
        if path == str(files[0]):
            raise KeyError("joints")
        if path == str(files[1]):
            raise NTUPrepError(f"{path}: line 3: expected a body count, found 'x'")
        return real(path)

    monkeypatch.setattr(skeleton_stage, "parse_skeleton", parse)
    out = tmp_path / "s.zarr"
    run_extract(corpus, out)
    group = open_store(out)
    names, errors = read_strings(group["samples/name"]), read_strings(group["samples/error"])
    status = group["samples/status"][:]
    failed = {names[i]: errors[i] for i in range(len(names)) if status[i] == Status.FAILED}
    assert failed == {files[0].stem: f"{files[0]}: KeyError: 'joints'",
                      files[1].stem: f"{files[1]}: line 3: expected a body count, found 'x'"}
    assert group.attrs["state"] == "complete"


def test_damaged_zarr_metadata_and_shards_are_named_errors_and_bugs_are_not(reference, tmp_path):
    """open_store, export's reads and verify --deep turn what a damaged store raises (not JSON, not an
    object, a shard whose checksum or blosc data is bad) into one line naming the file; an error of
    another kind (a bug) is not dressed up as a damaged store."""
    from ntu_pipeline.export.common import read_rows

    for label, text in (("not JSON", "{not json"), ("not an object", "[]")):
        broken = tmp_path / f"{label}.zarr"
        shutil.copytree(reference, broken)
        (broken / "zarr.json").write_text(text)
        with pytest.raises(StoreFormatError, match="cannot open as a zarr v3 group"):
            open_store(broken)
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(reference, damaged)
    shard = damaged / "skeleton/joints/c/0/0/0/0/0"
    data = shard.read_bytes()
    for label, changed in (("blosc data", data[:64] + bytes(b ^ 0xFF for b in data[64:512]) + data[512:]),
                           ("index checksum", data[:-1] + bytes([data[-1] ^ 0xFF]))):
        shard.write_bytes(changed)
        joints = open_store(damaged)["skeleton/joints"]
        with pytest.raises(NTUPrepError, match=r"skeleton/joints samples 0\.\.7: cannot read: "):
            read_rows(joints, 0, 8)
        problems = verify_store(open_store(damaged, check=False), deep=True)
        unreadable = [p for p in problems if p.startswith("skeleton/joints samples 0..7 unreadable")]
        assert unreadable, (label, problems)

    class Buggy:
        path = "skeleton/joints"

        def __getitem__(self, key):
            raise AttributeError("a bug, not a damaged shard")

    with pytest.raises(AttributeError, match="a bug"):
        read_rows(Buggy(), 0, 8)
