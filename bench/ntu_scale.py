"""The whole skeleton journey at NTU60's size, step by step, as a user runs it: wall time and peak memory.

    .venv/bin/python bench/ntu_scale.py                            # 56,880 samples: ~15 min of 2 cores
    .venv/bin/python bench/ntu_scale.py --samples 2000 --jobs 2    # a check of the bench, ~1-2 min
    .venv/bin/python bench/ntu_scale.py --workdir /tmp/ntu60 --keep                  # keep what it made
    .venv/bin/python bench/ntu_scale.py --workdir /tmp/ntu60 --steps fit,eval --fit-args "--batch-size 64"

Runs each step as its own process, the installed commands next to this interpreter (.venv/bin):

    synth    ntu-prep synth WORKDIR/skeletons --samples N --classes 60 --no-videos --jobs J
    extract  ntu-prep extract --skeletons WORKDIR/skeletons --out WORKDIR/ntu60.zarr --dataset ntu60
             --jobs J --overwrite                       (--overwrite: a fresh store, never a resumed one)
    split    ntu-prep split --protocol xsub WORKDIR/ntu60.zarr
    fit      ntu-train fit --store ... --protocol xsub --model hcn --out WORKDIR/run --epochs E
             --device cpu --workers 0 [--fit-args ...]  (the hcn recipe otherwise; WORKDIR/run is replaced)
    eval     ntu-train eval --checkpoint WORKDIR/run/last.pt --store ... --protocol xsub --device cpu
             --workers 0

--steps runs a subset in that order, on what an earlier run left in --workdir (e.g. skip synth and
extract to time training on a kept store). Each step's stdout and stderr go to WORKDIR/logs/; a step
that fails stops the bench with the tail of its stderr and exit status 1.

The figures, per step:
    wall s          from starting the process to reaping it (interpreter start and imports included)
    peak RSS MB     the step's process tree: the sum of the resident sets of the step's process and all
                    its descendants (loky workers), sampled from /proc every 0.1 s, and never less than
                    the largest process's exact peak. Pages shared between processes (libraries, fork
                    copy-on-write) count once per process, and a spike shorter than 0.1 s in a second
                    process can be missed.
    largest MB      the largest single process of the step: os.wait4's ru_maxrss for the step's process
                    (the kernel's high-water mark of it and of the descendants it waited for), what
                    `/usr/bin/time -v` reports. Each step is waited for on its own, so neither figure
                    carries a peak over from an earlier step (unlike RUSAGE_CHILDREN).
    store           the store's size on disk after extract (allocated blocks, as du), and its bytes
    test top-1      fit's final evaluation (WORKDIR/run/metrics.json) and eval's printed line: the same
                    weights on the same xsub test split, so the two should agree
"reported earlier" is what the issue measured from outside before the current work, at 56,880 samples:
context for a full-size run, not a baseline of this run (other work on the machine moves these figures
by 20% and more). Linux only (/proc, ru_maxrss in KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ("synth", "extract", "split", "fit", "eval")
NTU60_SAMPLES = 56880
REPORTED = {  # the figures at 56,880 samples, measured from outside before the current work
    "synth": "366 s", "extract": "37 s, 215 MB", "split": "0 s", "fit": "149 s, 5.5 GB",
    "eval": "46 s, 4.1 GB", "store": "4.9 GB",
}
POLL_S = 0.1
PAGE = os.sysconf("SC_PAGE_SIZE")
TAIL_LINES = 40


@dataclass
class Step:
    name: str
    seconds: float
    tree_mb: float  # the peak of the summed resident sets of the process tree
    largest_mb: float  # wait4's ru_maxrss: the largest single process
    processes: int  # the most processes seen in the tree at once
    stdout: str
    note: str = ""
    top1: float | None = None  # fit's (metrics.json) or eval's (its output)


def command_for(tool: str) -> list[str]:
    """The installed entry point next to this interpreter, or `python -m` on the repository's module."""
    installed = Path(sys.executable).parent / tool
    if installed.is_file():
        return [str(installed)]
    return [sys.executable, "-m", {"ntu-prep": "cli.prep", "ntu-train": "cli.train"}[tool]]


def parents() -> dict[int, int]:
    """pid -> parent pid of every process on the machine, from /proc/<pid>/stat."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # it ended meanwhile
            continue
        table[int(entry.name)] = int(stat[stat.rindex(b")") + 2:].split(maxsplit=2)[1])  # after "(comm) S"
    return table


def tree_rss(root: int) -> tuple[int, int]:
    """(bytes resident, processes) of root and all its descendants, now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    total, count, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
            count += 1
        except (OSError, IndexError, ValueError):  # ended, or a zombie between the two reads
            continue
    return total, count


class TreeSampler(threading.Thread):
    """Samples tree_rss(root) every POLL_S seconds until stopped; keeps the peaks."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.stopped = root, threading.Event()
        self.peak_bytes, self.peak_processes = 0, 0

    def run(self) -> None:
        while True:
            rss, count = tree_rss(self.root)
            self.peak_bytes = max(self.peak_bytes, rss)
            self.peak_processes = max(self.peak_processes, count)
            if self.stopped.wait(POLL_S):
                return


def run_step(name: str, command: list[str], logs: Path, index: int) -> Step:
    """Run one step's command in its own process; its figures, or exit 1 with its stderr's tail."""
    say(f"[{index}/{len(STEPS)}] {name}: {shlex.join(command)}")
    out_log, err_log = logs / f"{name}.out", logs / f"{name}.err"
    with open(out_log, "wb") as out, open(err_log, "wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
        sampler = TreeSampler(child.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's
        except BaseException:
            child.kill()
            child.wait()
            raise
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        sampler.stopped.set()
        sampler.join()
    if child.returncode != 0:
        tail = err_log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        print(f"\n{name} failed (exit status {child.returncode}) after {seconds:.1f} s: "
              f"{shlex.join(command)}\n--- last {len(tail)} lines of {err_log} ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
        raise StepFailed(name)
    largest_mb = usage.ru_maxrss / 1024  # KiB on Linux
    step = Step(name, seconds, max(sampler.peak_bytes / 2**20, largest_mb), largest_mb,
                sampler.peak_processes, out_log.read_text(errors="replace"))
    say(f"[{index}/{len(STEPS)}] {name}: {seconds:.1f} s, peak RSS {step.tree_mb:.0f} MB "
        f"(largest process {largest_mb:.0f} MB)")
    return step


class StepFailed(Exception):
    pass


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def disk_usage(folder: Path) -> tuple[int, int, int]:
    """(bytes allocated on disk, bytes of content, files) under folder; hard links counted once."""
    allocated = content = files = 0
    seen = set()
    todo = [folder]
    while todo:
        for entry in os.scandir(todo.pop()):
            if entry.is_dir(follow_symlinks=False):
                todo.append(Path(entry.path))
                continue
            stat = entry.stat(follow_symlinks=False)
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            allocated += stat.st_blocks * 512
            content += stat.st_size
            files += 1
    return allocated, content, files


def printed_top1(stdout: str) -> float | None:
    """The test top-1 of fit's or eval's last line ('hcn xsub: test top1 0.1234 top5 ...')."""
    found = re.findall(r"test top1 ([0-9.]+)", stdout)
    return float(found[-1]) if found else None


def first_line(text: str, prefix: str = "") -> str:
    """The first line of text that starts with prefix, stripped; "" where none does."""
    return next((line.strip() for line in text.splitlines() if line.strip() and line.startswith(prefix)), "")


def epoch_note(run: Path) -> str:
    """The last epoch's training time and speed from run/metrics.jsonl, where it records them."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    if "seconds" not in last or "clips_per_s" not in last:
        return ""
    return f"; epoch {last['seconds']:.1f} s at {last['clips_per_s']:.0f} clips/s (metrics.jsonl)"


def run_bench(args: argparse.Namespace, steps: list[str], workdir: Path) -> int:
    corpus, store, run = workdir / "skeletons", workdir / "ntu60.zarr", workdir / "run"
    logs = workdir / "logs"
    prep, train = command_for("ntu-prep"), command_for("ntu-train")
    commands = {
        "synth": [*prep, "synth", str(corpus), "--samples", str(args.samples), "--classes", "60",
                  "--no-videos", "--jobs", str(args.jobs)],
        "extract": [*prep, "extract", "--skeletons", str(corpus), "--out", str(store), "--dataset", "ntu60",
                    "--jobs", str(args.jobs), "--overwrite"],
        "split": [*prep, "split", "--protocol", "xsub", str(store)],
        "fit": [*train, "fit", "--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out",
                str(run), "--epochs", str(args.epochs), "--device", "cpu", "--workers", "0",
                *shlex.split(args.fit_args)],
        "eval": [*train, "eval", "--checkpoint", str(run / "last.pt"), "--store", str(store), "--protocol",
                 "xsub", "--device", "cpu", "--workers", "0"],
    }
    needs = {"extract": (corpus, "synth"), "split": (store, "extract"), "fit": (store, "extract"),
             "eval": (run / "last.pt", "fit")}
    for name in [s for s in steps if s in needs]:  # what it reads exists, or an earlier step makes it
        path, made_by = needs[name]
        if made_by not in steps and not path.exists():
            sys.exit(f"{name} needs {path}, which {made_by} writes: add {made_by} to --steps, or point "
                     "--workdir at a folder an earlier run kept")
    logs.mkdir(parents=True, exist_ok=True)

    load_before = os.getloadavg()
    results: dict[str, Step] = {}
    store_size = None
    failed = None
    try:
        for index, name in enumerate(STEPS, 1):
            if name not in steps:
                continue
            if name == "fit" and run.exists():  # fit refuses a folder that holds a run
                say(f"replacing the earlier run in {run}")
                shutil.rmtree(run)
            step = results[name] = run_step(name, commands[name], logs, index)
            if name == "extract":
                store_size = disk_usage(store)
                step.note = first_line(step.stdout, "skeleton: ok") or first_line(step.stdout)
            elif name == "split":
                step.note = first_line(step.stdout)
            elif name == "fit":
                step.top1 = json.loads((run / "metrics.json").read_text())["top1"]
                step.note = f"test top-1 {step.top1:.4f} (run/metrics.json)" + epoch_note(run)
            elif name == "eval":
                step.top1 = printed_top1(step.stdout)
                step.note = f"test top-1 {step.top1:.4f} (its output)" if step.top1 is not None \
                    else f"no top-1 in its output: {first_line(step.stdout)!r}"
            elif name == "synth":
                step.note = f"{args.samples} samples, 60 classes, no videos"
            if step.processes > 1:
                step.note += f"; up to {step.processes} processes"
    except StepFailed as error:
        failed = str(error)

    print(f"\nNTU60-size skeleton journey in {workdir} ({os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after)")
    header = (f"{'step':<8} {'wall s':>8} {'peak RSS MB':>12} {'largest MB':>11}  "
              f"{'reported earlier':<17} note")
    if results:
        print(header)
        print("-" * len(header))
    for name, step in results.items():
        print(f"{name:<8} {step.seconds:8.1f} {step.tree_mb:12.0f} {step.largest_mb:11.0f}  "
              f"{REPORTED[name]:<17} {step.note}")
    if store_size is not None:
        allocated, content, files = store_size
        print(f"{'store':<8} {'':>8} {'':>12} {'':>11}  {REPORTED['store']:<17} "
              f"{allocated / 1e9:.3f} GB on disk ({content / 1e9:.3f} GB in {files} files)")
    if failed:
        print(f"stopped: {failed} failed (its log above; WORKDIR/logs holds all of them)")
    fit_top1, eval_top1 = (results[name].top1 if name in results else None for name in ("fit", "eval"))
    if fit_top1 is not None and eval_top1 is not None:
        agree = "agree" if abs(fit_top1 - eval_top1) < 5e-5 else "DIFFER"
        print(f"test top-1: fit {fit_top1:.4f}, eval {eval_top1:.4f} ({agree})")
    print("reported earlier: the issue's figures at 56,880 samples, measured from outside before "
          "the current work (wall s, and peak memory where given)" + (
              "" if args.samples == NTU60_SAMPLES or "synth" not in steps
              else f"; this run has {args.samples} samples"))
    interpreter = os.path.relpath(sys.executable)
    interpreter = sys.executable if interpreter.startswith("..") else interpreter
    print(f"command: {shlex.join([interpreter, *sys.argv])}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=NTU60_SAMPLES,
                        help=f"skeleton samples synth writes (default {NTU60_SAMPLES}, NTU60's size)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(),
                        help=f"extract's worker processes (default: os.cpu_count(), {os.cpu_count()} here)")
    parser.add_argument("--epochs", type=int, default=1, help="fit's epochs (default 1)")
    parser.add_argument("--fit-args", default="", help='more fit options, one string: "--batch-size 64"')
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)}, run in that order (default all)")
    parser.add_argument("--workdir", type=Path,
                        help="folder for the corpus, store, run and logs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (a --workdir is never removed)")
    args = parser.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        parser.error(f"--steps: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(STEPS)}")
    if args.samples < 1 or args.jobs < 1 or args.epochs < 1:
        parser.error("--samples, --jobs and --epochs must be >= 1")
    if steps[0] != "synth" and args.workdir is None:
        parser.error("--steps without synth needs --workdir (a folder an earlier run kept)")
    try:
        shlex.split(args.fit_args)
    except ValueError as error:
        parser.error(f"--fit-args: {error}")

    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="ntu_scale_"))
    try:
        status = run_bench(args, steps, workdir)
    finally:
        if args.workdir or args.keep:
            if workdir.exists():
                print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
