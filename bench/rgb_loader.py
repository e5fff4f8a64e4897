"""How fast one DataLoader worker turns stored RGB clips into arrays, on one core, against decoding alone.

    .venv/bin/python bench/rgb_loader.py                      # 96 samples of 32 x 256², ~30 s to build
    .venv/bin/python bench/rgb_loader.py --store /tmp/rgb_bench   # build there once, reuse it next time
    .venv/bin/python bench/rgb_loader.py --profile            # and where the reader's time goes

Builds a store from the two real videos in ../shared/ntu_samples/videos (NTU_SAMPLES overrides; an
H.264 re-encode of 103 frames and a DIVX original of 67) symlinked under --samples distinct NTU60 names,
A001's skeleton copied beside each of its copies, through `extract` with both stages (JPEG q90, 32
frames of 256² by default: shards of 16 samples, so a random order reads from every shard). Then, in
a fresh process pinned to one CPU, every path delivers each sample's clip (all T stored frames, as a
32-frame model takes them from a 32-frame store) in a random order, --passes times (a fixed seed, a new
order each pass; the paths take turns every 8 samples). The page cache is warm: one untimed pass of
every path reads every shard first. Rows:

    decode only        the clip's JPEG chunks, cut out of the shard files into memory beforehand, only
                       decoded (simplejpeg, as the codec decodes) into one reused (T, S, S, 3) buffer:
                       the limit, the baseline (a new array per frame would also time malloc and page
                       faults, which vary with the heap's state: 0 or ~1,500 faults a clip)
    decode into a clip the same into a new (T, S, S, 3) array per clip, as a loader hands clips on
    zarr (RGBClips)    today's worker (model/data/split.py RGBClips.__getitem__, reproduced here): the group
                       opened once; per sample rgb/frame_index[i], the clip's positions, the frames
                       through zarr (array[i], or one array[i, t] per distinct frame), and
                       skeleton/frame_index[i] to match the skeleton frames (a fused model)
    reader, tables resident   the same with FrameReader for the frames, and the two frame-index tables
                       read whole once per worker (their load is timed apart and printed)
    reader, tables via zarr   FrameReader for the frames, the two tables' rows read through zarr per
                       sample (arrays opened once)
    reader alone       FrameReader.read(i) only
    reader alone, out= the same into a row of one (8, T, S, S, 3) batch buffer (`read(..., out=)`), as a
                       worker filling its batch in place (DataLoader `__getitems__`) would
    worker batch       the worker itself: model/data/rgb_clips.py RGBClips.__getitems__ on each 8 samples'
                       ClipRequests, a new (8, T, S, S, 3) batch tensor a call, as the DataLoader calls it

clips/s are of this process's CPU time (zarr's threads included; wall time beside it), median over the
passes, with the best pass, x = against decode only, and the minor page faults a clip (fresh memory
the kernel had to map and zero). Target: a worker >= 0.8x decode only.

Then one worker as training runs it: a DataLoader over RGBClips (batches of 8 in a new random order each
pass, collate_batch, prefetch 4, as model/data/split.py SplitData makes it) with one worker process pinned to
the measuring core and the main process on another core, only taking the batches (no crop, no model):
clips/s of wall time from the first batch to the last (what one core hands the main process, the
shared-memory hand-over included) and of the worker's CPU time (every clip, its start included), median
over the passes. A core's rate divides a GPU's training clips/s into the cores that GPU needs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("NTU_SAMPLES", REPO.parent / "shared" / "ntu_samples"))


# --- the store ----------------------------------------------------------------------------------------

def build_corpus(raw: Path, videos: list[Path], count: int) -> None:
    """Symlink the videos alternately under `count` distinct NTU60 names (setup, camera and performer
    varied; replication and action kept), each with its skeleton copied beside it where there is one."""
    raw.mkdir(parents=True)
    for k in range(count):
        video, j = videos[k % len(videos)], k // len(videos)
        name = f"S{1 + j % 17:03d}C{1 + j // 17 % 3:03d}P{1 + j // 51:03d}{video.name[12:20]}"
        (raw / f"{name}_rgb.avi").symlink_to(video)
        skeleton = SAMPLES / "skeletons" / (video.name.removesuffix("_rgb.avi") + ".skeleton")
        if skeleton.exists():
            shutil.copy(skeleton, raw / f"{name}.skeleton")


def build_store(folder: Path, count: int, frames: int, size: int, jobs: int) -> Path:
    """The store at folder/store.zarr, built from the real videos unless it is there already."""
    from ntu_pipeline.stages.runner import ExtractConfig, extract

    store = folder / "store.zarr"
    if (store / "zarr.json").exists():
        return store
    videos = sorted((SAMPLES / "videos").glob("*_rgb.avi"))
    if not videos:
        sys.exit(f"no real videos under {SAMPLES}/videos (set NTU_SAMPLES to their folder)")
    build_corpus(folder / "raw", videos, count)
    started = time.perf_counter()
    extract(ExtractConfig(skeletons=folder / "raw", videos=folder / "raw", out=store, dataset="ntu60",
                          rgb_frames=frames, rgb_size=size, jobs=jobs, progress=False), say=lambda _: None)
    print(f"built {store} in {time.perf_counter() - started:.0f} s")
    return store


# --- what a worker does per sample --------------------------------------------------------------------

def clip_positions(rgb_index: np.ndarray, frames: int) -> np.ndarray:
    """The clip's stored positions (frames,), as RGBClips computes them for a fixed-frame store."""
    import torch

    from model.data.transforms import window_positions

    stored = torch.tensor([max(int((rgb_index >= 0).sum()), 1)])
    return window_positions(stored, frames, torch.ones(1), None)[0].round().long().numpy()


def skeleton_frames(rgb_index: np.ndarray, pos: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The kept skeleton frame of each clip frame (T,), -1 where none (RGBClips's matching)."""
    source = rgb_index[pos]
    out = np.full(len(pos), -1, dtype=np.int64)
    if len(kept):
        k = np.searchsorted(kept, source).clip(max=len(kept) - 1)
        out = np.where((source >= 0) & (kept[k] == source), k, -1).astype(np.int64)
    return out


def zarr_worker(group, frames: int, num_frames: np.ndarray) -> Callable[[int], np.ndarray]:
    """RGBClips.__getitem__ today (window=False, skeleton=True): three arrays opened per sample."""
    def clip(i: int) -> np.ndarray:
        rgb_index = group["rgb/frame_index"][i]
        pos = clip_positions(rgb_index, frames)
        array = group["rgb/frames"]
        if np.array_equal(pos, np.arange(array.shape[1])):
            out = array[i]
        else:
            unique, back = np.unique(pos, return_inverse=True)
            out = np.stack([array[i, int(p)] for p in unique])[back]
        skeleton_frames(rgb_index, pos, group["skeleton/frame_index"][i][:num_frames[i]])
        return out
    return clip


def reader_worker(reader, rgb_rows, skeleton_rows, frames: int, num_frames: np.ndarray):
    """FrameReader for the frames; the tables' rows from `rgb_rows(i)` and `skeleton_rows(i)`."""
    def clip(i: int) -> np.ndarray:
        rgb_index = rgb_rows(i)
        pos = clip_positions(rgb_index, frames)
        out = reader.read(i, pos)
        skeleton_frames(rgb_index, pos, skeleton_rows(i)[:num_frames[i]])
        return out
    return clip


def stored_chunks(store: Path, n: int, positions: list[np.ndarray]) -> list[list[bytes]]:
    """Each sample's JPEG chunks at its positions, cut out of the shard files by their index (this
    bench's own reading of the format, independent of FrameReader)."""
    import zarr

    array = zarr.open_array(str(store / "rgb/frames"), mode="r")
    per, t = array.shards[0], array.shape[1]
    out = []
    for i in range(n):
        path = store / "rgb/frames/c" / str(i // per) / "0" / "0" / "0" / "0"
        data = path.read_bytes()
        index = np.frombuffer(data[-(per * t * 16 + 4):-4], "<u8").reshape(per, t, 2)[i % per]
        out.append([data[int(o):int(o + s)] for o, s in index[positions[i]] if o != 2**64 - 1])
    return out


def decode_only(chunks: list[list[bytes]], frame: tuple[int, ...]) -> Callable[[int], None]:
    import simplejpeg

    # one clip buffer, reused: no allocation is timed, only decoding (into a frame of its own each,
    # as a clip needs; one reused frame would measure that frame's luck with cache alignment)
    buffer = np.empty((max(map(len, chunks)), *frame), np.uint8)  # (T, S, S, 3)

    def clip(i: int) -> None:
        for k, data in enumerate(chunks[i]):
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=buffer[k])
    return clip


def decode_into_clip(chunks: list[list[bytes]], frame: tuple[int, ...]) -> Callable[[int], np.ndarray]:
    import simplejpeg

    def clip(i: int) -> np.ndarray:
        out = np.empty((len(chunks[i]), *frame), np.uint8)  # (T, S, S, 3)
        for k, data in enumerate(chunks[i]):
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out[k])
        return out
    return clip


# --- timing -------------------------------------------------------------------------------------------

def each(clip: Callable[[int], object]) -> Callable[[list[int]], None]:
    """A path of one sample a call as a path of a block of samples."""
    def block(indices: list[int]) -> None:
        for i in indices:
            clip(i)
    return block


def time_paths(paths: dict[str, Callable[[list[int]], object]], n: int, passes: int, seed: int,
               block: int = 8) -> dict:
    """Per path (called with `block` samples at a time), [(clips/s of CPU time, clips/s of wall time,
    minor page faults a clip)] for each pass over all n samples.

    Within a pass the paths take turns every `block` samples, so that the machine's drift (it is shared)
    and what one path leaves behind (zarr's threads, cold caches) fall on every path alike."""
    rng = np.random.default_rng(seed)
    for fn in paths.values():  # warm: page cache, zarr's loop and codec pipeline, imports
        for lo in range(0, n, block):
            fn(list(range(lo, min(lo + block, n))))
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
    for _ in range(passes):
        order = rng.permutation(n).tolist()
        spent = {name: [0.0, 0.0, 0] for name in paths}
        for lo in range(0, n, block):
            for name, fn in paths.items():
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                cpu, wall = time.process_time(), time.perf_counter()
                fn(order[lo:lo + block])
                spent[name][0] += time.process_time() - cpu
                spent[name][1] += time.perf_counter() - wall
                spent[name][2] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        for name, (cpu, wall, faults) in spent.items():
            rates[name].append((n / cpu, n / wall, faults / n))
    return rates


def one_worker(store: Path, requests: list, passes: int, seed: int, worker_core: int, main_core: int,
               batch: int = 8) -> list[tuple[float, float]]:
    """Per pass, (clips/s of wall time after the first batch, clips/s of the worker's CPU time) of a
    DataLoader as SplitData makes it (RGBClips, collate_batch, prefetch 4) with one worker, pinned to
    `worker_core`, this process on `main_core` taking the batches (a new random order each pass)."""
    import torch

    from model.data.rgb_clips import RGBClips, collate_batch

    def pin_worker(_: int) -> None:
        os.sched_setaffinity(0, {worker_core})

    rng = np.random.default_rng(seed)
    os.sched_setaffinity(0, {main_core})
    rates = []
    try:
        for _ in range(passes):
            order = rng.permutation(len(requests))
            plan = [[requests[i] for i in order[lo:lo + batch]] for lo in range(0, len(order), batch)]
            loader = torch.utils.data.DataLoader(RGBClips(store), batch_sampler=plan,
                                                 collate_fn=collate_batch, num_workers=1, prefetch_factor=4,
                                                 worker_init_fn=pin_worker)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            clips, start = 0, None
            for k, clip_batch in enumerate(loader):
                if k == 0:
                    start = time.perf_counter()  # the worker started and delivered once: not timed
                else:
                    clips += len(clip_batch)
            wall = time.perf_counter() - start
            del loader  # the worker has exited (an exhausted iterator joins it): its CPU time is counted
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            rates.append((clips / wall, len(requests) / cpu))
    finally:
        os.sched_setaffinity(0, {worker_core})
    return rates


def read_plan(reader, positions: list[np.ndarray]) -> tuple[float, float, float]:
    """Mean preads per clip (index excluded), bytes read per clip and bytes of the clip's chunks."""
    from ntu_pipeline.store.frame_reader import EMPTY, plan_reads, sample_entries

    reads = read_bytes = needed = 0
    n = len(positions)
    for i in range(n):
        entries = sample_entries(reader.layout, i)[np.unique(positions[i])]
        entries = entries[entries[:, 0] != EMPTY].astype(np.int64)
        plan = plan_reads(entries[:, 0], entries[:, 0] + entries[:, 1])
        reads += len(plan)
        read_bytes += sum(hi - lo for lo, hi, _ in plan)
        needed += int(entries[:, 1].sum())
    return reads / n, read_bytes / n, needed / n


def profile(fn: Callable[[int], object], n: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        fn(i)
    profiler.disable()
    print("\nprofile of 'reader, tables resident', one pass (tottime):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--frames", type=int, default=32, help="frames stored per sample")
    parser.add_argument("--clip-frames", type=int, default=None, help="frames per clip (default: all)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes building the store")
    parser.add_argument("--store", type=Path, default=None, help="build into (or reuse) this folder")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args()
    if args.measure:
        run(args.store / "store.zarr", args)
        return
    folder = args.store or Path(tempfile.mkdtemp(prefix="rgb_loader_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        build_store(folder, args.samples, args.frames, args.size, args.jobs)
        # timed in a fresh process: the build leaves threads and caches behind that would share the core
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--store", str(folder), "--measure"],
                       check=True)
    finally:
        if args.store is None:
            shutil.rmtree(folder)


def run(store: Path, args) -> None:
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    import numcodecs
    import torch

    torch.set_num_threads(1)
    numcodecs.blosc.set_nthreads(1)

    from model.data.rgb_clips import ClipRequest, RGBClips
    from ntu_pipeline.store import open_store
    from ntu_pipeline.store.frame_reader import FrameReader

    group = open_store(store)
    n, t = group["rgb/frames"].shape[:2]
    frames = args.clip_frames or t
    num_frames = group["samples/num_frames"][:]
    started = time.perf_counter()
    rgb_table, skeleton_table = group["rgb/frame_index"][:], group["skeleton/frame_index"][:]
    load_s = time.perf_counter() - started
    reader = FrameReader(store, "rgb/frames")
    rgb_array, skeleton_array = group["rgb/frame_index"], group["skeleton/frame_index"]
    positions = [clip_positions(rgb_table[i], frames) for i in range(n)]
    chunks = stored_chunks(store, n, positions)
    batch = np.empty((8, frames, *reader.shape[2:]), reader.layout.dtype)  # a batch a worker fills
    clips = {
        "decode only": decode_only(chunks, reader.shape[2:]),
        "decode into a clip": decode_into_clip(chunks, reader.shape[2:]),
        "zarr (RGBClips today)": zarr_worker(group, frames, num_frames),
        "reader, tables resident": reader_worker(reader, rgb_table.__getitem__, skeleton_table.__getitem__,
                                                 frames, num_frames),
        "reader, tables via zarr": reader_worker(reader, rgb_array.__getitem__, skeleton_array.__getitem__,
                                                 frames, num_frames),
        "reader alone": lambda i: reader.read(i, positions[i]),
        "reader alone, out=": lambda i: reader.read(i, positions[i], out=batch[i % len(batch)]),
    }
    requests = [ClipRequest(i, positions[i]) for i in range(n)]  # what the main process plans
    worker = RGBClips(store)
    paths = {name: each(clip) for name, clip in clips.items()}
    paths["worker batch"] = lambda block: worker.__getitems__([requests[i] for i in block])
    kb = np.mean([sum(map(len, c)) for c in chunks]) / 1024
    print(f"{store}: {n} samples of {t} x {args.size}² ({kb:.0f} KB of JPEG a clip), shards of "
          f"{reader.layout.samples_per_shard}; clips of {frames} frames; one core, page cache warm, "
          f"{args.passes} passes")
    rates = time_paths(paths, n, args.passes, args.seed)
    base = statistics.median(cpu for cpu, _, _ in rates["decode only"])
    base_wall = statistics.median(wall for _, wall, _ in rates["decode only"])
    heads = ("clips/s", 8), ("best", 7), ("x", 5), ("wall/s", 8), ("x wall", 7), ("faults", 7)
    print(f"\n{'path':26s} " + " ".join(f"{h:>{w}s}" for h, w in heads))
    for name, per_pass in rates.items():
        cpu, wall, faults = (statistics.median(p[k] for p in per_pass) for k in range(3))
        best = max(c for c, _, _ in per_pass)
        print(f"{name:26s} {cpu:8.1f} {best:7.1f} {cpu / base:5.2f} {wall:8.1f} {wall / base_wall:7.2f} "
              f"{faults:7.0f}")
    table_mb = (rgb_table.nbytes + skeleton_table.nbytes) / 2**20
    print(f"\ntables resident: rgb/frame_index + skeleton/frame_index, {table_mb:.1f} MB for {n} samples "
          f"({table_mb / n * 56_880:.0f} MB at NTU60's 56,880), read in {load_s * 1000:.0f} ms")
    reads, read_kb, needed_kb = (v / 1024 if k else v for k, v in enumerate(read_plan(reader, positions)))
    print(f"reader: {reads:.1f} preads a clip besides the index (MAX_GAP merges neighbours), "
          f"{read_kb:.0f} KB read for {needed_kb:.0f} KB of chunks")
    if len(cores) < 2:
        print("\none DataLoader worker: not measured (one core here: the main process would share it)")
    else:
        loader = one_worker(store, requests, args.passes, args.seed, cores[0], cores[1])
        wall, cpu = (statistics.median(p[k] for p in loader) for k in range(2))
        print(f"\none DataLoader worker (core {cores[0]}; main process on core {cores[1]}): {wall:.1f} "
              f"clips/s of wall time (best {max(w for w, _ in loader):.1f}), {cpu:.1f} clips/s of its CPU "
              f"time; x {wall / base:.2f} and {cpu / base:.2f} decode only")
    if args.profile:
        profile(clips["reader, tables resident"], n)


if __name__ == "__main__":
    main()
