"""The GPU half in one command: every CUDA path of training, checked and measured on the machine at hand.

    make gpu-check                                   # or: .venv/bin/python bench/gpu_check.py
    .venv/bin/python bench/gpu_check.py --skip-compile --quick   # the checks without the slow parts

On a CUDA machine, in about 5 minutes, for hcn, i3d and ccdfarm at the paper's input size (RGB
3x32x224^2, skeleton 3x32x25x2, 60 classes):
  step      clips/s of the training step (forward, heads_loss, backward, SGD; random data) in fp32 eager,
            bf16 + channels_last_3d, and + torch.compile, with ratios to fp32 eager (bench/model_speed.py)
  memory    peak GPU memory of a bf16 training step at batch 32
  no-sync   a real epoch of `ntu-train`'s step (model/epoch.py) on a small synthetic store, under
            torch.cuda.set_sync_debug_mode("error"): any host-device wait in the step raises
  hcn-epoch an HCN epoch of NTU60 xsub's size (40,091 resident synthetic clips, frames drawn like NTU's,
            ~85 on average) with its recipe's batch, timed
  ddp       `torchrun -m cli.train fit` with NCCL: one process, and two where two GPUs exist, --sync-bn
  rgb-data  clips/s of the RGB data path into the GPU (DataLoader workers decoding 32 x 256^2 JPEG
            frames, crop and flip on the device) with every core of the machine
One table, the device named; exit 1 when a check fails. Without CUDA it says so in one line and exits 2
(the test suite never needs a GPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

VARIANTS = ("hcn", "i3d", "ccdfarm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-compile", action="store_true",
                   help="no torch.compile mode (it compiles for minutes)")
    p.add_argument("--quick", action="store_true", help="fewer timed steps, a tenth of the HCN epoch")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="RGB DataLoader workers")
    return p.parse_args(argv)


def synthetic_store(root: Path, samples: int) -> Path:
    """A store with both modalities (32 frames of 256^2) and the xsub split, from the synthetic corpus."""
    from ntu_pipeline.stages.runner import ExtractConfig, extract
    from ntu_pipeline.store import open_store
    from ntu_pipeline.store.splits import make_split
    from ntu_pipeline.synth.corpus import write_corpus

    raw, store = root / "raw", root / "check.zarr"
    write_corpus(raw, samples, 6, videos=True)
    extract(ExtractConfig(skeletons=raw, videos=raw, out=store, dataset="ntu60", jobs=os.cpu_count() or 1,
                          progress=False), say=lambda _: None)
    make_split(open_store(store, mode="r+"), "xsub")
    return store


def step_rates(name: str, quick: bool, compile_: bool) -> str:
    from model_speed import parse_args as speed_args
    from model_speed import train_throughput

    modes = ["fp32", "bf16"] + (["compile"] if compile_ else [])
    args = speed_args(["--device", "cuda", "--variants", name, "--modes", ",".join(modes),
                       "--steps", "5" if quick else "20"])
    rates = {mode: train_throughput(name, mode, args) for mode in modes}
    return ", ".join(f"{mode} {rate:.1f}" + ("" if mode == "fp32" else f" ({rate / rates['fp32']:.2f}x)")
                     for mode, rate in rates.items()) + " clips/s"


def peak_memory(name: str) -> str:
    from model_speed import PAPER_RGB, PAPER_SKELETON

    import model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    net = model.to_channels_last_3d(model.build(name, 60).cuda().train())
    rgb = torch.randn(32, *PAPER_RGB, device="cuda").contiguous(memory_format=torch.channels_last_3d)
    skeleton = torch.randn(32, *PAPER_SKELETON, device="cuda")
    labels = torch.randint(0, 60, (32,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.heads_loss(net(rgb, skeleton), labels)
    loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    del net, rgb, skeleton, labels, loss
    return f"{peak:.1f} GiB at batch 32 (bf16)"


def trainer_for(name: str, store: Path | None, batch: int, workers: int, data=None):
    """An `ntu-train` Trainer (the real step) on CUDA for `name`: on `store`, or on `data` given."""
    from model.config import TrainConfig
    from model.data import SplitData, read_split
    from model.distributed import Processes
    from model.epoch import Trainer
    from model.runtime import Runtime, build_network
    from model.train import _optimizer

    config = TrainConfig(store=str(store or "synthetic"), protocol="xsub", model=name, out="unused",
                         batch_size=batch, frames=32, crop=224, device="cuda", workers=workers,
                         progress=False)
    procs = Processes(0, 1, torch.device("cuda"))
    if data is None:
        info = read_split(store, "xsub", "train", config.uses_rgb, config.uses_skeleton)
        data = SplitData(info, config.clip_spec(), procs.device, config.seed, workers)
    net = build_network(name, len(data.info.class_names), config.model_options(), procs.device)
    steps = len(data.info) // batch
    return Trainer(config, procs, net, net, _optimizer(net, config, []), Runtime(procs.device), data, steps)


def run_epoch(trainer) -> float:
    """Seconds of one training epoch through Trainer.train_epoch (the device waited for at the end)."""
    from model.checkpoint import SUMS
    from model.epoch import TrainProgress

    sums = torch.zeros(len(SUMS), dtype=torch.float64, device="cuda")
    bar = TrainProgress(total=trainer.steps, unit="clips", label="check", enabled=False)
    torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_epoch(0, 0, sums, bar, lambda *_: None)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def no_sync(name: str, store: Path, workers: int) -> str:
    import model.epoch

    trainer = trainer_for(name, store, 4, workers)
    model.epoch.LOG_EVERY, every = 1, model.epoch.LOG_EVERY  # the non-blocking read-back of every step too
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_epoch(trainer)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        model.epoch.LOG_EVERY = every
    return f"{trainer.steps} steps, no host-device wait"


def hcn_epoch(quick: bool) -> str:
    from model.config import RECIPES
    from model.data import ClipSpec, SplitData, SplitInfo
    from model.skeletons import PackedSkeletons

    n = 4_009 if quick else 40_091  # NTU60 xsub's train split
    rng = np.random.default_rng(0)
    frames = np.clip(rng.gamma(4.0, 85 / 4.0, n), 30, 300).astype(np.int64)  # NTU: 32-300, ~85 on average
    starts = np.concatenate([[0], np.cumsum(frames)[:-1]])
    packed = PackedSkeletons(torch.randn(int(frames.sum()), 2, 25, 3, device="cuda"),
                             torch.from_numpy(starts).cuda(), torch.from_numpy(frames).cuda())
    info = SplitInfo(store=Path("synthetic"), protocol="xsub", part="train", indices=np.arange(n),
                     labels=rng.integers(0, 60, n), num_frames=frames, class_names=tuple(map(str, range(60))),
                     dataset="ntu60")
    batch = RECIPES["hcn"].batch_size
    data = SplitData(info, ClipSpec(frames=32), "cuda", skeletons=packed)
    seconds = run_epoch(trainer_for("hcn", None, batch, 0, data))
    return (f"{n} clips in {seconds:.1f} s ({n / seconds:.0f} clips/s, batch {batch}); resident "
            f"skeletons {packed.frames.numel() * 4 / 2**30:.2f} GiB")


def ddp(store: Path, tmp: Path) -> str:
    results = []
    for procs in sorted({1, min(2, torch.cuda.device_count())}):
        out = tmp / f"ddp{procs}"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(procs), "-m", "cli.train", "fit", "--store", str(store), "--protocol", "xsub",
                   "--model", "hcn", "--out", str(out), "--epochs", "1", "--batch-size", "8", "--device",
                   "cuda", "--sync-bn", "--workers", "0", "--quiet"]
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        if run.returncode != 0:
            raise RuntimeError(f"{procs} process(es): exit {run.returncode}: {run.stderr.strip()[-600:]}")
        results.append(f"{procs} process{'es' if procs > 1 else ''} ok")
    return ", ".join(results) + " (nccl, --sync-bn)"


def rgb_data(store: Path, workers: int) -> str:
    from model.data import ClipSpec, SplitData, read_split

    info = read_split(store, "xsub", "train", need_rgb=True)
    data = SplitData(info, ClipSpec(frames=32, rgb=True, crop=224), "cuda", workers=workers)
    batch = min(16, len(info))
    total, epoch = 0, 0
    batches = data.batches(0, batch, train=True)
    next(batches)  # the workers start
    torch.cuda.synchronize()
    start = time.perf_counter()
    while total < 20 * batch:
        for b in batches:
            total += len(b.labels)
        epoch += 1
        batches = data.batches(epoch, batch, train=True)
    torch.cuda.synchronize()
    rate = total / (time.perf_counter() - start)
    return f"{rate:.0f} clips/s with {workers} workers ({rate / max(workers, 1):.1f} per worker)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was checked")
        return 2
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x "
          f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores")
    rows, failed = [], 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp), 96)
        checks = [(f"step {name}", lambda n=name: step_rates(n, args.quick, not args.skip_compile))
                  for name in VARIANTS]
        checks += [(f"memory {name}", lambda n=name: peak_memory(n)) for name in VARIANTS]
        checks += [(f"no-sync {name}", lambda n=name: no_sync(n, store, min(args.workers, 4)))
                   for name in VARIANTS]
        checks += [("hcn-epoch", lambda: hcn_epoch(args.quick)), ("ddp", lambda: ddp(store, Path(tmp))),
                   ("rgb-data", lambda: rgb_data(store, args.workers))]
        for label, check in checks:
            try:
                result, status = check(), "ok"
            except Exception as err:  # every check is reported, the others still run
                first = str(err).splitlines()[0] if str(err) else ""
                result, status = f"{type(err).__name__}: {first}", "FAIL"
                failed += 1
                traceback.print_exc(file=sys.stderr)
            rows.append((label, status, result))
            print(f"{label:<16} {status:<4} {result}", flush=True)
    print(f"\n{'check':<16} {'':<4} result ({time.perf_counter() - started:.0f} s in all)")
    for label, status, result in rows:
        print(f"{label:<16} {status:<4} {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
