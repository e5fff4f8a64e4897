"""Calling any network of model.MODEL_NAMES in the generic tests: the inputs it takes, made from an RGB
clip and a skeleton, so that permuting or replacing samples of those carries to every input."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import model


def heatmaps_like(rgb: torch.Tensor, joints: int = 25) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, joints, 4T, H/4, W/4): what RGBPoseConv3D pairs with the clip, a function
    of each sample's own clip (pooled, spread over 4x the frames, one scale per channel)."""
    pooled = F.avg_pool3d(rgb, (1, 4, 4)).mean(1, keepdim=True).repeat_interleave(4, dim=2)  # (B, 1, 4T, ..)
    return pooled * torch.linspace(0.5, 1.5, joints).view(1, joints, 1, 1, 1)


def call(net: torch.nn.Module, name: str, rgb: torch.Tensor, skeleton: torch.Tensor,
         motion: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """net (built as `name`) on rgb and skeleton, plus heatmaps where the network takes them."""
    inputs = {"rgb": rgb, "skeleton": skeleton, "motion": motion}
    if model.network_spec(name).takes("heatmaps"):
        inputs["heatmaps"] = heatmaps_like(rgb)
    return net(**inputs)


def options(name: str, frames: int = 16) -> dict:
    """build() options of the generic tests: the skeleton frame count, for the networks that take one."""
    return {"frames": frames} if "frames" in model.network_spec(name).options else {}
