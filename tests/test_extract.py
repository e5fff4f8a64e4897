"""The skeleton stage end to end: store schema, failures, parallel backends, splits, resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from stores import assert_stores_equal, shards_done

from ntu_pipeline.errors import StoreFormatError
from ntu_pipeline.manifests import missing_samples
from ntu_pipeline.sample_id import SampleId
from ntu_pipeline.skeleton.actors import motion
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.stages.skeleton import prepare_skeleton
from ntu_pipeline.stages.stage import SampleEntry
from ntu_pipeline.store import (
    MAX_FRAMES,
    Status,
    labelled,
    open_store,
    read_sample,
    read_strings,
    verify_store,
)
from ntu_pipeline.store.splits import make_split, usable_samples
from ntu_pipeline.synth.corpus import write_corpus

MISSING_NAME = sorted(missing_samples("ntu60"))[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, 40, 4, seed=1)
    return root


@pytest.fixture(scope="module")
def serial_store(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "s.zarr"
    extract(ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", shard_size=8, progress=False))
    return out


def test_store_follows_the_documented_schema(serial_store, corpus):
    group = open_store(serial_store)
    attrs = group.attrs
    assert attrs["format"] == "ntu-prep/2" and attrs["dataset"] == "ntu60" and attrs["state"] == "complete"
    stage = attrs["stages"]["skeleton"]
    assert stage["counts"] == {"pending": 0, "ok": 40, "missing_skeleton": 0, "failed": 0, "absent": 0}
    assert attrs["status_codes"] == {"pending": -1, "ok": 0, "missing_skeleton": 1, "failed": 2, "absent": 3}
    assert group["samples/status"].fill_value == -1  # a row no task wrote reads as pending, never ok
    assert attrs["max_frames"] == MAX_FRAMES and stage["shard_size"] == 8 and stage["state"] == "complete"
    assert Path(stage["source"]["folder"]).is_absolute() and stage["source"]["num_files"] == 40
    names = read_strings(group["samples/name"])
    assert names == sorted(names) and len(names) == 40
    assert all(len(n) == 20 for n in names)
    for field in ("label", "setup", "camera", "performer", "replication"):
        assert group["samples"][field].dtype == np.int16
        expected = [getattr(SampleId.parse(n), field) for n in names]
        assert group["samples"][field][:].tolist() == expected
    assert group["samples/num_frames"].dtype == np.int32
    shapes = {"joints": (40, 300, 2, 25, 3), "motion": (40, 300, 2, 25, 3),
              "color_xy": (40, 300, 2, 25, 2), "tracking": (40, 300, 2, 25)}
    for name, shape in shapes.items():
        array = group["skeleton"][name]
        assert array.shape == shape and array.chunks == (1, *shape[1:]) and array.shards == (8, *shape[1:])
    assert group["skeleton/tracking"].dtype == np.int8 and group["skeleton/joints"].dtype == np.float32
    # parallel writers mark their own shard: one chunk (file) per shard, never a shared one to race on
    assert group["progress/shard_done"].chunks == (1,) and group["progress/shard_digest"].chunks[0] == 1
    for name in ("num_frames", "num_bodies", "status", "error", "note"):
        assert group["samples"][name].chunks == (8,), name
    assert verify_store(group) == []


def test_each_stored_sample_equals_the_stage_run_on_its_file(serial_store, corpus):
    group = open_store(serial_store)
    files = {p.stem: p for p in corpus.rglob("*.skeleton")}
    for index in (0, 17, 39):
        sample = read_sample(group, index)
        prepared = prepare_skeleton(SampleEntry(sample["name"], index, str(files[sample["name"]]), False))
        assert sample["num_frames"] == prepared.arrays["samples/num_frames"]
        for name in ("joints", "motion", "color_xy", "tracking"):
            np.testing.assert_array_equal(sample[name], prepared.arrays[f"skeleton/{name}"])
        n = sample["num_frames"]
        np.testing.assert_array_equal(sample["frame_index"], prepared.arrays["skeleton/frame_index"][:n])
        assert (group["skeleton/frame_index"][index, n:] == -1).all()
        assert (np.diff(sample["frame_index"]) > 0).all()  # kept frames in file order
        present = np.abs(sample["joints"]).sum(axis=(2, 3)) > 0
        np.testing.assert_allclose(sample["motion"], motion(sample["joints"], present), atol=1e-6)
        assert not group["skeleton/joints"][index, sample["num_frames"]:].any()


def test_failures_are_recorded_with_their_reason_and_the_rest_finishes(corpus, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(corpus, raw)
    files = sorted(raw.rglob("*.skeleton"))
    lines = files[3].read_text().splitlines(keepends=True)
    files[3].write_text("".join(lines[: len(lines) // 2]))  # ends early
    shutil.copy(files[5], raw / f"{MISSING_NAME}.skeleton")  # on the official missing list
    (raw / "notes.skeleton").write_text("1\n0\n")  # not an NTU sample name
    (raw / "S001C001P001R001A002.skeleton").write_text("2\n0\n0\n")  # no body in any frame
    summary = extract(ExtractConfig(skeletons=raw, out=tmp_path / "s.zarr", dataset="ntu60", shard_size=8,
                                    progress=False))
    (stage,) = summary.stages
    assert labelled(stage.counts) == {"pending": 0, "ok": 39, "missing_skeleton": 1, "failed": 2, "absent": 0}
    failures = dict(stage.failures)
    broken = SampleId.from_path(files[3]).name
    assert str(files[3]) in failures[broken] and "expected" in failures[broken]
    assert "no body" in failures["S001C001P001R001A002"]
    assert any("notes.skeleton" in path and "not an NTU sample name" in why for path, why in summary.ignored)
    group = open_store(tmp_path / "s.zarr")
    names = read_strings(group["samples/name"])
    errors = read_strings(group["samples/error"])
    assert errors[names.index(broken)] == failures[broken]
    assert group["samples/status"][names.index(MISSING_NAME)] == Status.MISSING_SKELETON
    assert group["samples/num_frames"][names.index(MISSING_NAME)] > 0  # its data is kept, for --keep-missing
    assert verify_store(group) == []

    # a split is membership: failed samples stay in it, the official missing list is left out by default
    without = make_split(open_store(tmp_path / "s.zarr", mode="r+"), "xsub")
    with_missing = make_split(open_store(tmp_path / "s.zarr", mode="r+"), "xsub", keep_missing=True)
    assert without.excluded_missing == 1
    assert labelled(without.modalities["skeleton"]) == {"pending": 0, "ok": 39, "missing_skeleton": 0,
                                                        "failed": 2, "absent": 0}
    assert len(without.train) + len(without.test) == 41
    assert len(with_missing.train) + len(with_missing.test) == 42
    # and a skeleton consumer takes the ok ones, the missing-list one too where the split kept it
    both = np.concatenate([without.train, without.test])
    kept, left_out = usable_samples(group, both, ("skeleton",))
    assert len(kept) == 39 and left_out == {"skeleton failed": 2}
    kept, _ = usable_samples(group, np.concatenate([with_missing.train, with_missing.test]), ("skeleton",),
                             keep_missing=True)
    assert len(kept) == 40 and names.index(MISSING_NAME) in kept


def test_parallel_loky_run_gives_the_same_store(corpus, serial_store, tmp_path):
    out = tmp_path / "p.zarr"
    extract(ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", shard_size=8, jobs=2, progress=False))
    assert_stores_equal(serial_store, out)


@pytest.mark.slow
def test_dask_backend_gives_the_same_store(corpus, serial_store, tmp_path):
    out = tmp_path / "d.zarr"
    extract(ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", shard_size=8, jobs=2, backend="dask",
                          progress=False))
    assert_stores_equal(serial_store, out)


@pytest.mark.slow
def test_dask_scheduler_address_runs_on_that_cluster(corpus, serial_store, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "a.zarr"
        extract(ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", shard_size=8, backend="dask",
                              scheduler=cluster.scheduler_address, progress=False))
        with Client(cluster.scheduler_address) as client:
            # the tasks ran on the cluster's worker, not in this process
            prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
            assert "write_shard" in prefixes
    assert_stores_equal(serial_store, out)


def test_split_follows_the_protocol_fields(serial_store, tmp_path):
    out = tmp_path / "copy.zarr"
    shutil.copytree(serial_store, out)
    group = open_store(out, mode="r+")
    result = make_split(group, "xview")
    cameras = group["samples/camera"][:]
    assert set(cameras[result.train]) <= {2, 3} and set(cameras[result.test]) == {1}
    assert len(result.train) + len(result.test) == 40
    stored = open_store(out)["splits/xview/train"][:]
    np.testing.assert_array_equal(stored, result.train)
    with pytest.raises(StoreFormatError, match="ntu120"):
        make_split(group, "xset120")


def test_rerun_with_other_options_is_refused(serial_store, corpus, tmp_path):
    out = tmp_path / "copy.zarr"
    shutil.copytree(serial_store, out)
    with pytest.raises(StoreFormatError, match="--overwrite"):
        extract(ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", shard_size=4, progress=False))


def test_reader_refuses_an_unknown_format(serial_store, tmp_path):
    out = tmp_path / "copy.zarr"
    shutil.copytree(serial_store, out)
    zarr.open_group(str(out), mode="r+").attrs["format"] = "ntu-prep/99"
    with pytest.raises(StoreFormatError, match="ntu-prep/99"):
        open_store(out)


def test_verify_reports_a_damaged_shard(serial_store, tmp_path):
    out = tmp_path / "copy.zarr"
    shutil.copytree(serial_store, out)
    shard = next(p for p in (out / "skeleton" / "joints" / "c").rglob("*") if p.is_file())
    shard.write_bytes(shard.read_bytes()[:100])
    problems = verify_store(open_store(out))
    assert any("skeleton/joints" in p for p in problems)


def test_real_samples_are_extracted(ntu_samples, tmp_path):
    summary = extract(ExtractConfig(skeletons=ntu_samples / "skeletons", out=tmp_path / "real.zarr",
                                    progress=False))
    assert summary.dataset == "ntu60" and summary.stages[0].counts[Status.OK] == 16
    group = open_store(tmp_path / "real.zarr")
    names = read_strings(group["samples/name"])
    two_person = [n for n in names if SampleId.parse(n).action >= 50]
    for name in two_person:
        sample = read_sample(group, names.index(name))
        assert sample["joints"][:, 1].any(), f"{name}: actor 2 is empty"
    for name in set(names) - set(two_person):
        assert group["samples/num_bodies"][names.index(name)] >= 1


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_store(tmp_path):
    raw = tmp_path / "raw"
    write_corpus(raw, 160, 4, seed=2)
    reference = tmp_path / "reference.zarr"
    extract(ExtractConfig(skeletons=raw, out=reference, dataset="ntu60", shard_size=8, progress=False))
    total = zarr.open_group(str(reference), mode="r")["progress/shard_done"].shape[0]

    out = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "cli.prep", "extract", "--skeletons", str(raw), "--out", str(out),
               "--dataset", "ntu60", "--shard-size", "8", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for condition in (lambda: out.exists(), lambda: shards_done(out) >= total // 2):  # early, then midway
        process = subprocess.Popen(command, env=env, cwd=tmp_path)
        assert wait_for(condition, 60), "extract made no progress"
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert shards_done(out) < total
    finished = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "already done" in finished.stdout
    assert_stores_equal(reference, out)
    assert not list(out.rglob("*.partial"))
