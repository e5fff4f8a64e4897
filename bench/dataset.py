"""The public dataset's items/s through a DataLoader, beside `ntu-train`'s own loader on the same store.

    .venv/bin/python bench/dataset.py                        # a synthetic store (96 samples), ~1 min to build
    .venv/bin/python bench/dataset.py --store ntu60.zarr     # a prepared store with RGB and the xsub split
    .venv/bin/python bench/dataset.py --variants skeleton --epochs 1

Per variant (the inputs: skeleton = skeleton + motion; rgb; fused = skeleton + motion + rgb), training
clips/s on the CPU over --epochs epochs of the training side, after one untimed batch (which starts the
workers), median of --repeats runs:

    ntu-train           `SplitData.batches(train=True)`: skeletons resident (read once, not timed), RGB
                        decoded in --workers DataLoader workers, cropped and flipped in this process.
                        The baseline: x 1.00.
    dataset, k workers  `DataLoader(NTUDataset(...), batch_size, shuffle=True, num_workers=k)` (persistent
                        workers for k > 0, set_epoch per epoch), and for RGB `rgb_to_model` on each batch
                        in this process, so both deliver the same model-ready clips (tests/test_dataset.py:
                        bit for bit). Each item reads its sample's rows through zarr.
    dataset, preload    the same with `preload=True`: the split's skeletons read once, like ntu-train's.

ntu-train's skeleton path is a batched gather on resident tensors, so the dataset's per-item reads are
expected to be many times slower there; for RGB both pay the JPEG decoding, which dominates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from model import NTUDataset, rgb_to_model
from model.data.split import ClipSpec, SplitData, read_split

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_speed, run as a script or by path
from train_speed import synthetic_store  # noqa: E402  (the same synthetic store as the loader benches)

VARIANTS = {"skeleton": ("skeleton", "motion"), "rgb": ("rgb",), "fused": ("skeleton", "motion", "rgb")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=None, help="a prepared store with RGB and the xsub split")
    p.add_argument("--variants", default="skeleton,rgb,fused", help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--workers", type=int, default=2, help="ntu-train's RGB workers, the dataset's second row")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112, help="stored RGB side of the synthetic store")
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--samples", type=int, default=96, help="synthetic samples")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per run")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    return args


def ntu_train_rate(data: SplitData, batch: int, epochs: int) -> float:
    """Clips/s of `epochs` training epochs of ntu-train's batches (after one untimed batch)."""
    next(data.batches(0, batch, train=True))
    clips, start = 0, time.perf_counter()
    for epoch in range(epochs):
        for b in data.batches(epoch, batch, train=True):
            clips += len(b.labels)
    return clips / (time.perf_counter() - start)


def dataset_rate(dataset: NTUDataset, batch: int, workers: int, epochs: int) -> float:
    """Clips/s of `epochs` epochs of the dataset through a DataLoader (after one untimed batch), RGB made
    model-ready by `rgb_to_model` here, as a training step would."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    next(iter(loader))
    clips, start = 0, time.perf_counter()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for b in loader:
            if "rgb" in b:
                rgb_to_model(b["rgb"], b["crop_box"], b["flip"], dataset.crop)
            clips += len(b["label"])
    return clips / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the main process's crops on one core, the workers on the others
    print(f"torch {torch.__version__}, cpu, 1 thread in this process; batch {args.batch}, {args.frames} "
          f"frames, crop {args.crop}; {args.epochs} epochs a run, median of {args.repeats} runs")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            started = time.perf_counter()
            store = synthetic_store(Path(tmp), args.samples, args.size)
            print(f"synthetic store: {args.samples} samples, {args.size}^2 RGB, in "
                  f"{time.perf_counter() - started:.0f} s")
        print(f"{'variant':<9} {'loader':<20} {'workers':>7} {'clips/s':>9} {'x ntu-train':>11}")
        for variant in args.variants:
            inputs = VARIANTS[variant]
            rgb, skeleton = "rgb" in inputs, "skeleton" in inputs
            spec = ClipSpec(frames=args.frames, skeleton=skeleton, rgb=rgb, crop=args.crop)
            info = read_split(store, "xsub", "train", need_rgb=rgb, need_skeleton=skeleton)
            workers = args.workers if rgb else 0
            data = SplitData(info, spec, "cpu", workers=workers)
            rows = [("ntu-train", workers, lambda data=data: ntu_train_rate(data, args.batch, args.epochs))]
            for preload in (False, True) if skeleton else (False,):
                dataset = NTUDataset(store, "xsub", "train", inputs=inputs, frames=args.frames,
                                     crop=args.crop, preload=preload)
                for k in (0, args.workers):
                    rows.append(("dataset, preload" if preload else "dataset", k,
                                 lambda d=dataset, k=k: dataset_rate(d, args.batch, k, args.epochs)))
            baseline = None
            for loader, k, run in rows:
                rate = statistics.median(run() for _ in range(args.repeats))
                baseline = baseline or rate
                print(f"{variant:<9} {loader:<20} {k:>7} {rate:>9.1f} {rate / baseline:>11.2f}", flush=True)
            del data


if __name__ == "__main__":
    main()
