"""Model speed: parameters, MACs and training throughput of every model variant.

    .venv/bin/python bench/model_speed.py                    # CPU: reduced RGB clip, fp32 + bf16, ~40 s
    .venv/bin/python bench/model_speed.py --device cuda      # GPU: paper size; fp32, bf16, compile
    .venv/bin/python bench/model_speed.py --variants ccdfarm,mmtm --modes fp32,bf16,compile --steps 20

Prints, per variant: parameters; forward GMACs per clip at the reference input size (the CC-DFARM
paper's RGB 3x32x224^2 and skeleton 3x32x25x2; each released model's own, `REFERENCE`: SlowOnly
3x8x224^2, PoseC3D 25x48x56^2 heatmaps, RGBPoseConv3D both, CTR-GCN 3x64x25x2; counted by
torch.utils.flop_counter on the meta device, MACs = FLOPs / 2, convs and matmuls only) and at the timed
size; training throughput in clips/s (forward + backward + SGD step, random data, after warm-up steps;
the labels' range unchecked, as `ntu-train` steps: the check reads a bool back, a host-device wait every
step) in each mode, with its ratio to fp32 eager measured in this run:
    fp32     fp32 eager
    bf16     bf16 autocast, channels_last_3d weights and clip
    compile  bf16 autocast, channels_last_3d, torch.compile (default inductor backend)
On a CPU the defaults shrink the RGB clip to 16 x 112^2, and to half its side for SlowOnly and RGBPose
(the full clip takes seconds per step on two cores; heatmaps and skeletons keep their size), and skip
`compile` (inductor takes minutes to compile I3D there); the sizes used are printed.
On CPU, torch 2.13's oneDNN bf16 conv3d sometimes returns inf weight gradients (reproduced on a bare
nn.Conv3d; not with oneDNN disabled), so CPU bf16 figures time the arithmetic, not a usable training run.
Target: on an H100, CC-DFARM in `compile` mode at >= 3x its fp32 eager clips/s at the paper's size.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

import model

MODES = ("fp32", "bf16", "compile")
PAPER_RGB = (3, 32, 224, 224)
PAPER_SKELETON = (3, 32, 25, 2)
# Each released model's own input (PYSKL's and CTR-GCN's configs); the others take the paper's.
REFERENCE = {
    "ctrgcn": {"skeleton": (3, 64, 25, 2)},
    "posec3d": {"heatmaps": (25, 48, 56, 56)},
    "slowonly": {"rgb": (3, 8, 224, 224)},
    "rgbpose": {"rgb": (3, 8, 224, 224), "heatmaps": (25, 32, 56, 56)},
}


def reference_inputs(name: str) -> dict[str, tuple[int, ...]]:
    """The shape of one clip of each input network `name` takes, at its reference size."""
    paper = {"rgb": PAPER_RGB, "skeleton": PAPER_SKELETON}
    return REFERENCE.get(name) or {k: paper[k] for k in model.network_spec(name).inputs}


def timed_inputs(name: str, args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    """The shapes timed: the RGB clip at --frames x --size^2 for the paper's models; the released RGB
    models keep their frame count and scale their side as --size scales 224 (RGBPose's heatmaps too)."""
    shapes = dict(reference_inputs(name))
    if "rgb" in shapes:
        _, frames, side, _ = shapes["rgb"]
        shapes["rgb"] = ((3, frames, side * args.size // 224, side * args.size // 224) if name in REFERENCE
                         else (3, args.frames, args.size, args.size))
        if "heatmaps" in shapes:  # RGBPoseConv3D: the heatmaps at 1/4 of the clip's side
            joints, frames, _, _ = shapes["heatmaps"]
            shapes["heatmaps"] = (joints, frames, shapes["rgb"][2] // 4, shapes["rgb"][3] // 4)
    return shapes


def _options(name: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    """build() options that follow the input: the skeleton frame count of the paper's models."""
    options = model.network_spec(name).options
    return {"frames": shapes["skeleton"][1]} if "frames" in options and "skeleton" in shapes else {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda where available)")
    p.add_argument("--variants", default=",".join(model.MODEL_NAMES), help="comma-separated model names")
    p.add_argument("--modes", default=None, help="comma-separated of fp32,bf16,compile "
                   "(default: fp32,bf16 on cpu, all three on cuda)")
    p.add_argument("--batch", type=int, default=None, help="clips per step, >= 2 (default: 2 cpu, 8 cuda)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 cpu, 20 cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 cpu, 5 cuda)")
    p.add_argument("--frames", type=int, default=None, help="RGB frames (default: 16 cpu, 32 cuda)")
    p.add_argument("--size", type=int, default=None, help="RGB height = width (default: 112 cpu, 224 cuda)")
    p.add_argument("--num-classes", type=int, default=60)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch.cuda.is_available() is False")
    defaults = {"modes": ",".join(MODES) if cuda else "fp32,bf16", "batch": 8 if cuda else 2,
                "steps": 20 if cuda else 3, "warmup": 5 if cuda else 1,
                "frames": 32 if cuda else 16, "size": 224 if cuda else 112}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.variants = [v for v in args.variants.split(",") if v]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = [v for v in args.variants if v not in model.MODEL_NAMES]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(model.MODEL_NAMES)}")
    if [m for m in args.modes if m not in MODES]:
        p.error(f"modes are {', '.join(MODES)}; got {args.modes}")
    args.modes = ["fp32", *dict.fromkeys(m for m in args.modes if m != "fp32")]  # fp32: the baseline
    if args.batch < 2:
        p.error("--batch must be >= 2 (DSFM's BatchNorm needs two clips in training mode)")
    if args.steps < 1 or args.warmup < 0 or args.frames < 1 or args.size < 32:
        p.error("need --steps >= 1, --warmup >= 0, --frames >= 1, --size >= 32")
    return args


def forward_macs(name: str, num_classes: int, shapes: dict[str, tuple[int, ...]]) -> float:
    """Forward multiply-accumulates for one clip, counted on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        net = model.build(name, num_classes, **_options(name, shapes)).eval()
        inputs = {key: torch.empty(1, *shape) for key, shape in shapes.items()}
        counter = FlopCounterMode(display=False)
        with counter:  # with grad mode on: FlopCounterMode's module hooks fail under no_grad (CTR-GCN)
            net(**inputs)
    return counter.get_total_flops() / 2


def train_throughput(name: str, mode: str, args: argparse.Namespace) -> float:
    """Clips per second of forward + backward + SGD step in `mode`, on random data."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    shapes = timed_inputs(name, args)
    net = model.build(name, args.num_classes, **_options(name, shapes)).to(device).train()
    inputs = {key: torch.randn(args.batch, *shape, device=device) for key, shape in shapes.items()}
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    if mode != "fp32":
        model.to_channels_last_3d(net)
        inputs = {key: x.to(memory_format=torch.channels_last_3d) if x.dim() == 5 and key != "skeleton" else x
                  for key, x in inputs.items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(net) if mode == "compile" else net
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode != "fp32" else nullcontext()

    def step() -> None:
        with autocast:
            loss = model.heads_loss(forward(**inputs), labels, check_range=False)  # as training: no wait
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    return args.batch * args.steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {device_name}")
    print(f"timed: RGB at {args.frames}x{args.size}^2 (the released RGB models: their frames, side "
          f"x{args.size / 224:g}), other inputs at their reference size; batch {args.batch}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, modes {','.join(args.modes)}")
    header = f"{'variant':<11} {'params':>8} {'GMACs ref':>11} {'GMACs run':>9}"
    header += "".join(f" {m + ' clip/s':>14} {'x fp32':>6}" for m in args.modes)
    print(header)
    for name in args.variants:
        shapes = reference_inputs(name)
        net = model.build(name, args.num_classes, **_options(name, shapes))
        params = sum(p.numel() for p in net.parameters())
        macs_paper = forward_macs(name, args.num_classes, shapes)
        macs_run = forward_macs(name, args.num_classes, timed_inputs(name, args))
        line = f"{name:<11} {params / 1e6:>7.2f}M {macs_paper / 1e9:>11.2f} {macs_run / 1e9:>9.2f}"
        baseline = None
        for mode in args.modes:
            rate = train_throughput(name, mode, args)
            baseline = baseline or rate
            line += f" {rate:>14.2f} {rate / baseline:>6.2f}"
        print(line, flush=True)
    if not args.device.startswith("cuda"):
        print("GPU figures (bf16, compile, the >= 3x target on an H100) were not measured in this run.")


if __name__ == "__main__":
    main()
