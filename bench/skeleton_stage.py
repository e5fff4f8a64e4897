"""Speed of the skeleton stage against a plain line-by-line Python parse, per core.

    .venv/bin/python bench/skeleton_stage.py                 # 2,000 files, ~1 min
    .venv/bin/python bench/skeleton_stage.py --files 4000    # peak RSS must not grow with the corpus
    .venv/bin/python bench/skeleton_stage.py --keep          # keep the corpus and the stores, print where

Builds a corpus of --files `.skeleton` files in a temporary folder by copying the real samples in
../shared/ntu_samples/skeletons (NTU_SAMPLES overrides) under distinct valid NTU60 names (setups 1-17,
actions 1-60, none from the official missing-skeleton list). Then runs three phases on that corpus,
each in a fresh process pinned to one CPU, so that each reports its own peak RSS:

    plain   `plain_parser.read_skeleton_plain` on every file (the way CTR-GCN's `read_skeleton_filter`
            reads them: a dict per joint line), results dropped
    parse   `ntu_pipeline.skeleton.parse_skeleton` on every file, results dropped
    stage   the whole stage: `extract(ExtractConfig(..., dataset="ntu60", jobs=1))`, i.e. parse, select
            actors, motion, write the zarr store

and prints ms/file (best of --repeat runs), MB/s of text and peak RSS per phase, and the ratios to
the plain parse. The numba kernel's load (or first compile) is timed apart, before the timed runs.
Other work on the machine shows up in the figures: run it on an otherwise idle machine.
Target (the issue): the whole stage >= 10x faster per core than the plain parse alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(os.environ.get("NTU_SAMPLES", REPO.parent / "shared" / "ntu_samples"))
PHASES = {
    "plain": "plain Python parser (read_skeleton_filter style)",
    "parse": "parse_skeleton",
    "stage": "whole stage (parse, actors, motion, store; jobs=1)",
}


def ntu60_names():
    """Valid NTU60 sample names not on the missing-skeleton list, in a fixed order."""
    from ntu_pipeline.manifests import missing_samples

    missing = missing_samples("ntu60")
    for setup, replication, camera, performer, action in itertools.product(
        range(1, 18), range(1, 3), range(1, 4), range(1, 41), range(1, 61)
    ):
        name = f"S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}"
        if name not in missing:
            yield name


def build_corpus(folder: Path, count: int) -> int:
    """Copy the real samples into folder under `count` distinct names; returns the bytes written."""
    sources = sorted((SAMPLES_DIR / "skeletons").glob("*.skeleton"))
    if not sources:
        sys.exit(f"no real NTU samples under {SAMPLES_DIR}/skeletons (set NTU_SAMPLES to their folder)")
    total = 0
    for i, name in zip(range(count), ntu60_names(), strict=False):
        source = sources[i % len(sources)]
        shutil.copyfile(source, folder / f"{name}.skeleton")
        total += source.stat().st_size
    return total


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def run_phase(phase: str, corpus: Path, store: Path, repeat: int) -> dict:
    """One phase, in this process, its best time of `repeat` runs; returns its figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from plain_parser import read_skeleton_plain

    from ntu_pipeline.skeleton.parse import parse_skeleton
    from ntu_pipeline.stages.runner import ExtractConfig, extract
    from ntu_pipeline.store.status import describe_counts

    files = sorted(corpus.glob("*.skeleton"))
    nbytes = sum(f.stat().st_size for f in files)
    warmup = 0.0
    if phase != "plain":  # load the compiled kernel (or compile it, the first time) outside the timing
        started = time.perf_counter()
        parse_skeleton(files[0])
        warmup = time.perf_counter() - started
    rss_before = peak_rss_mb()
    note = ""
    seconds = float("inf")
    for run in range(repeat):
        started = time.perf_counter()
        if phase == "plain":
            for f in files:
                read_skeleton_plain(f)
        elif phase == "parse":
            for f in files:
                parse_skeleton(f)
        else:
            out = store.with_name(f"{store.stem}_{run}.zarr")  # a new store each run: no resuming
            config = ExtractConfig(skeletons=corpus, out=out, dataset="ntu60", jobs=1, progress=False)
            summary = extract(config, say=lambda _: None)
            note = "status: " + describe_counts(summary.stages[0].counts)
        seconds = min(seconds, time.perf_counter() - started)
    return {
        "phase": phase, "files": len(files), "bytes": nbytes, "seconds": seconds, "warmup": warmup,
        "rss_before_mb": rss_before, "rss_peak_mb": peak_rss_mb(), "note": note,
    }


def spawn_phase(phase: str, corpus: Path, store: Path, cpu: int, repeat: int) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--corpus", str(corpus), "--store", str(store),
               "--repeat", str(repeat)]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    if done.returncode != 0:
        sys.exit(f"phase {phase} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per phase; the best counts (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and the stores")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: run one phase, print its figures as JSON
        print(json.dumps(run_phase(args.phase, args.corpus, args.store, args.repeat)))
        return
    if args.files < 1 or args.repeat < 1:
        parser.error("--files and --repeat must be >= 1")

    workdir = Path(tempfile.mkdtemp(prefix="skeleton_stage_"))
    corpus, store = workdir / "skeletons", workdir / "ntu60.zarr"
    corpus.mkdir()
    try:
        nbytes = build_corpus(corpus, args.files)
        cpu = min(os.sched_getaffinity(0))
        print(f"corpus: {args.files} files, {nbytes / 1e6:.1f} MB of text (copies of "
              f"{len(list((SAMPLES_DIR / 'skeletons').glob('*.skeleton')))} real NTU files), in {workdir}")
        print(f"each phase in a fresh process pinned to CPU {cpu}, best of {args.repeat} runs\n")
        results = {phase: spawn_phase(phase, corpus, store, cpu, args.repeat) for phase in PHASES}
        print(f"{'phase':<52} {'ms/file':>8} {'MB/s':>7} {'peak RSS':>9} {'(at start)':>11}")
        for phase, r in results.items():
            ms = r["seconds"] / r["files"] * 1e3
            mbs = r["bytes"] / r["seconds"] / 1e6
            print(f"{PHASES[phase]:<52} {ms:8.3f} {mbs:7.1f} {r['rss_peak_mb']:6.0f} MB "
                  f"{r['rss_before_mb']:7.0f} MB")
        plain = results["plain"]["seconds"]
        print(f"\nkernel load before the timed loop: {results['parse']['warmup']:.2f} s "
              f"(numba cache; ~10 s when it compiles)")
        print(f"stage {results['stage']['note']}")
        print(f"parse only:  parse_skeleton is {plain / results['parse']['seconds']:.1f}x faster than "
              f"the plain parser")
        ratio = plain / results["stage"]["seconds"]
        print(f"whole stage: {ratio:.1f}x faster per core than the plain parse alone "
              f"(target >= 10x: {'met' if ratio >= 10 else 'NOT met'})")
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
