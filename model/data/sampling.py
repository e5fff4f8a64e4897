"""The rules that cut a clip out of a sample: which frames, which crop, which flip, from which uniforms.

    rule = ClipRule(frames=32, crop=224, flip=0.5, rgb_size=256, rgb_frames=32)
    u = epoch_randoms(n, seed, epoch)[rows]                   # (B, NUM_RANDOMS) uniforms of training
    positions = rule.skeleton_positions(num_frames, u)         # (B, 32) float64 kept-frame positions
    frames = rule.rgb_positions(stored, u)                     # (B, 32) int64 stored RGB frames
    boxes, flip = rule.boxes(u, B, device=d), rule.flips(u, B, d)   # (B, 4) float64, (B,) bool

One definition, called by both data paths: `ntu-train`'s batches (`split.SplitData`, a whole batch on
the device at once) and the public dataset (`dataset.NTUDataset`, one sample at a time, B = 1, in a
DataLoader worker). Every function is elementwise over the samples, so a sample gets the same numbers
bit for bit whichever way it is asked for (tests/test_dataset.py compares the two paths).

Randomness: every draw is a column of `epoch_randoms(n, seed, epoch)`, one row of uniforms per sample of
the split: a pure function of (seed, epoch, sample), whatever the batch, the process count, the worker
or the step a run resumed at. At test there are no uniforms (None): the centred window, the centre
crop, no flip; clip k of a multi-clip test is fixed by (TEST_SEED, k) (`transforms.clip_uniforms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.data.transforms import (
    clip_uniforms,
    crop_boxes,
    segment_positions,
    view_boxes,
    window_positions,
    window_ratio,
)
from ntu_pipeline.errors import ConfigError

# Columns of `epoch_randoms`: uniforms in [0, 1) per sample and epoch.
WINDOW_RATIO, WINDOW_START, CROP_SCALE, CROP_RATIO, CROP_X, CROP_Y, FLIP = range(7)
NUM_RANDOMS = 7


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch `epoch`: a permutation of range(n), a pure function of its arguments."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def epoch_randoms(n: int, seed: int, epoch: int) -> Tensor:
    """Uniforms (n, NUM_RANDOMS) float64 in [0, 1), one row per sample of the split for epoch `epoch`."""
    return torch.from_numpy(np.random.default_rng([seed, epoch, 1]).random((n, NUM_RANDOMS)))


@dataclass(frozen=True)
class ClipRule:
    """How one split's clips are cut. frames: T per clip; crop: the RGB side after cropping; flip: the
    probability of the horizontal flip at training. Where the clips take RGB: rgb_size S of the stored
    S x S frames, rgb_frames stored per sample (32, or 300 for `--frames all`), rgb_all (a `--frames
    all` store, whose frames are a timeline to draw windows from)."""

    frames: int
    crop: int = 224
    flip: float = 0.5
    rgb_size: int | None = None
    rgb_frames: int | None = None
    rgb_all: bool = False

    def __post_init__(self):
        if self.frames < 1 or self.crop < 1:
            raise ConfigError(f"frames and crop must be >= 1, got {self.frames} and {self.crop}")
        if not 0.0 <= self.flip <= 1.0:
            raise ConfigError(f"flip must be a probability in [0, 1], got {self.flip}")

    @property
    def spatial_views(self) -> bool:
        """Whether a multi-clip test takes views, not times: the model takes the stored frames whole (a
        32-frame store, 32-frame clips: every temporal clip would be the same)."""
        return not self.rgb_all and (self.rgb_frames or 0) <= self.frames

    def skeleton_positions(self, num_frames: Tensor, randoms: Tensor | None = None,
                           offsets: Tensor | None = None) -> Tensor:
        """Fractional positions (B, T) float64 in the kept skeleton frames of samples with num_frames (B,):
        training (`randoms` (B, NUM_RANDOMS)): a window of 50-100% of the frames at a random place, HCN's
        augmentation; test: the centred 95% window (CTR-GCN, PYSKL); clip k of a multi-clip test
        (`offsets` (T,), `clip_offsets`): one frame from each of T equal segments. The frames are then
        interpolated there (`transforms.resample_packed`)."""
        if offsets is not None:
            return segment_positions(num_frames, self.frames, offsets).double()
        ratio = window_ratio(None if randoms is None else randoms[:, WINDOW_RATIO], len(num_frames),
                             num_frames.device)
        return window_positions(num_frames, self.frames, ratio,
                                None if randoms is None else randoms[:, WINDOW_START])

    def clip_offsets(self, clip: int, clips: int) -> Tensor | None:
        """(T,) float64 segment offsets of skeleton clip `clip` of a `clips`-clip test (None for one clip)."""
        return clip_uniforms(clips, self.frames)[clip] if clips > 1 else None

    def rgb_positions(self, stored: Tensor, randoms: Tensor | None = None, clip: int = 0,
                      clips: int = 1) -> Tensor:
        """(B, T) int64: the stored RGB frames of the clips of samples holding stored (B,) frames (those
        with a source frame). A 32-frame store: every stored frame, evenly subsampled when T is smaller;
        a `--frames all` store: the skeleton's window rule over its frames (a new window per training
        epoch, from `randoms`); a multi-clip test over stored frames it does not take whole: the segment
        rule (clip `clip` of `clips`)."""
        n = len(stored)
        if clips > 1 and not self.spatial_views:
            return segment_positions(stored, self.frames, clip_uniforms(clips, self.frames)[clip])
        if not self.rgb_all:
            ratio, start = torch.ones(n, dtype=torch.float64, device=stored.device), None
        elif randoms is None:
            ratio, start = window_ratio(None, n, stored.device), None
        else:
            ratio, start = window_ratio(randoms[:, WINDOW_RATIO], n, stored.device), randoms[:, WINDOW_START]
        return window_positions(stored, self.frames, ratio, start).round().long()

    def boxes(self, randoms: Tensor | None, batch: int, clip: int = 0, clips: int = 1,
              device: torch.device | str = "cpu") -> Tensor:
        """Crop boxes (B, 4) float64 (x0, y0, w, h in stored pixels): a random resized crop at training
        (`randoms`), else the centre crop, or view `clip` of `clips` along the diagonal where the
        multi-clip test takes views (`spatial_views`)."""
        if self.rgb_size is None:
            raise ConfigError("crop boxes need the stored RGB side (rgb_size)")
        if randoms is not None:
            return crop_boxes(randoms[:, CROP_SCALE:CROP_Y + 1], batch, self.rgb_size, self.crop, device)
        if clips > 1 and self.spatial_views:
            return view_boxes(batch, self.rgb_size, self.crop, clip, clips, device)
        return crop_boxes(None, batch, self.rgb_size, self.crop, device)

    def flips(self, randoms: Tensor | None, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """(B,) bool: which samples are mirrored (training, with probability `flip`; never at test)."""
        if randoms is None:
            return torch.zeros(batch, dtype=torch.bool, device=device)
        return randoms[:, FLIP] < self.flip
