"""HCN: hierarchical co-occurrence network (Li et al. 2018), the skeleton stream of CC-DFARM.

    from model.networks.hcn import HCN, HCNConfig
    net = HCN(HCNConfig(num_classes=60, frames=32))
    out = net(skeleton=skeleton)  # skeleton (B, 3, T=32, V=25, M=2), xyz in metres; T = config.frames
    out["logits"]                 # (B, 60)
    motion = skeleton_motion(skeleton)  # what net uses when no motion is given (eq. 2, masked)

Input: float32 (or float16/bfloat16) skeletons of exactly (B, in_channels, frames, num_joints,
num_persons); anything else is refused with a ValueError naming the argument and the expected shape.
Motion (paper eq. 2), one definition everywhere: M_t = S_{t+1} - S_t on the frames the model is given
(after temporal sampling), zero where the actor is absent in frame t or t+1 and at the last frame. An
actor is absent from a frame when its (3, 25) slice there is all zero, as the store leaves empty slots;
so an actor entering or leaving the scene makes no spike of size |S|.

Two persons go through the same weights (folded into the batch axis) and meet in an element-wise max
after conv6. Each person has a position branch and a motion branch:
    conv1 1x1 (3 -> 64) + ReLU; conv2 3x1 (64 -> 32); transpose so the joints become channels (the
    paper's "transition layer"); conv3 3x3 (25 -> 32) + maxpool 2; conv4 3x3 (32 -> 64) + dropout +
    maxpool 2  => (64, T/4, 8)
then concat (128) -> conv5 + ReLU + dropout + maxpool 2 -> conv6 (256) + ReLU + dropout + maxpool 2 ->
max over persons -> flatten -> fc7 (512) + ReLU + dropout -> fc8. With `tiam=True` (CC-DFARM's
"improved HCN") a TIAM sits between each person's position and motion maps after conv4.
At T = 32: conv4 64x8x8, conv5 128x4x4, conv6 256x2x2, about 1.06M parameters for 60 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.data.motion import skeleton_motion
from model.networks.dropout import SampleDropout
from model.networks.tiam import TIAM

# Input dtypes the networks accept: float64 fails deep inside the first convolution of a float32 model
# (or runs a .double() one at a cost nobody asked for); integers are not coordinates.
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class HCNConfig:
    """num_classes; frames T (a multiple of 16: four 2x poolings; the network takes exactly T frames,
    since fc7's width depends on it); joints V; persons M; input channels (3 for xyz); tiam: insert TIAM
    after conv4; dropout: the rate of every dropout layer."""

    num_classes: int
    frames: int = 32
    num_joints: int = 25
    num_persons: int = 2
    in_channels: int = 3
    tiam: bool = False
    dropout: float = 0.5

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.frames < 16 or self.frames % 16:
            raise ValueError(f"frames must be a positive multiple of 16, got {self.frames}")
        if self.num_joints < 1 or self.num_persons < 1 or self.in_channels < 1:
            raise ValueError(f"num_joints, num_persons and in_channels must be >= 1, got {self.num_joints}, "
                             f"{self.num_persons}, {self.in_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class PointBranch(nn.Module):
    """conv1..conv4 of one input (position or motion): (B', C, T, V) -> (B', 64, T/4, 8)."""

    def __init__(self, in_channels: int, num_joints: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 1)
        self.conv2 = nn.Conv2d(64, 32, (3, 1), padding=(1, 0))
        self.conv3 = nn.Conv2d(num_joints, 32, 3, padding=1)
        self.conv4 = nn.Conv2d(32, 64, 3, padding=1)
        self.dropout = SampleDropout(dropout, channels=True)  # Dropout2d, a mask per sample

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(F.relu(self.conv1(x)))  # (B', 32, T, V)
        x = x.permute(0, 3, 2, 1)  # (B', V, T, 32): transition layer, joints become channels
        x = F.max_pool2d(self.conv3(x), 2)  # (B', 32, T/2, 16)
        return F.max_pool2d(self.dropout(self.conv4(x)), 2)  # (B', 64, T/4, 8)


class HCN(nn.Module):
    """HCN over (B, C, T, V, M) skeletons with their motion.

    Stream interface shared with `I3D`: `forward_features` (-> (B, 512) fc7 output), `forward_head`
    (fc8), `num_features`; and the stages a fusion network cuts between, persons folded into the
    batch axis as (B*M, ...) in batch-major order:
      point_features(skeleton, motion) -> (position, motion) maps, (B*M, 64, T/4, 8) each (after TIAM)
      cooccurrence_features(p, m)      -> conv5 output (B*M, 128, T/8, 4)
      global_features(x5)              -> fc7 output (B, 512)
    """

    num_features = 512
    cooccurrence_channels = 128

    def __init__(self, config: HCNConfig):
        super().__init__()
        self.config = config
        self.position = PointBranch(config.in_channels, config.num_joints, config.dropout)
        self.motion = PointBranch(config.in_channels, config.num_joints, config.dropout)
        self.tiam = TIAM(64) if config.tiam else None
        self.conv5 = nn.Conv2d(128, self.cooccurrence_channels, 3, padding=1)
        self.conv6 = nn.Conv2d(self.cooccurrence_channels, 256, 3, padding=1)
        self.fc7 = nn.Linear(256 * (config.frames // 16) * 2, self.num_features)
        self.fc8 = nn.Linear(self.num_features, config.num_classes)
        # one module per use: a SampleDropout's mask is its sample's key, a second call would repeat it
        self.dropout5 = SampleDropout(config.dropout, channels=True)
        self.dropout6 = SampleDropout(config.dropout, channels=True)
        self.dropout = SampleDropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero biases in every convolution and linear layer outside TIAM, as
        HCN-pytorch does. PyTorch's default (Kaiming-uniform, a = sqrt(5)) leaves this BatchNorm-free
        network's activations so small that it barely trains from scratch: 0.49 test top-1 after 8
        epochs on the synthetic 6-class store against 0.76 with this
        (tests/test_train_fit.py::test_hcn_learns_the_synthetic_classes)."""
        for module in (self.position, self.motion, self.conv5, self.conv6, self.fc7, self.fc8):
            for layer in module.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def check_inputs(self, skeleton: Tensor, motion: Tensor | None = None) -> None:
        """Raise ValueError unless skeleton [and motion] are float (B, C, T, V, M) of this config's sizes.

        Static shapes and dtypes only, so it costs nothing and compiles without a graph break (under
        `torch.compile(fullgraph=True)` a refusal surfaces as dynamo's error, carrying this message).
        """
        cfg = self.config
        expected = (cfg.in_channels, cfg.frames, cfg.num_joints, cfg.num_persons)
        for name, x in (("skeleton", skeleton), ("motion", motion)):
            if x is None:
                continue
            if x.ndim != 5 or tuple(x.shape[1:]) != expected or x.dtype not in INPUT_DTYPES:
                raise ValueError(
                    f"{name} must be a float32/float16/bfloat16 tensor (B, {cfg.in_channels}, {cfg.frames}, "
                    f"{cfg.num_joints}, {cfg.num_persons}) = (batch, xyz, frames, joints, persons) for this "
                    f"HCN (frames={cfg.frames}); got {x.dtype} of shape {tuple(x.shape)}")
        if motion is not None and motion.shape[0] != skeleton.shape[0]:
            raise ValueError(f"motion must have the skeleton's shape {tuple(skeleton.shape)}, "
                             f"got {tuple(motion.shape)}")

    def _fold_persons(self, x: Tensor) -> Tensor:
        """(B, C, T, V, M) -> (B*M, C, T, V), batch-major: row b*M + m is person m of sample b."""
        b, c, t, v, m = x.shape
        return x.permute(0, 4, 1, 2, 3).reshape(b * m, c, t, v)  # (B*M, C, T, V)

    def point_features(self, skeleton: Tensor, motion: Tensor) -> tuple[Tensor, Tensor]:
        """Skeleton and motion (B, C, T, V, M) -> position and motion maps (B*M, 64, T/4, 8)."""
        self.check_inputs(skeleton, motion)
        p = self.position(self._fold_persons(skeleton))
        m = self.motion(self._fold_persons(motion))
        if self.tiam is not None:
            p, m = self.tiam(p, m)
        return p, m

    def cooccurrence_features(self, p: Tensor, m: Tensor) -> Tensor:
        """Concat and conv5: (B*M, 64, T/4, 8) twice -> (B*M, 128, T/8, 4)."""
        x = self.conv5(torch.cat([p, m], dim=1))
        return F.max_pool2d(self.dropout5(F.relu(x)), 2)

    def global_features(self, x5: Tensor) -> Tensor:
        """conv6, max over persons, fc7: (B*M, 128, T/8, 4) -> (B, 512)."""
        x = F.max_pool2d(self.dropout6(F.relu(self.conv6(x5))), 2)  # (B*M, 256, T/16, 2)
        x = x.unflatten(0, (-1, self.config.num_persons)).amax(dim=1)  # (B, 256, T/16, 2)
        return self.dropout(F.relu(self.fc7(x.flatten(1))))  # (B, 512)

    def forward_features(self, skeleton: Tensor, motion: Tensor | None = None) -> Tensor:
        """(B, C, T, V, M) skeleton [and motion] -> fc7 features (B, 512). Motion defaults to
        `skeleton_motion(skeleton)`."""
        self.check_inputs(skeleton, motion)
        if motion is None:
            motion = skeleton_motion(skeleton)
        return self.global_features(self.cooccurrence_features(*self.point_features(skeleton, motion)))

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, 512) -> logits (B, num_classes)."""
        return self.fc8(features)

    def forward(self, rgb: Tensor | None = None, skeleton: Tensor | None = None,
                motion: Tensor | None = None) -> dict[str, Tensor]:
        """Same call as the two-stream networks; `rgb` is ignored. skeleton, motion: (B, C, T, V, M) with
        T = config.frames; motion defaults to `skeleton_motion(skeleton)`.

        Returns {"logits": (B, K), "skeleton": (B, K)} (the same tensor under both names).
        """
        if skeleton is None:
            cfg = self.config
            raise ValueError(f"HCN needs the skeleton (B, {cfg.in_channels}, {cfg.frames}, {cfg.num_joints}, "
                             f"{cfg.num_persons}); got skeleton=None")
        logits = self.forward_head(self.forward_features(skeleton, motion))
        return {"logits": logits, "skeleton": logits}
