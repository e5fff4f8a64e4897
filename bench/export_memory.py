"""Peak memory and speed of `ntu-prep export` against the number of samples: flat in N, bounded by a shard.

    .venv/bin/python bench/export_memory.py                      # 1,000 and 4,000 samples, shards of 128
    .venv/bin/python bench/export_memory.py --samples 2000 --shard-size 32 --keep /tmp/mem

For each N it writes a corpus (hard links to the 10 largest of 60 synthetic files, long and mostly
two-person, under distinct NTU60 names), extracts it, stores the xsub split, and runs each export in a
fresh process that resets its peak RSS (/proc/self/clear_refs) after the imports and reports
VmHWM - VmRSS: the memory the export itself took. "output" is what holding the export's content in memory
would take (the pickle's keypoints, the largest x_train, the store's decoded arrays). It also compares
HDF5 codecs (size and speed of writing the whole store, and of reading skeleton/joints sample by sample).

"allocated" is tracemalloc's peak during the export (what Python and NumPy allocate: flat in N, about
3.5x one shard's decoded skeleton/joints); "RSS growth" adds what glibc's per-thread arenas keep of
zarr's reader threads (it wanders by tens of MiB from run to run and levels off).

Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROBE = """
import json, re, sys, time, tracemalloc
from pathlib import Path
import ntu_pipeline.export.hdf5 as hdf5
from ntu_pipeline.export.common import ExportConfig
from ntu_pipeline.export.ctrgcn import write_ctrgcn
from ntu_pipeline.export.pyskl import write_pyskl
from ntu_pipeline.store import open_store

def status_kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))

store, fmt, out, codec = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
trace = sys.argv[5] == "trace"
hdf5.COMPRESSION = codec
open_store(store)["skeleton/joints"][0:1]  # zarr's codecs and thread pools loaded before the baseline
if trace:
    tracemalloc.start()
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before = status_kib("VmRSS")
started = time.perf_counter()
writer = {"pyskl": write_pyskl, "ctrgcn": write_ctrgcn, "hdf5": hdf5.write_hdf5}[fmt]
writer(ExportConfig(store=store, out=out, format=fmt, progress=False, overwrite=True))
seconds = time.perf_counter() - started
print(json.dumps({"before_kib": before, "peak_kib": status_kib("VmHWM"), "seconds": seconds,
                  "traced_peak": tracemalloc.get_traced_memory()[1] if trace else None}))
"""

CODECS = {
    "none": {},
    "lzf+shuffle": {"compression": "lzf", "shuffle": True},
    "gzip1+shuffle": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "gzip4+shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
}


def replicated_corpus(files: list[Path], out: Path, count: int) -> None:
    """`count` .skeleton files under distinct NTU60 names, hard links to (or copies of) `files`."""
    out.mkdir(parents=True)
    for k in range(count):
        a, r, c, p, s = k % 60, (k // 60) % 2, (k // 120) % 3, (k // 360) % 40, k // 14400
        target = out / f"S{s + 1:03d}C{c + 1:03d}P{p + 1:03d}R{r + 1:03d}A{a + 1:03d}.skeleton"
        try:
            os.link(files[k % len(files)], target)
        except OSError:
            shutil.copy(files[k % len(files)], target)


def build_store(root: Path, samples: int, shard_size: int) -> Path:
    from ntu_pipeline.stages.runner import ExtractConfig, extract
    from ntu_pipeline.store import open_store
    from ntu_pipeline.store.splits import make_split
    from ntu_pipeline.synth.corpus import write_corpus

    base = root / "base"
    if not base.is_dir():
        write_corpus(base, 60, 60, seed=2)
    longest = sorted(base.rglob("*.skeleton"), key=lambda p: p.stat().st_size)[-10:]
    raw = root / f"raw{samples}"
    shutil.rmtree(raw, ignore_errors=True)
    replicated_corpus(longest, raw, samples)
    store = root / f"s{samples}.zarr"
    extract(ExtractConfig(skeletons=raw, out=store, dataset="ntu60", shard_size=shard_size, progress=False,
                          overwrite=store.exists()))
    make_split(open_store(store, mode="r+"), "xsub")
    return store


def probe(store: Path, fmt: str, out: Path, codec: dict, trace: bool = False) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, str(store), fmt, str(out), json.dumps(codec),
                             "trace" if trace else "time"], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def output_bytes(fmt: str, out: Path, store: Path) -> int:
    import pickle

    import zarr

    if fmt == "pyskl":
        return sum(a["keypoint"].nbytes for a in pickle.loads(out.read_bytes())["annotations"])
    if fmt == "ctrgcn":
        return max(len(np.load(path)["y_train"]) * 300 * 150 * 4 for path in out.iterdir())  # x_train
    group = zarr.open_group(str(store), mode="r")
    total = 0
    for _, array in group.members(max_depth=None):
        if isinstance(array, zarr.Array):
            total += array.nbytes
    return total


def hdf5_read_rate(path: Path) -> float:
    import h5py

    with h5py.File(path, "r") as f:
        joints = f["skeleton/joints"]
        started = time.perf_counter()
        for i in range(joints.shape[0]):
            joints[i]
        return joints.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp one)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="export_memory_"))
    root.mkdir(parents=True, exist_ok=True)
    from ntu_pipeline.export.hdf5 import COMPRESSION

    print(f"shard size {args.shard_size}; work folder {root}")
    print(f"{'samples':>7s} {'format':7s} {'allocated':>10s} {'RSS growth':>11s} {'(baseline)':>11s} "
          f"{'output':>9s} {'seconds':>8s} {'rows/s':>7s}")
    stores = {}
    for n in args.samples:
        store = stores[n] = build_store(root, n, args.shard_size)
        for fmt, out in (("pyskl", root / "a.pkl"), ("ctrgcn", root / "npz"), ("hdf5", root / "a.h5")):
            timed = probe(store, fmt, out, COMPRESSION)  # speed and RSS without tracemalloc's overhead
            traced = probe(store, fmt, out, COMPRESSION, trace=True)["traced_peak"] / 2**20
            grew = (timed["peak_kib"] - timed["before_kib"]) / 1024
            size = output_bytes(fmt, out, store) / 2**20
            rows = 2 * n if fmt == "ctrgcn" else n  # two npz files
            print(f"{n:7d} {fmt:7s} {traced:6.1f} MiB {grew:7.1f} MiB {timed['before_kib'] / 1024:7.0f} MiB "
                  f"{size:5.0f} MiB {timed['seconds']:8.1f} {rows / timed['seconds']:7.0f}")

    n = args.samples[-1]
    print(f"\nHDF5 codecs, {n} samples (store {stores[n]}):")
    print(f"{'codec':15s} {'size MiB':>9s} {'write s':>8s} {'read joints samples/s':>22s}")
    for name, codec in CODECS.items():
        out = root / f"codec_{name}.h5"
        result = probe(stores[n], "hdf5", out, codec)
        size, rate = out.stat().st_size / 2**20, hdf5_read_rate(out)
        print(f"{name:15s} {size:9.1f} {result['seconds']:8.1f} {rate:22.0f}")
        out.unlink()
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
