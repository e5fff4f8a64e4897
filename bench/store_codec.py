"""Which codec for the store's skeleton arrays: size on disk, write and read speed.

    .venv/bin/python bench/store_codec.py [--samples 512]

Takes the real samples in ../shared/ntu_samples/skeletons (NTU_SAMPLES overrides), runs the stage on
them, tiles the prepared arrays up to --samples, and writes/reads `skeleton/joints`-shaped sharded arrays
with each candidate codec, the way the stage writes them (whole shards, `ntu_pipeline.store.shards`). Reads go
through zarr sample by sample, as a training loader does. Figures are printed as ratios against blosc at
level 0 (no compression) measured in the same run. Blosc runs on one thread, as one worker does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ntu_pipeline.stages.skeleton import prepare_skeleton
from ntu_pipeline.stages.stage import SampleEntry
from ntu_pipeline.store import MAX_FRAMES
from ntu_pipeline.store.shards import write_whole_shard

CANDIDATES = {
    "none": BloscCodec(cname="lz4", clevel=0, shuffle="noshuffle"),
    "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-zstd3-shuffle": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "blosc-zstd3-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "blosc-zstd1-shuffle": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
}


def real_arrays(samples_dir: Path, count: int) -> np.ndarray:
    files = sorted((samples_dir / "skeletons").glob("*.skeleton"))
    if not files:
        raise SystemExit(f"no real samples under {samples_dir}/skeletons (set NTU_SAMPLES)")
    out = np.zeros((count, MAX_FRAMES, 2, 25, 3), np.float32)  # zero-padded, as in the store
    entries = [SampleEntry(f.stem, 0, str(f), False) for f in files]
    prepared = [prepare_skeleton(entry).arrays["skeleton/joints"] for entry in entries]
    for i in range(count):
        joints = prepared[i % len(prepared)]
        out[i, :len(joints)] = joints
    return out


def measure(data: np.ndarray, codec, path: Path, shard: int) -> dict[str, float]:
    group = zarr.open_group(str(path.parent), mode="a")
    array = group.create_array(path.name, shape=data.shape, dtype="float32", chunks=(1, *data.shape[1:]),
                               shards=(shard, *data.shape[1:]), compressors=codec, fill_value=0)
    start = time.perf_counter()
    for k, lo in enumerate(range(0, len(data), shard)):
        write_whole_shard(path.parent, array, k, data[lo:lo + shard])
    write = time.perf_counter() - start
    array = zarr.open_array(str(path), mode="r")
    start = time.perf_counter()
    for i in range(len(data)):
        array[i]
    read = time.perf_counter() - start
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())  # the array's folder
    return {"bytes": size, "write_s": write, "read_s": read}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--shard", type=int, default=64)
    args = parser.parse_args()
    numcodecs.blosc.set_nthreads(1)
    repo = Path(__file__).resolve().parent.parent
    samples_dir = Path(os.environ.get("NTU_SAMPLES", repo.parent / "shared" / "ntu_samples"))
    data = real_arrays(samples_dir, args.samples)
    raw_mb = data.nbytes / 2**20
    print(f"{args.samples} samples of (300, 2, 25, 3) float32 = {raw_mb:.0f} MiB raw, shard {args.shard}, "
          f"frames kept per sample {MAX_FRAMES} max")
    tmp = Path(tempfile.mkdtemp(prefix="codec-bench-"))
    try:
        results = {name: measure(data, codec, tmp / name, args.shard)
                   for name, codec in CANDIDATES.items()}
    finally:
        shutil.rmtree(tmp)
    base = results["none"]
    print(f"{'codec':24s} {'size MiB':>9s} {'ratio':>6s} {'write ms/sample':>15s} {'read samples/s':>15s} "
          f"{'read vs none':>12s}")
    for name, r in results.items():
        print(f"{name:24s} {r['bytes'] / 2**20:9.2f} {base['bytes'] / r['bytes']:6.1f} "
              f"{1e3 * r['write_s'] / args.samples:15.3f} {args.samples / r['read_s']:15.0f} "
              f"{base['read_s'] / r['read_s']:12.2f}")


if __name__ == "__main__":
    main()
