"""CC-DFARM and its ablations: I3D + HCN fused at two points inside the backbones and once at the end.

    import model
    net = model.build("ccdfarm", num_classes=60)
    out = net(rgb, skeleton)        # rgb (B, 3, T, H, W), skeleton (B, 3, 32, 25, 2); motion from eq. 2,
                                    # masked where an actor is absent (model.skeleton_motion)
    out["logits"]                   # the prediction, (B, 60); also out["rgb"], out["skeleton"], out["fused"]
    loss = model.heads_loss(out, labels)

The variants (MODEL_SPEC.md, the paper's tables 4-6) are named in `model/networks/build.py`.

Fusion points: (1) I3D Mixed_5b (832 channels) with HCN conv5 of person 1 and of person 2 (128 each);
(2) I3D Mixed_5c (1024) with HCN fc7 (512). DSFM treats the two persons as two more modalities (blocks
of 64 channels at point 1, 256 at point 2). MMTM is pairwise, so at point 1 the two persons' maps are
stacked on channels into one 256-channel modality; the released MMTM code gates person 1 only, here
both are gated. With MFFM, Mixed_5c (after point 2) is fused with fc7 projected to 1024 channels and
spread over the map, and that fused map has its own head, which is then the prediction; otherwise the
prediction is the sum of the RGB and skeleton logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.data.motion import skeleton_motion
from model.networks.dropout import SampleDropout
from model.networks.fusion import DSFM, MFFM, MMTM
from model.networks.hcn import HCN, HCNConfig
from model.networks.i3d import I3D, I3DConfig

FUSIONS = ("mmtm", "dsfm")
HEADS = ("rgb", "skeleton", "fused")
MID_ENDPOINT, HIGH_ENDPOINT = "mixed5b", "mixed5c"  # I3D endpoints of fusion points 1 and 2
MID_BLOCK_CHANNELS, HIGH_BLOCK_CHANNELS = 64, 256  # DSFM block sizes (paper section 2.2)


@dataclass(frozen=True)
class TwoStreamConfig:
    """num_classes; fusion: "mmtm" or "dsfm" at the points that are on; fuse_mid / fuse_high: fusion
    points 1 / 2; tiam: TIAM inside HCN; mffm: MFFM and its head at the end; frames: skeleton clip
    length T (a multiple of 16; the RGB stream takes any length); dropout: every dropout layer;
    lowest_attention: DSFM's lambda; mmtm_ratio: MMTM's reduction ratio; bn_momentum: I3D's (I3DConfig)."""

    num_classes: int
    fusion: str = "dsfm"
    fuse_mid: bool = True
    fuse_high: bool = True
    tiam: bool = False
    mffm: bool = False
    frames: int = 32
    dropout: float = 0.5
    lowest_attention: float = 0.5
    mmtm_ratio: int = 4
    bn_momentum: float = 0.01

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not 0.0 <= self.lowest_attention <= 1.0:
            raise ValueError(f"lowest_attention must be in [0, 1], got {self.lowest_attention}")
        if self.mmtm_ratio < 1:
            raise ValueError(f"mmtm_ratio must be >= 1, got {self.mmtm_ratio}")
        # num_classes, frames and dropout are checked by the stream configs built from this one.
        self.stream_configs()

    def stream_configs(self) -> tuple[I3DConfig, HCNConfig]:
        return (I3DConfig(self.num_classes, dropout=self.dropout, bn_momentum=self.bn_momentum),
                HCNConfig(self.num_classes, frames=self.frames, tiam=self.tiam, dropout=self.dropout))


class TwoStreamNet(nn.Module):
    """I3D (RGB) + HCN (skeleton) with optional fusion at points 1 and 2, TIAM and MFFM.

    forward(rgb (B, 3, T, H, W), skeleton (B, 3, T_s, 25, 2), motion=None) -> dict of logits (B, K):
    "rgb", "skeleton", "fused" (with MFFM) and "logits", the prediction. T_s = config.frames; T, H, W
    any size; the same B in rgb and skeleton; float32/float16/bfloat16. Anything else raises ValueError
    naming the argument and the expected shape. motion defaults to `skeleton_motion(skeleton)`.
    """

    def __init__(self, config: TwoStreamConfig):
        super().__init__()
        self.config = config
        i3d_config, hcn_config = config.stream_configs()
        self.rgb = I3D(i3d_config)
        self.skeleton = HCN(hcn_config)
        persons = hcn_config.num_persons
        mid_rgb = self.rgb.endpoint_channels(MID_ENDPOINT)  # 832
        high_rgb = self.rgb.endpoint_channels(HIGH_ENDPOINT)  # 1024
        mid_sk, high_sk = self.skeleton.cooccurrence_channels, self.skeleton.num_features

        def fusion(rgb_channels: int, skeleton_channels: list[int], block_channels: int) -> nn.Module:
            if config.fusion == "dsfm":
                return DSFM([rgb_channels, *skeleton_channels], block_channels,
                            lowest_attention=config.lowest_attention)
            return MMTM(rgb_channels, sum(skeleton_channels), ratio=config.mmtm_ratio)

        self.fuse_mid = fusion(mid_rgb, [mid_sk] * persons, MID_BLOCK_CHANNELS) if config.fuse_mid else None
        self.fuse_high = fusion(high_rgb, [high_sk], HIGH_BLOCK_CHANNELS) if config.fuse_high else None
        if config.mffm:
            self.skeleton_to_rgb = nn.Linear(high_sk, high_rgb)  # fc7 -> Mixed_5c width, for MFFM
            self.mffm = MFFM(high_rgb)
            self.fused_dropout = SampleDropout(config.dropout)
            self.fused_head = nn.Linear(high_rgb, config.num_classes)
        else:
            self.skeleton_to_rgb = self.mffm = self.fused_dropout = self.fused_head = None

    def _fuse(self, module: nn.Module, rgb: Tensor, skeleton: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Apply one fusion point; `skeleton` lists one tensor per skeleton modality (persons at point 1)."""
        if isinstance(module, DSFM):
            rgb, *skeleton = module([rgb, *skeleton])
            return rgb, skeleton
        sizes = [s.shape[1] for s in skeleton]
        rgb, stacked = module(rgb, torch.cat(skeleton, dim=1))  # MMTM: persons stacked on channels
        return rgb, list(stacked.split(sizes, dim=1))

    def forward(self, rgb: Tensor, skeleton: Tensor, motion: Tensor | None = None) -> dict[str, Tensor]:
        if rgb is None or skeleton is None:
            raise ValueError("a two-stream network needs both rgb (B, 3, T, H, W) and skeleton "
                             "(B, 3, T, 25, 2)")
        self.rgb.check_rgb(rgb)
        self.skeleton.check_inputs(skeleton, motion)
        if rgb.shape[0] != skeleton.shape[0]:
            raise ValueError(f"rgb and skeleton must hold the same batch B: rgb (B, 3, T, H, W) is "
                             f"{tuple(rgb.shape)}, skeleton (B, 3, T_s, 25, 2) is {tuple(skeleton.shape)}")
        if motion is None:
            motion = skeleton_motion(skeleton)
        batch, persons = skeleton.shape[0], self.skeleton.config.num_persons
        s5 = self.skeleton.cooccurrence_features(*self.skeleton.point_features(skeleton, motion))
        r5b = self.rgb.forward_endpoints(rgb, "conv1a", MID_ENDPOINT)  # (B, 832, T/8, H/32, W/32)
        if self.fuse_mid is not None:
            people = list(s5.unflatten(0, (batch, persons)).unbind(1))  # M x (B, 128, T_s/8, 4)
            r5b, people = self._fuse(self.fuse_mid, r5b, people)
            s5 = torch.stack(people, dim=1).flatten(0, 1)  # (B*M, 128, T_s/8, 4)
        r5c = self.rgb.forward_endpoints(r5b, HIGH_ENDPOINT, HIGH_ENDPOINT)  # (B, 1024, T/8, H/32, W/32)
        s7 = self.skeleton.global_features(s5)  # (B, 512)
        if self.fuse_high is not None:
            r5c, (s7,) = self._fuse(self.fuse_high, r5c, [s7])

        out = {"rgb": self.rgb.forward_head(r5c), "skeleton": self.skeleton.forward_head(s7)}
        if self.mffm is not None:
            f2 = self.skeleton_to_rgb(s7)  # (B, 1024)
            fused = self.mffm(r5c, f2.reshape(*f2.shape, 1, 1, 1))  # (B, 1024, T/8, H/32, W/32)
            pooled = fused.mean(dim=(2, 3, 4))  # (B, 1024)
            out["fused"] = self.fused_head(self.fused_dropout(pooled))
            out["logits"] = out["fused"]
        else:
            out["logits"] = out["rgb"] + out["skeleton"]
        return out


def to_channels_last_3d(net: nn.Module) -> nn.Module:
    """Put every Conv3d weight of `net` in channels_last_3d memory format, in place; returns `net`.

    `net.to(memory_format=torch.channels_last_3d)` fails on a two-stream network because HCN's Conv2d
    weights are 4-D; this converts the 3-D convolutions only (I3D, MFFM). Feed the RGB clip as
    `rgb.to(memory_format=torch.channels_last_3d)` too.
    """
    for module in net.modules():
        if isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
    return net


def heads_loss(outputs: Mapping[str, Tensor], target: Tensor,
               weights: Mapping[str, float] | None = None, check_range: bool = True) -> Tensor:
    """Sum over the heads present ("rgb", "skeleton", "fused") of weight * cross-entropy.

    outputs: a network's result, logits (B, K) per head; target: int64 class labels (B,) in [0, K).
    weights default to 1 per head; a head missing from `weights` counts with weight 1. A target of
    another shape or dtype, or a label outside [0, K), raises ValueError (on CUDA cross-entropy would
    otherwise stop with a device-side assert). The range check reads one bool back from the device, a
    wait for it: a training loop that checked its labels once (`SplitData`) passes check_range=False.
    """
    weights = weights or {}
    unknown = set(weights) - set(HEADS)
    if unknown:
        raise ValueError(f"unknown heads {sorted(unknown)}; heads are {HEADS}")
    heads = [h for h in HEADS if h in outputs]
    if not heads:
        raise ValueError(f"outputs has none of the heads {HEADS}: {sorted(outputs)}")
    batch, num_classes = outputs[heads[0]].shape
    if target.shape != (batch,) or target.dtype != torch.int64:
        raise ValueError(f"target must be int64 class labels (B,) = ({batch},), got {target.dtype} of shape "
                         f"{tuple(target.shape)}")
    outside = (target < 0) | (target >= num_classes)
    if check_range and outside.any():
        raise ValueError(f"target labels must be in [0, {num_classes}) for {num_classes} classes, got "
                         f"{target[outside].unique().tolist()}")
    terms = [weights.get(h, 1.0) * F.cross_entropy(outputs[h].float(), target) for h in heads]
    return torch.stack(terms).sum()
