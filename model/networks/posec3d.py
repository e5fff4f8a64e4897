"""PoseC3D (Duan et al. 2022) and its RGB twin SlowOnly-R50: one 3D ResNet and a pooled linear head.

    from model.networks.posec3d import PoseC3D, PoseC3DConfig, SlowOnly, SlowOnlyConfig
    net = PoseC3D(PoseC3DConfig(num_classes=60))   # 25 Kinect joints; in_channels=17 for COCO's
    out = net(heatmaps=heatmaps)                   # (N, 25, 48, 56, 56) joint heatmaps
    out["logits"]                                  # (N, 60); the same tensor as out["skeleton"]
    rgb_net = SlowOnly(SlowOnlyConfig(num_classes=60))
    rgb_net(rgb=clip)["logits"]                    # clip (N, 3, 8, 224, 224), normalised

Settings, from PYSKL's configs (commit 3f6795f):
  PoseC3D   `configs/posec3d/slowonly_r50_ntu60_xsub/joint.py`: ResNet3dSlowOnly with in_channels 17
            (here 25 by default: one heatmap per Kinect joint), base_channels 32, 3 stages of (4, 6, 3)
            blocks, conv1 1x7x7 with stride 1 and no pooling stride (the heatmaps are already 56^2),
            inflate (0, 1, 1), spatial strides (2, 2, 2), temporal strides (1, 1, 2); I3DHead on 512
            channels, dropout 0.5. 48x56x56 -> (512, 24, 7, 7). About 2.0M parameters.
  SlowOnly  `configs/rgbpose_conv3d/rgb_only.py`: ResNet3dSlowOnly depth 50 (base 64, 4 stages of
            (3, 4, 6, 3)), conv1 1x7x7 stride (1, 2), pool stride (1, 2), inflate (0, 0, 1, 1);
            I3DHead on 2048 channels, dropout 0.5. 8x224x224 -> (2048, 8, 7, 7). About 31.8M.
The pose-only pathway that RGBPoseConv3D starts from (`configs/rgbpose_conv3d/pose_only.py`) is PoseC3D
with temporal_strides=(1, 1, 1) at 32 frames.

PYSKL tests with `average_clips='prob'` (softmax, then the mean over clips); here "logits" are the raw
scores, and the evaluator's averaging applies. Weights: `load_pyskl_state(net, "joint.pth")`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from model.networks.resnet3d import (
    PooledClassifier,
    ResNet3d,
    ResNet3dConfig,
    check_clip,
    init_pyskl_weights,
    pyskl_backbone_key,
)

NUM_KINECT_JOINTS = 25


def posec3d_backbone(in_channels: int, temporal_strides: tuple[int, int, int] = (1, 1, 2)) -> ResNet3dConfig:
    """The PoseC3D SlowOnly backbone (also RGBPoseConv3D's pose pathway, there with (1, 1, 1))."""
    return ResNet3dConfig(in_channels=in_channels, base_channels=32, stage_blocks=(4, 6, 3),
                          spatial_strides=(2, 2, 2), temporal_strides=temporal_strides, inflate=(0, 1, 1),
                          conv1_kernel=(1, 7, 7), conv1_stride=(1, 1), pool1_stride=(1, 1))


def slowonly_r50_backbone(in_channels: int = 3) -> ResNet3dConfig:
    """SlowOnly-R50 (PYSKL's `ResNet3dSlowOnly(depth=50)`), the RGB network and pathway."""
    return ResNet3dConfig(in_channels=in_channels)


def _check_classifier(num_classes: int, dropout: float) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


@dataclass(frozen=True)
class PoseC3DConfig:
    """num_classes; in_channels: heatmaps per clip frame (25 Kinect joints; 17 for COCO keypoints, as
    PYSKL's checkpoints); temporal_strides of the 3 stages ((1, 1, 2) in joint.py, (1, 1, 1) in
    RGBPose's pose_only.py); dropout: before the classifier."""

    num_classes: int
    in_channels: int = NUM_KINECT_JOINTS
    temporal_strides: tuple[int, int, int] = (1, 1, 2)
    dropout: float = 0.5

    def __post_init__(self):
        _check_classifier(self.num_classes, self.dropout)
        self.backbone()  # validates in_channels and temporal_strides

    def backbone(self) -> ResNet3dConfig:
        return posec3d_backbone(self.in_channels, tuple(self.temporal_strides))


@dataclass(frozen=True)
class SlowOnlyConfig:
    """num_classes; in_channels: 3 for RGB; dropout: before the classifier."""

    num_classes: int
    in_channels: int = 3
    dropout: float = 0.5

    def __post_init__(self):
        _check_classifier(self.num_classes, self.dropout)
        self.backbone()

    def backbone(self) -> ResNet3dConfig:
        return slowonly_r50_backbone(self.in_channels)


class SlowOnlyClassifier(nn.Module):
    """A ResNet3d and its pooled classifier, reading one input and naming its logits after it.

    Subclasses say which input (`input_name`, a keyword of forward) and which head name the logits
    carry besides "logits" (`head_name`, as the two-stream networks' "rgb" / "skeleton").
    """

    input_name = ""
    head_name = ""

    def __init__(self, config: PoseC3DConfig | SlowOnlyConfig):
        super().__init__()
        self.config = config
        self.backbone = ResNet3d(config.backbone())
        self.num_features = self.backbone.num_features
        self.head = PooledClassifier(self.num_features, config.num_classes, config.dropout)
        init_pyskl_weights(self.head)

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, C_in, T, H, W) -> (N, num_features, T', H', W')."""
        check_clip(self.input_name, x, self.config.in_channels, type(self).__name__)
        return self.backbone(x)

    def forward_head(self, features: Tensor) -> Tensor:
        """(N, num_features, T', H', W') -> logits (N, num_classes)."""
        return self.head(features)

    def forward(self, rgb: Tensor | None = None, skeleton: Tensor | None = None,
                motion: Tensor | None = None, heatmaps: Tensor | None = None) -> dict[str, Tensor]:
        """Reads the input named `input_name` only, (N, in_channels, T, H, W) of any T, H, W >= 1;
        returns {"logits": (N, K), head_name: the same tensor}."""
        x = {"rgb": rgb, "heatmaps": heatmaps}[self.input_name]
        logits = self.forward_head(self.forward_features(x))
        return {"logits": logits, self.head_name: logits}

    def pyskl_key_map(self) -> dict[str, str]:
        """Each state key -> its PYSKL checkpoint key: backbone.* via `pyskl_backbone_key`,
        head.fc.<leaf> -> cls_head.fc_cls.<leaf>."""
        mapping = {}
        for key in self.state_dict():
            if key.startswith("backbone."):
                mapping[key] = "backbone." + pyskl_backbone_key(key.removeprefix("backbone."))
            elif key in ("head.fc.weight", "head.fc.bias"):
                mapping[key] = "cls_head.fc_cls." + key.rsplit(".", 1)[1]
            else:
                raise ValueError(f"no PYSKL counterpart for {key!r}")
        return mapping


class PoseC3D(SlowOnlyClassifier):
    """PoseC3D: forward(heatmaps=(N, V, T, H, W)) -> {"logits", "skeleton"}, both (N, num_classes).

    With the defaults and 48x56x56 heatmaps: stem (N, 32, 48, 56, 56), stages (N, 128, 48, 28, 28),
    (N, 256, 48, 14, 14), (N, 512, 24, 7, 7).
    """

    input_name, head_name = "heatmaps", "skeleton"


class SlowOnly(SlowOnlyClassifier):
    """SlowOnly-R50: forward(rgb=(N, 3, T, H, W)) -> {"logits", "rgb"}, both (N, num_classes).

    With an 8x224x224 clip: stem (N, 64, 8, 56, 56), stages (N, 256, 8, 56, 56), (N, 512, 8, 28, 28),
    (N, 1024, 8, 14, 14), (N, 2048, 8, 7, 7).
    """

    input_name, head_name = "rgb", "rgb"
