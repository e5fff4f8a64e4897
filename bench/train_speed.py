"""Training data path against the model: can the loader feed the training step?

    .venv/bin/python bench/train_speed.py                         # CPU: small shapes, ~1-2 min
    .venv/bin/python bench/train_speed.py --device cuda           # GPU: 32 x 224^2 clips from 256^2 frames
    .venv/bin/python bench/train_speed.py --store ntu60.zarr --variants hcn,ccdfarm --workers 16

Per variant it measures, in clips/s:
    data   the training data path alone (`model.data.split.SplitData.batches`, train mode, on the device):
           skeleton-only for hcn (resident skeletons: window, resampling, flip, motion), RGB + skeleton
           for the others (DataLoader workers decoding JPEG frames, random resized crop and flip on the
           device, the skeleton at the clip's frames)
    model  one training step on batches already on the device (forward, heads_loss without the
           label-range check as training runs it, backward, SGD; bf16 autocast + channels_last_3d on
           CUDA, fp32 on CPU), random inputs of the same shapes
and prints data / model: >= 1 means the loader keeps up with the step, < 1 that training would wait for
data. Without --store it builds a synthetic store in a temporary folder (`write_corpus` with videos,
`extract` with both stages), which takes a while for large --samples.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

import model
from model.data.split import ClipSpec, SplitData, read_split
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--store", type=Path, default=None, help="a prepared store with RGB and the xsub split")
    p.add_argument("--variants", default=None, help="comma-separated (default: hcn,i3d,ccdfarm)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="RGB DataLoader workers")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default: 4 cpu, 32 cuda)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 4 cpu, 20 cuda)")
    p.add_argument("--frames", type=int, default=None, help="clip frames (default: 16 cpu, 32 cuda)")
    p.add_argument("--size", type=int, default=None, help="stored RGB side (default: 128 cpu, 256 cuda)")
    p.add_argument("--crop", type=int, default=None, help="RGB crop side (default: 112 cpu, 224 cuda)")
    p.add_argument("--samples", type=int, default=None, help="synthetic samples (default: 96 cpu, 480 cuda)")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch.cuda.is_available() is False")
    defaults = {"variants": "hcn,i3d,ccdfarm", "batch": 32 if cuda else 4, "steps": 20 if cuda else 4,
                "frames": 32 if cuda else 16, "size": 256 if cuda else 128, "crop": 224 if cuda else 112,
                "samples": 480 if cuda else 96}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in model.MODEL_NAMES]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(model.MODEL_NAMES)}")
    return args


def synthetic_store(root: Path, samples: int, size: int) -> Path:
    raw, store = root / "raw", root / "bench.zarr"
    write_corpus(raw, samples, 6, videos=True)
    extract(ExtractConfig(skeletons=raw, videos=raw, out=store, dataset="ntu60", rgb_frames=32, rgb_size=size,
                          progress=False))
    make_split(open_store(store, mode="r+"), "xsub")
    return store


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data_rate(data: SplitData, batch: int, steps: int) -> float:
    """Clips/s of `steps` training batches (after one untimed batch that starts the workers)."""
    total, epoch = 0, 0
    batches = data.batches(epoch, batch, train=True)
    next(batches)
    sync(data.device)
    start = time.perf_counter()
    while total < steps * batch:
        for b in batches:
            total += len(b.labels)
            if total >= steps * batch:
                break
        epoch += 1
        batches = data.batches(epoch, batch, train=True)
    sync(data.device)
    return total / (time.perf_counter() - start)


def model_rate(name: str, sample, num_classes: int, steps: int, device: torch.device) -> float:
    """Clips/s of training steps on one batch `sample` (already on the device)."""
    torch.manual_seed(0)
    options = {} if name == "i3d" else {"frames": sample.skeleton.shape[2] if sample.skeleton is not None
                                        else sample.rgb.shape[2]}
    net = model.build(name, num_classes, **options).to(device).train()
    rgb = sample.rgb
    if device.type == "cuda":
        model.to_channels_last_3d(net)
        rgb = rgb.contiguous(memory_format=torch.channels_last_3d) if rgb is not None else None
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step() -> None:
        with autocast:
            loss = model.heads_loss(net(rgb, sample.skeleton, sample.motion), sample.labels,
                                    check_range=False)  # as training: no wait per step
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return len(sample.labels) * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}; batch {args.batch}, {args.steps} timed steps, clip "
          f"{args.frames} frames, RGB crop {args.crop} from {args.size}, {args.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            started = time.perf_counter()
            store = synthetic_store(Path(tmp), args.samples, args.size)
            print(f"synthetic store: {args.samples} samples in {time.perf_counter() - started:.0f} s")
        print(f"{'variant':<11} {'data path':<16} {'data clip/s':>11} {'model clip/s':>12} "
              f"{'data/model':>10}")
        for variant in args.variants:
            rgb = variant != "hcn"
            info = read_split(store, "xsub", "train", need_rgb=rgb)
            spec = ClipSpec(frames=args.frames, skeleton=variant != "i3d", rgb=rgb, crop=args.crop)
            data = SplitData(info, spec, device, workers=args.workers if rgb else 0)
            data_cps = data_rate(data, args.batch, args.steps)
            sample = next(data.batches(0, args.batch, train=True))
            model_cps = model_rate(variant, sample, len(info.class_names), args.steps, device)
            path = "RGB + skeleton" if rgb and spec.skeleton else "RGB" if rgb else "skeleton"
            print(f"{variant:<11} {path:<16} {data_cps:>11.1f} {model_cps:>12.1f} "
                  f"{data_cps / model_cps:>10.2f}", flush=True)
            del data


if __name__ == "__main__":
    main()
