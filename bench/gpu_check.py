"""The GPU half in one command: every CUDA path of training, checked and measured on the machine at hand.

    make gpu-check                                   # or: .venv/bin/python bench/gpu_check.py
    .venv/bin/python bench/gpu_check.py --skip-compile --quick   # the checks without the slow parts

On a CUDA machine, for hcn, i3d and ccdfarm at the paper's input size (RGB 3x32x224^2, skeleton
3x32x25x2, 60 classes), one row each, its seconds beside it. The times in parentheses are estimates for an
H100-class GPU with 16 cores, not yet measured (this script has not run on a GPU yet; correct them from
its first table): about 4.5 minutes in all, 1.5 with --skip-compile.
  store      a synthetic store for the rows that read one: 96 samples, 32 frames of 256^2 (~15 s)
  memory     peak GPU memory of two training steps at batch 32 (bf16, channels_last_3d, the optimizer's
             state included), each model alone: its own inputs, the caches emptied between (~5 s each);
             hcn, i3d, ccdfarm at the paper's clip, and the released models ctrgcn, posec3d, slowonly,
             rgbpose at their own (gpu_rows.reference_shapes: 64 frames; 48 x 56^2 heatmaps; 8 x 224^2;
             8 x 224^2 with 32 x 56^2)
  step       clips/s of `ntu-train`'s step (Trainer.train_epoch: forward, heads_loss without the label
             check, backward, gradient clip, the recipe's optimizer, the running sums) at batch 32 on a
             batch made once on the GPU (no data path): fp32 eager (contiguous), bf16 + channels_last_3d,
             and that under torch.compile (inductor, default mode; 2 warm-up steps compile it), with
             ratios to fp32 eager; a batch that runs out of memory is halved and says so
             (~5 s without compile; compiling takes ~20 s for hcn, ~60 s for i3d, ~90 s for ccdfarm;
             the released models' compile times are not measured yet); the same seven models
  no-sync    steps of a real epoch (the store, the RGB DataLoader, the augmentation on the device) under
             torch.cuda.set_sync_debug_mode("error"): any host-device wait in a step raises (~5 s each)
  hcn-epoch  an HCN epoch of NTU60 xsub's size (40,091 resident synthetic clips, frames drawn like NTU's,
             ~85 on average) at its recipe's batch, timed (~10 s)
  ddp        one process joined to an NCCL group as torchrun starts it (RANK, WORLD_SIZE=1): ccdfarm at
             16x112^2 under DistributedDataParallel with SyncBatchNorm, a few steps; the row names the
             backend and the SyncBatchNorm layers found (~10 s). Alone, SyncBatchNorm normalises
             locally; where two GPUs exist, ddp-2 runs `torchrun --nproc-per-node 2 -m cli.train fit
             --sync-bn` on the store, where it gathers across them (~40 s)
  rgb-data   clips/s of the RGB data path into the GPU (DataLoader workers decoding 32 x 256^2 JPEG
             frames, every core busy, crop and flip on the device), after every worker has delivered,
             over 8 batches of 16 a worker in one epoch (the split's samples repeated, so the shard
             files come from the page cache after the first pass: the decoding is measured; ~10 s)
One table, the device named; exit 1 when a check fails. Without CUDA it says so in one line and exits 2.
`--cpu-dry-run` (hidden) runs every row on the CPU at tiny sizes, the CUDA-only parts left out (bf16
autocast, the sync debug mode, NCCL, SyncBatchNorm, memory statistics): what tests/test_gpu_paths.py
runs, so the script's Python paths are exercised without a GPU.

This file is the command: the sizes the rows run at, the list of rows, the table. The rows themselves
(the real `ntu-train` step and data path, timed or checked) are bench/gpu_rows.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_rows, run as a script or loaded by path

import gpu_rows  # noqa: E402  (bench/ on the path first)
from gpu_rows import MODES, REFERENCE_VARIANTS, VARIANTS, CheckSizes  # noqa: E402

PAPER = CheckSizes()
QUICK = dataclasses.replace(PAPER, steps=3, compile_steps=2, epoch_clips=4_009, rgb_batches_per_worker=3)
TINY = CheckSizes(frames=16, crop=32, classes=6, batch=2, warmup=1, steps=1, compile_warmup=1,
                  compile_steps=1, sync_batch=2, epoch_clips=130, store_samples=12, store_frames=16,
                  store_size=64, store_jobs=1, ddp_frames=16, ddp_crop=32, ddp_batch=2, ddp_steps=2,
                  rgb_batch=2, rgb_batches_per_worker=3, backend="eager")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-compile", action="store_true",
                   help="no torch.compile mode (it compiles for minutes)")
    p.add_argument("--quick", action="store_true", help="fewer timed steps, a tenth of the HCN epoch")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="RGB DataLoader workers")
    p.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- the table ----------------------------------------------------------------------------------------

def checks(sizes: CheckSizes, device: torch.device, workers: int, compile_: bool,
           tmp: Path) -> list[tuple[str, Callable[[], str]]]:
    """The rows, in the order they run: (label, the check returning its result line)."""
    store = tmp / "check.zarr"
    modes = MODES if compile_ else MODES[:2]

    def make_store() -> str:
        gpu_rows.synthetic_store(tmp, sizes)
        return f"{sizes.store_samples} samples, {sizes.store_frames} frames of {sizes.store_size}^2"

    rows: list[tuple[str, Callable[[], str]]] = [("store", make_store)]
    rows += [(f"memory {n}", lambda n=n: gpu_rows.peak_memory(n, device, sizes))
             for n in VARIANTS + REFERENCE_VARIANTS]
    rows += [(f"step {n}", lambda n=n: gpu_rows.step_rates(n, device, sizes, modes))
             for n in VARIANTS + REFERENCE_VARIANTS]
    rows += [(f"no-sync {n}", lambda n=n: gpu_rows.no_sync(n, store, device, sizes, min(workers, 4)))
             for n in VARIANTS]
    rows += [("hcn-epoch", lambda: gpu_rows.hcn_epoch(device, sizes)),
             ("ddp", lambda: gpu_rows.ddp(device, sizes))]
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        rows.append(("ddp-2", lambda: gpu_rows.ddp_processes(store, tmp, sizes, 2)))
    rows.append(("rgb-data", lambda: gpu_rows.rgb_data(store, device, sizes, workers)))
    return rows


def run_checks(rows: list[tuple[str, Callable[[], str]]], say=print) -> list[tuple[str, str, float, str]]:
    """Run every row (a failure is reported and the others still run): (label, ok | FAIL, seconds,
    result), each said as it finishes."""
    table = []
    for label, check in rows:
        start = time.perf_counter()
        try:
            result, status = check(), "ok"
        except Exception as err:  # every check is reported, the others still run
            first = str(err).splitlines()[0] if str(err) else ""
            result, status = f"{type(err).__name__}: {first}", "FAIL"
            traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - start
        table.append((label, status, seconds, result))
        say(f"{label:<16} {status:<4} {seconds:>6.1f}s  {result}")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu_dry_run:
        device, sizes, workers = torch.device("cpu"), TINY, min(args.workers, 2)
        name = f"cpu dry run at tiny sizes, {torch.get_num_threads()} threads"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was checked")
        return 2
    else:
        device, sizes, workers = torch.device("cuda", 0), QUICK if args.quick else PAPER, args.workers
        name = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
    print(f"gpu_check: torch {torch.__version__}, {name}, {os.cpu_count()} CPU cores", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        table = run_checks(checks(sizes, device, workers, not args.skip_compile, Path(tmp)),
                           say=lambda line: print(line, flush=True))
    failed = sum(status != "ok" for _, status, _, _ in table)
    print(f"\n{'check':<16} {'':<4} {'time':>7}  result on {name} ({time.perf_counter() - started:.0f} s "
          f"in all, {failed} failed)")
    for label, status, seconds, result in table:
        print(f"{label:<16} {status:<4} {seconds:>6.1f}s  {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
