"""RGBPoseConv3D (PYSKL): a SlowOnly-R50 RGB pathway and a PoseC3D heatmap pathway that trade features.

    from model.networks.rgbpose import RGBPoseConv3D, RGBPoseConfig
    net = RGBPoseConv3D(RGBPoseConfig(num_classes=60))
    out = net(rgb=clip, heatmaps=heatmaps)  # clip (N, 3, 8, 224, 224), heatmaps (N, 25, 32, 56, 56)
    out["rgb"], out["skeleton"]             # each pathway's logits (N, 60); train on both (heads_loss)
    out["logits"]                           # the prediction: log of the mean of their softmaxes

From `kennymckormick/pyskl` (commit 3f6795f): `pyskl/models/cnns/rgbposeconv3d.py` and
`resnet3d_slowfast.py` (ResNet3dPathway), `heads/rgbpose_head.py`, with the settings of
`configs/rgbpose_conv3d/rgbpose_conv3d.py`: speed_ratio 4, channel_ratio 4, fusion kernel 7;
  RGB   SlowOnly-R50 (posec3d.py), lateral_activate (0, 0, 1, 1), lateral_infl 1;
  pose  PoseC3D's backbone with temporal strides (1, 1, 1), lateral_inv, lateral_activate (0, 1, 1),
        lateral_infl 16, in_channels 17 there (25 Kinect joints by default here).
The pose pathway sees 4x the frames at 1/4 of the resolution, so after RGB stage 2 and pose stage 1,
and again after RGB stage 3 and pose stage 2, the two maps have the same (H, W) and time differs by 4:
  pose -> RGB  `PoseToRGB`: 7x1x1 conv with temporal stride 4, same channels, no BN, no ReLU;
  RGB -> pose  `RGBToPose`: 7x1x1 transposed conv with temporal stride 4 to 1/16 of the channels,
               BN, ReLU;
each computed from the maps before the exchange and concatenated after the receiver's channels:
  RGB  stem+stage1+stage2 (512, T, H/8) + pose 128 -> 640 -> stage3 (1024) + pose 256 -> 1280 -> stage4
  pose stem+stage1 (128, 4T, H/8) + RGB 512/16 = 32 -> 160 -> stage2 (256) + RGB 1024/16 = 64 -> 320
       -> stage3 (512, 4T, H/32)
Head (RGBPoseHead): per pathway, global average -> dropout 0.5 -> linear (2048 and 512 in).
PYSKL's training options rgb_detach / pose_detach / *_drop_path are off in that config and not built.

"logits". PYSKL trains on the sum of the two heads' cross-entropies (loss_weights [1, 1]; the same as
`heads_loss` over "rgb" and "skeleton" here) and tests with average_clips='prob': each head's softmax,
averaged over clips, then the two added 1:1 (`auto_mix2`, the key indicator `RGBPose_1:1_top1_acc`). So
"logits" = log((softmax(rgb) + softmax(skeleton)) / 2): its argmax is PYSKL's 1:1 prediction on a
clip, and its softmax is the mixture probability (a proper log-score for a loss). Over several clips the
project's evaluator averages these log-scores rather than probabilities, a small departure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from model.networks.posec3d import NUM_KINECT_JOINTS, posec3d_backbone, slowonly_r50_backbone
from model.networks.resnet3d import (
    PooledClassifier,
    ResNet3d,
    ResNet3dConfig,
    check_clip,
    init_pyskl_weights,
    pyskl_backbone_key,
)

SPEED_RATIO = 4  # pose frames per RGB frame (PYSKL speed_ratio)
SPATIAL_RATIO = 4  # RGB pixels per heatmap pixel: the maps meet after RGB stride 8 and pose stride 2
CHANNEL_RATIO = 4  # PYSKL channel_ratio
RGB_TO_POSE_SQUEEZE = 16  # the pose pathway's lateral_infl (lateral_inv): RGB channels / 16
FUSION_KERNEL = 7  # temporal kernel of every lateral connection
# The exchanges: (RGB stage, pose stage) (0-based) after which the two maps are traded. In PYSKL's names
# pose -> RGB is rgb_path.layer{RGB stage + 1}_lateral, RGB -> pose pose_path.layer{pose stage + 1}_lateral.
EXCHANGES = ((1, 0), (2, 1))


class PoseToRGB(nn.Module):
    """(N, C, 4T, H, W) -> (N, C, T, H, W): temporal conv 7x1x1, stride 4, no BN or ReLU (ConvModule
    without norm or activation, PYSKL's non-inverse lateral)."""

    def __init__(self, channels: int):
        super().__init__()
        pad = (FUSION_KERNEL - 1) // 2
        self.conv = nn.Conv3d(channels, channels, (FUSION_KERNEL, 1, 1), (SPEED_RATIO, 1, 1), (pad, 0, 0),
                              bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class RGBToPose(nn.Module):
    """(N, C_in, T, H, W) -> (N, C_out, 4T, H, W): transposed temporal conv 7x1x1, stride 4, + BN + ReLU
    (PYSKL's DeConvModule). PYSKL asks for an output of exactly 4T; without help the transposed conv
    gives 4(T-1) - 6 + 7 = 4T - 3, so output_padding 3 adds the last 3 frames, as output_size does."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        pad = (FUSION_KERNEL - 1) // 2
        extra = SPEED_RATIO + 2 * pad - FUSION_KERNEL  # 4T - ((T-1)*4 - 2*pad + 7) = 3
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, (FUSION_KERNEL, 1, 1), (SPEED_RATIO, 1, 1),
                                       (pad, 0, 0), output_padding=(extra, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


def pyskl_fusion(rgb_logits: Tensor, pose_logits: Tensor) -> Tensor:
    """(N, K), (N, K) -> log((softmax(rgb) + softmax(pose)) / 2), (N, K): PYSKL's 1:1 test-time mix."""
    stacked = torch.stack([rgb_logits.log_softmax(1), pose_logits.log_softmax(1)])  # (2, N, K)
    return torch.logsumexp(stacked, dim=0) - math.log(2)


@dataclass(frozen=True)
class RGBPoseConfig:
    """num_classes; in_channels: heatmap channels (25 Kinect joints; 17 for PYSKL's COCO checkpoints);
    dropout: before each pathway's classifier."""

    num_classes: int
    in_channels: int = NUM_KINECT_JOINTS
    dropout: float = 0.5

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.pathways()

    def pathways(self) -> tuple[ResNet3dConfig, ResNet3dConfig]:
        """(RGB, pose) backbone configs, each widened at the stages that receive the other's map."""
        rgb, pose = slowonly_r50_backbone(), posec3d_backbone(self.in_channels, (1, 1, 1))
        rgb_extra, pose_extra = [0] * len(rgb.stage_blocks), [0] * len(pose.stage_blocks)
        for r, p in EXCHANGES:
            rgb_extra[r + 1] = rgb.stage_width(r) // CHANNEL_RATIO  # = pose.stage_width(p), kept
            pose_extra[p + 1] = pose.stage_width(p) * CHANNEL_RATIO // RGB_TO_POSE_SQUEEZE
        return (replace(rgb, lateral_channels=tuple(rgb_extra)),
                replace(pose, lateral_channels=tuple(pose_extra)))


class RGBPoseConv3D(nn.Module):
    """forward(rgb=(N, 3, T, 4H, 4W), heatmaps=(N, V, 4T, H, W)) -> {"logits", "rgb", "skeleton"} (N, K).

    Feature maps at 8x224x224 and 32x56x56: RGB (N, 2048, 8, 7, 7), pose (N, 512, 32, 7, 7).
    """

    def __init__(self, config: RGBPoseConfig):
        super().__init__()
        self.config = config
        rgb_config, pose_config = config.pathways()
        self.rgb = ResNet3d(rgb_config)
        self.pose = ResNet3d(pose_config)
        self.pose_to_rgb = nn.ModuleList(
            PoseToRGB(rgb_config.lateral_channels[r + 1]) for r, _ in EXCHANGES)
        self.rgb_to_pose = nn.ModuleList(
            RGBToPose(rgb_config.stage_width(r), pose_config.lateral_channels[p + 1]) for r, p in EXCHANGES)
        self.num_features = {"rgb": rgb_config.out_channels, "skeleton": pose_config.out_channels}
        self.rgb_head = PooledClassifier(rgb_config.out_channels, config.num_classes, config.dropout)
        self.pose_head = PooledClassifier(pose_config.out_channels, config.num_classes, config.dropout)
        init_pyskl_weights(self.pose_to_rgb)
        init_pyskl_weights(self.rgb_head)
        init_pyskl_weights(self.pose_head)

    def check_inputs(self, rgb: Tensor | None, heatmaps: Tensor | None) -> None:
        """Raise ValueError naming the argument unless both are float clips whose sizes line up."""
        check_clip("rgb", rgb, 3, "RGBPoseConv3D")
        check_clip("heatmaps", heatmaps, self.config.in_channels, "RGBPoseConv3D")
        (n, _, t, h, w), (n_p, _, t_p, h_p, w_p) = rgb.shape, heatmaps.shape
        if (n_p, t_p, h_p * SPATIAL_RATIO, w_p * SPATIAL_RATIO) != (n, t * SPEED_RATIO, h, w):
            raise ValueError(f"heatmaps must be (N, V, {SPEED_RATIO}T, H/{SPATIAL_RATIO}, W/{SPATIAL_RATIO}) "
                             f"for rgb (N, 3, T, H, W) = {tuple(rgb.shape)}: the pathways trade maps of "
                             f"equal size; got heatmaps of shape {tuple(heatmaps.shape)}")

    def forward_features(self, rgb: Tensor, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, T, H, W), (N, V, 4T, H/4, W/4) -> RGB map (N, 2048, T, H/32, W/32) and pose map
        (N, 512, 4T, H/32, W/32)."""
        self.check_inputs(rgb, heatmaps)
        r, p = self.rgb.forward_stem(rgb), self.pose.forward_stem(heatmaps)
        done_r = done_p = 0
        for k, (stage_r, stage_p) in enumerate(EXCHANGES):
            for i in range(done_r, stage_r + 1):
                r = self.rgb.stages[i](r)
            for i in range(done_p, stage_p + 1):
                p = self.pose.stages[i](p)
            done_r, done_p = stage_r + 1, stage_p + 1
            # Both laterals read the maps as they were before the exchange.
            r, p = (torch.cat([r, self.pose_to_rgb[k](p)], dim=1),  # (N, C_r + C_p, T, h, w)
                    torch.cat([p, self.rgb_to_pose[k](r)], dim=1))  # (N, C_p + C_r/16, 4T, h, w)
        for stage in self.rgb.stages[done_r:]:
            r = stage(r)
        for stage in self.pose.stages[done_p:]:
            p = stage(p)
        return r, p

    def forward_head(self, features: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """(RGB map, pose map) -> {"rgb", "skeleton", "logits"}, each (N, num_classes)."""
        out = {"rgb": self.rgb_head(features[0]), "skeleton": self.pose_head(features[1])}
        out["logits"] = pyskl_fusion(out["rgb"], out["skeleton"])
        return out

    def forward(self, rgb: Tensor | None = None, skeleton: Tensor | None = None,
                motion: Tensor | None = None, heatmaps: Tensor | None = None) -> dict[str, Tensor]:
        """Uses `rgb` and `heatmaps` (see the class docstring); `skeleton` and `motion` are ignored."""
        return self.forward_head(self.forward_features(rgb, heatmaps))

    def pyskl_key_map(self) -> dict[str, str]:
        """Each state key -> its PYSKL checkpoint key:
          rgb.* / pose.*                 -> backbone.rgb_path.* / backbone.pose_path.* (pyskl_backbone_key)
          pose_to_rgb.<k>.conv.weight    -> backbone.rgb_path.layer<r+1>_lateral.conv.weight
          rgb_to_pose.<k>.<conv|bn>.<leaf> -> backbone.pose_path.layer<p+1>_lateral.<conv|bn>.<leaf>
          rgb_head.fc.* / pose_head.fc.* -> cls_head.fc_rgb.* / cls_head.fc_pose.*
        with (r, p) = EXCHANGES[k]: layer2_lateral / layer3_lateral and layer1_lateral / layer2_lateral."""
        paths = {"rgb": "backbone.rgb_path.", "pose": "backbone.pose_path."}
        heads = {"rgb_head": "cls_head.fc_rgb.", "pose_head": "cls_head.fc_pose."}
        mapping = {}
        for key in self.state_dict():
            first, rest = key.split(".", 1)
            parts = rest.split(".")
            if first in paths:
                mapping[key] = paths[first] + pyskl_backbone_key(rest)
            elif first in heads and parts[0] == "fc" and len(parts) == 2:
                mapping[key] = heads[first] + parts[1]
            elif first == "pose_to_rgb" and parts[1:] == ["conv", "weight"]:
                mapping[key] = f"backbone.rgb_path.layer{EXCHANGES[int(parts[0])][0] + 1}_lateral.conv.weight"
            elif first == "rgb_to_pose" and len(parts) == 3 and parts[1] in ("conv", "bn"):
                layer = EXCHANGES[int(parts[0])][1] + 1
                mapping[key] = f"backbone.pose_path.layer{layer}_lateral." + ".".join(parts[1:])
            else:
                raise ValueError(f"no PYSKL counterpart for {key!r}")
        return mapping
