"""A network where it runs: built once for fit, eval and predict, with the same device settings; and
what this machine can run, checked before anything is allocated.

    check_device("cuda")                                # ConfigError where this PyTorch has no such device
    check_machine(config, procs, train_info, test_info)  # crop, workers, resident skeletons: ConfigError
    net = build_network("hcn", num_classes, config.model_options(), device)   # + channels_last_3d on CUDA
    runtime = Runtime(device, bf16=True)
    out = runtime.forward(net, batch.rgb, batch.skeleton, batch.motion, batch.heatmaps)   # autocast, ...

On CUDA: bf16 autocast and channels_last_3d for the 3-D convolutions (weights and RGB input); on a CPU,
fp32 (oneDNN's bf16 conv3d returned inf weight gradients on this project's CPUs, see the README).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.data.skeletons import packed_bytes
from model.data.split import SplitInfo
from model.networks.build import build
from model.networks.ccdfarm import to_channels_last_3d
from model.training.config import TrainConfig
from model.training.distributed import Processes
from ntu_pipeline.errors import ConfigError
from ntu_pipeline.stages.resources import available_memory as system_memory

WORKERS_PER_CORE = 4  # decoding processes per core past which they only wait for one another


@dataclass(frozen=True)
class Runtime:
    """device; bf16: autocast to bfloat16 (CUDA only; ignored elsewhere)."""

    device: torch.device
    bf16: bool = True

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda and self.bf16 else nullcontext()

    def forward(self, net: nn.Module, rgb: Tensor | None, skeleton: Tensor | None,
                motion: Tensor | None, heatmaps: Tensor | None = None) -> dict[str, Tensor]:
        """net(rgb=, skeleton=, motion=[, heatmaps=]) under autocast, the clip and the heatmaps (B, V, T,
        H, W) in channels_last_3d on CUDA; heatmaps are passed only where there are some (the project's
        own networks take none)."""
        if rgb is not None and self.cuda:
            rgb = rgb.contiguous(memory_format=torch.channels_last_3d)
        extra = {}
        if heatmaps is not None:
            extra["heatmaps"] = (heatmaps.contiguous(memory_format=torch.channels_last_3d) if self.cuda
                                 else heatmaps)
        with self.autocast():
            return net(rgb=rgb, skeleton=skeleton, motion=motion, **extra)


def build_network(name: str, num_classes: int, options: dict, device: torch.device,
                  sync_bn: bool = False) -> nn.Module:
    """`model.build(name, num_classes, **options)` on `device`: with SyncBatchNorm where asked (DDP on
    CUDA), its 3-D convolutions in channels_last_3d on CUDA."""
    net = build(name, num_classes, **options)
    if sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device)
    if device.type == "cuda":
        to_channels_last_3d(net)
    return net



# torch.compile's inductor options for every network here. Its peak-memory reordering (torch 2.13) ran the
# kernel that reads max_pool2d's input gradient before the scatter that writes it, so a compiled HCN's
# gradients below its max over persons were the zeros of a fresh buffer: only fc7 and fc8 trained.
COMPILE_OPTIONS = {"reorder_for_peak_memory": False}


def compile_network(net: nn.Module) -> nn.Module:
    """torch.compile(net) with COMPILE_OPTIONS (tests/test_compile_gradients.py)."""
    return torch.compile(net, options=COMPILE_OPTIONS)

def check_device(name: str) -> None:
    """ConfigError unless this PyTorch can run on device `name` ("cpu", "cuda", "cuda:N")."""
    if not name.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        why = "a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
        raise ConfigError(f"--device {name}: this PyTorch cannot use CUDA ({why}); use --device cpu")
    index = torch.device(name).index
    if index is not None and index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                          f"cuda:0..cuda:{torch.cuda.device_count() - 1}")


def check_workers(workers: int) -> None:
    """ConfigError for more decoding processes than WORKERS_PER_CORE per core of this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers > WORKERS_PER_CORE * cores:
        raise ConfigError(f"--workers must be 0..{WORKERS_PER_CORE * cores} ({WORKERS_PER_CORE} per core of "
                          f"the {cores} this process may use), got {workers}")


def available_memory(device: torch.device) -> int | None:
    """Bytes `device` can still give: the GPU's free memory, or a CPU's MemAvailable (/proc/meminfo);
    None where the system does not say."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return system_memory()


def check_resident(nbytes: int, device: torch.device, what: str, hint: str = "") -> None:
    """ConfigError, with both figures, where `what` (nbytes, kept on `device`) would not fit in what
    `device` has available now."""
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise ConfigError(f"{what} take {nbytes / 2**30:.2f} GiB on {device}, which has "
                          f"{free / 2**30:.2f} GiB available{hint}")


def check_machine(config: TrainConfig, procs: Processes, train: SplitInfo, test: SplitInfo) -> None:
    """ConfigError for a size this store or machine cannot hold: a crop larger than the stored frames,
    more decoding workers than the machine's bound, resident skeletons larger than the memory left."""
    clip = config.data.clip
    check_workers(config.run.workers)
    if config.uses_rgb and clip.crop > train.rgb_size:
        raise ConfigError(f"--crop {clip.crop} is larger than the stored RGB frames of {train.store} "
                          f"({train.rgb_size} x {train.rgb_size})")
    if "skeleton" in config.stages:  # both splits in every process; on a CPU, every process of this machine
        local = 1 if procs.device.type == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", procs.world))
        itemsize = 2 if clip.half else 4
        nbytes = local * sum(packed_bytes(info.num_frames, itemsize) for info in (train, test))
        frames = int(train.num_frames.sum() + test.num_frames.sum())
        processes = f" x {local} processes" if local > 1 else ""
        check_resident(nbytes, procs.device, f"the skeletons of {len(train) + len(test)} samples ({frames} "
                       f"frames x 2 x 25 x 3 x {itemsize} bytes{processes})",
                       "" if clip.half else " (--half-skeletons halves them)")
