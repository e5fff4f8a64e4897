"""`ntu-prep export` as a whole: failed exports, the command line's one-line refusals, the memory bound."""

from __future__ import annotations

import json
import pickle
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from exports import zarr_arrays

from cli.prep import main
from ntu_pipeline.export import pyskl as pyskl_module
from ntu_pipeline.export.common import ExportConfig
from ntu_pipeline.export.pyskl import pyskl_keypoint, write_pyskl
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import STATUS_CODES, open_store
from ntu_pipeline.synth.corpus import write_corpus

BENCH = Path(__file__).resolve().parent.parent / "bench"

# --- outputs, errors and the command line ---------------------------------------------------------------


def test_a_failed_export_leaves_no_file_and_keeps_the_old_one(synth_store, tmp_path, monkeypatch):
    out = tmp_path / "a.pkl"
    out.write_bytes(b"earlier export")
    calls = []

    def failing(joints):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        return pyskl_keypoint(joints)

    monkeypatch.setattr(pyskl_module, "pyskl_keypoint", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_pyskl(ExportConfig(store=synth_store, out=out, format="pyskl", overwrite=True, progress=False))
    assert out.read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pkl"]  # no partial file left


def test_cli_exports_each_format(synth_store, tmp_path):
    runner = CliRunner()
    store = str(synth_store)
    result = runner.invoke(main, ["export", store, "--format", "pyskl", "-o", str(tmp_path / "a.pkl"),
                                  "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'a.pkl'}" in result.output and "split xview: not in the store" in result.output
    result = runner.invoke(main, ["export", store, "--format", "ctrgcn", "-o", str(tmp_path / "ctr"),
                                  "--protocol", "xview", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ctr" / "NTU60_CV.npz").is_file() and not (tmp_path / "ctr" / "NTU60_CS.npz").exists()
    result = runner.invoke(main, ["export", store, "--format", "hdf5", "-o", str(tmp_path / "s.h5"),
                                  "--no-rgb", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.h5").is_file()


def one_line_error(args: list[str], exit_code: int = 1) -> str:
    """The one line of a refused export; exit code 1, or 2 for options that cannot work together."""
    result = CliRunner().invoke(main, ["export", *args, "--quiet"])
    assert result.exit_code == exit_code, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    return result.output


def test_cli_refuses_with_one_line_messages(synth_store, tmp_path):
    existing = tmp_path / "a.pkl"
    existing.write_bytes(b"keep me")
    assert "already exists (--overwrite replaces it)" in one_line_error(
        [str(synth_store), "--format", "pyskl", "-o", str(existing)])
    assert existing.read_bytes() == b"keep me"
    assert "protocol xsub120 is defined on ntu120; this store holds ntu60" in one_line_error(
        [str(synth_store), "--format", "pyskl", "-o", str(tmp_path / "b.pkl"), "--protocol", "xsub120"])
    assert "--no-rgb applies to --format hdf5 only" in one_line_error(
        [str(synth_store), "--format", "ctrgcn", "-o", str(tmp_path / "c"), "--no-rgb"], exit_code=2)
    assert "--protocol does not apply to --format hdf5" in one_line_error(
        [str(synth_store), "--format", "hdf5", "-o", str(tmp_path / "d.h5"), "--protocol", "xsub"],
        exit_code=2)
    (tmp_path / "npz").mkdir()
    (tmp_path / "npz" / "NTU60_CV.npz").write_bytes(b"keep me")
    assert "NTU60_CV.npz: already exists" in one_line_error(
        [str(synth_store), "--format", "ctrgcn", "-o", str(tmp_path / "npz")])
    assert not (tmp_path / "npz" / "NTU60_CS.npz").exists()  # refused before writing any file
    assert "is a file; --format ctrgcn writes a folder" in one_line_error(
        [str(synth_store), "--format", "ctrgcn", "-o", str(existing)])
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.partial"))


def test_cli_refuses_incomplete_and_empty_stores(synth_store, tmp_path):
    incomplete = tmp_path / "incomplete.zarr"
    shutil.copytree(synth_store, incomplete)
    zarr.open_group(str(incomplete), mode="r+").attrs["state"] = "extracting"
    assert "the store is not complete (state 'extracting')" in one_line_error(
        [str(incomplete), "--format", "hdf5", "-o", str(tmp_path / "a.h5")])

    empty = tmp_path / "empty.zarr"
    shutil.copytree(synth_store, empty)
    group = zarr.open_group(str(empty), mode="r+")
    group["samples/status"][:] = STATUS_CODES["failed"]
    del group["splits/xsub"]
    message = one_line_error([str(empty), "--format", "pyskl", "-o", str(tmp_path / "a.pkl")])
    assert "has skeleton data" in message and "nothing to export" in message
    message = one_line_error([str(empty), "--format", "ctrgcn", "-o", str(tmp_path / "c")])
    assert "nothing to export" in message
    assert not (tmp_path / "a.pkl").exists()


# --- memory ---------------------------------------------------------------------------------------------

MEMORY_PROBE = """
import json, re, sys, time, tracemalloc
from pathlib import Path
from ntu_pipeline.export.common import ExportConfig
from ntu_pipeline.export.ctrgcn import write_ctrgcn
from ntu_pipeline.export.hdf5 import write_hdf5
from ntu_pipeline.export.pyskl import write_pyskl
from ntu_pipeline.store import open_store

def status_kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))

store, fmt, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
open_store(store)["skeleton/joints"][0:1]  # zarr's codecs and thread pools loaded before the baseline
tracemalloc.start()
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before = status_kib("VmRSS")
started = time.perf_counter()
writer = {"pyskl": write_pyskl, "ctrgcn": write_ctrgcn, "hdf5": write_hdf5}[fmt]
writer(ExportConfig(store=store, out=out, format=fmt, progress=False))
seconds = time.perf_counter() - started
print(json.dumps({"before_kib": before, "peak_kib": status_kib("VmHWM"), "seconds": seconds,
                  "traced_peak": tracemalloc.get_traced_memory()[1]}))
"""

# Bounds for an export of a store of 32-sample shards (a joints shard decodes to 5.5 MB), whatever the number
# of samples. Traced: what Python and NumPy allocate at the peak (measured 22-26 MiB: zarr's read of a shard
# holds about 3x its decoded size, plus one block of output). RSS: the process's peak growth (measured 45-70
# MiB; glibc keeps per-thread arenas of zarr's reader threads). bench/export_memory.py shows both flat from
# 1,000 to 4,000 samples.
TRACED_BOUND_MIB = 40
RSS_BOUND_MIB = 128


@pytest.mark.slow
def test_exports_stay_within_a_memory_bound_independent_of_the_number_of_samples(tmp_path):
    """2,000 samples in shards of 32: each export allocates at most TRACED_BOUND_MIB at its peak and grows
    the process by less than RSS_BOUND_MIB, while holding its output would take more than that (printed:
    about 60 MiB of pyskl keypoints, 250 MiB of ctrgcn x_train, 950 MiB of store arrays for hdf5)."""
    # the corpus of bench/export_memory.py, which measures the same bound from 1,000 to 4,000 samples
    replicated_corpus = runpy.run_path(str(BENCH / "export_memory.py"))["replicated_corpus"]
    write_corpus(tmp_path / "base", 60, 60, seed=2)
    longest = sorted((tmp_path / "base").rglob("*.skeleton"), key=lambda p: p.stat().st_size)[-10:]
    replicated_corpus(longest, tmp_path / "raw", 2000)  # long two-person samples: a large pickle
    store = tmp_path / "big.zarr"
    extract(ExtractConfig(skeletons=tmp_path / "raw", out=store, dataset="ntu60", shard_size=32,
                          progress=False))
    group = open_store(store)
    assert group["samples/name"].shape[0] == 2000
    outputs = {"pyskl": tmp_path / "a.pkl", "ctrgcn": tmp_path / "npz", "hdf5": tmp_path / "a.h5"}
    for fmt, out in outputs.items():
        result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(store), fmt, str(out)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        rss_mib = (probe["peak_kib"] - probe["before_kib"]) / 1024
        traced_mib = probe["traced_peak"] / 2**20
        if fmt == "pyskl":
            in_memory = sum(a["keypoint"].nbytes for a in pickle.loads(out.read_bytes())["annotations"])
        elif fmt == "ctrgcn":
            in_memory = max(300 * 150 * 4 * len(np.load(path)["y_train"]) for path in out.iterdir())
        else:
            in_memory = sum(a.nbytes for a in zarr_arrays(group).values())
        print(f"{fmt}: allocated at most {traced_mib:.1f} MiB, peak RSS +{rss_mib:.1f} MiB over "
              f"{probe['before_kib'] / 1024:.0f} MiB; holding its output would take "
              f"{in_memory / 2**20:.0f} MiB; {probe['seconds']:.1f} s")
        assert traced_mib < TRACED_BOUND_MIB and rss_mib < RSS_BOUND_MIB, (fmt, traced_mib, rss_mib)
        assert in_memory / 2**20 > TRACED_BOUND_MIB, (fmt, in_memory)  # so the bound says something
