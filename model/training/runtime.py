"""A network where it runs: built once for fit, eval and predict, with the same device settings.

    net = build_network(config, num_classes, device)   # model.build + device + channels_last_3d on CUDA
    runtime = Runtime(device, bf16=True)
    out = runtime.forward(net, batch.rgb, batch.skeleton, batch.motion)   # autocast, channels_last input

On CUDA: bf16 autocast and channels_last_3d for the 3-D convolutions (weights and RGB input); on a CPU,
fp32 (oneDNN's bf16 conv3d returned inf weight gradients on this project's CPUs, see the README).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.networks.build import build
from model.networks.ccdfarm import to_channels_last_3d


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
                motion: Tensor | None) -> dict[str, Tensor]:
        """net(rgb=, skeleton=, motion=) under autocast, the clip in channels_last_3d on CUDA."""
        if rgb is not None and self.cuda:
            rgb = rgb.contiguous(memory_format=torch.channels_last_3d)
        with self.autocast():
            return net(rgb=rgb, skeleton=skeleton, motion=motion)


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
