"""The rules that cut a clip out of a sample: which frames, which crop, which flip, from which uniforms.

    rule = ClipRule(frames=32, crop=224, flip=0.5, rgb_size=256, rgb_frames=32)
    u = clip_randoms(n, seed, epoch, rule)[rows]               # (B, NUM_RANDOMS + extra) uniforms of training
    positions = rule.skeleton_positions(num_frames, u)         # (B, 32) float64 kept-frame positions
    frames = rule.rgb_positions(stored, u)                     # (B, 32) int64 stored RGB frames
    boxes, flip = rule.boxes(u, B, device=d), rule.flips(u, B, d)   # (B, 4) float64, (B,) bool
    skeleton = rule.augment_skeleton(skeleton, flip, u)        # mirror, rotation, stream: (B, 3, T, V, M)
    maps = rule.heatmaps(xy, tracking, flip, u, boxes, ...)    # (B, V, T, H, H), `clip_heatmaps.py`

One definition, called by both data paths: `ntu-train`'s batches (`split.SplitData`, a whole batch on
the device at once) and the public dataset (`dataset.NTUDataset`, one sample at a time, B = 1, in a
DataLoader worker). Every function is elementwise over the samples, so a sample gets the same numbers
bit for bit whichever way it is asked for (tests/test_dataset.py, tests/test_reference_data.py).

Samplings (`sampling`): "window" (HCN's random 50-100% window resampled to T frames, the centred 95% at
test, the segment rule for clip k of a multi-clip test); "uniform" (PYSKL's UniformSampleFrames,
`pyskl_sampling.uniform_sample_frames`: one frame at random from each of T equal segments at training,
its seeded draws for clip k of a `clips`-clip test); "crop_resize" (CTR-GCN's valid_crop_resize,
`ctrgcn_sampling.crop_resize_taps`: a random 50-100% crop, at least 64 frames, stretched to T frames
by linear interpolation; the centred 95% at test, one clip). RGB crops (`rgb_crop`): "views" (a random
resized crop of 50-100% of the area, the centre crop or diagonal views at test) or "resized" (PYSKL's
RandomResizedCrop, 56-100% of the area, its integer box; the centre crop at test).

Randomness: every draw is a column of `clip_randoms(n, seed, epoch, rule)`, one row of uniforms per
sample of the split: a pure function of (seed, epoch, sample), whatever the batch, the process count,
the worker or the step a run resumed at. Its first NUM_RANDOMS columns are `epoch_randoms` (what every
rule draws: window, crop, flip); a rule of the reference samplings draws more (`ClipRule.draws`: frames,
crops, rotation) from a stream of their own, so the columns of the existing rules never move. At test
there are no uniforms (None): the centred window, the centre crop, no flip; clip k of a multi-clip test
is fixed by (TEST_SEED, k) (`transforms.clip_uniforms`; PYSKL's seeded sampler for "uniform").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.data import ctrgcn_sampling as ctr
from model.data import pyskl_sampling as ps
from model.data.clip_heatmaps import crop_box_heatmaps, pose_box_heatmaps
from model.data.transforms import (
    clip_uniforms,
    crop_boxes,
    mirror_skeleton,
    segment_positions,
    view_boxes,
    window_positions,
    window_ratio,
)
from ntu_pipeline.errors import ConfigError

# Columns of `epoch_randoms`: uniforms in [0, 1) per sample and epoch.
WINDOW_RATIO, WINDOW_START, CROP_SCALE, CROP_RATIO, CROP_X, CROP_Y, FLIP = range(7)
NUM_RANDOMS = 7
EXTRA_STREAM = 2  # the reference samplings' own draws (`clip_randoms`); epoch_order takes 0, epoch_randoms 1
SAMPLINGS = ("window", "uniform", "crop_resize")
RGB_CROPS = ("views", "resized")
HEATMAP_BOXES = ("pose", "rgb")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch `epoch`: a permutation of range(n), a pure function of its arguments."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def epoch_randoms(n: int, seed: int, epoch: int) -> Tensor:
    """Uniforms (n, NUM_RANDOMS) float64 in [0, 1), one row per sample of the split for epoch `epoch`."""
    return torch.from_numpy(np.random.default_rng([seed, epoch, 1]).random((n, NUM_RANDOMS)))


def clip_randoms(n: int, seed: int, epoch: int, rule: ClipRule) -> Tensor:
    """Uniforms (n, NUM_RANDOMS + rule.extra_draws) float64 in [0, 1) of epoch `epoch`: `epoch_randoms`,
    then the rule's own draws (`ClipRule.draws`), one row per sample; `epoch_randoms` itself where the
    rule draws nothing more (every "window" rule with the "views" crop)."""
    base = epoch_randoms(n, seed, epoch)
    if rule.extra_draws == 0:
        return base
    extra = np.random.default_rng([seed, epoch, EXTRA_STREAM]).random((n, rule.extra_draws))
    return torch.cat([base, torch.from_numpy(extra)], dim=1)


@dataclass(frozen=True)
class ClipRule:
    """How one split's clips are cut. frames: T per clip; crop: the RGB side after cropping; flip: the
    probability of the horizontal flip at training. Where the clips take RGB: rgb_size S of the stored
    S x S frames, rgb_frames stored per sample (32, or 300 for `--frames all`), rgb_all (a `--frames
    all` store, whose frames are a timeline to draw windows from). sampling (SAMPLINGS) and rgb_crop
    (RGB_CROPS): see the module docstring. pose_frames: T of the heatmaps where the clip has RGB too
    (drawn over the stored RGB frames, apart from the RGB's: RGBPose's Pose=32 beside RGB=8).
    heatmap_box (HEATMAP_BOXES, None: no heatmaps), heatmap_size, heatmap_test_size, sigma: the
    heatmaps' (`heatmaps`). rotation: CTR-GCN's random rotation at training (radians, 0: none); stream:
    CTR-GCN's input stream (`ctrgcn_sampling.STREAMS`)."""

    frames: int
    crop: int = 224
    flip: float = 0.5
    rgb_size: int | None = None
    rgb_frames: int | None = None
    rgb_all: bool = False
    sampling: str = "window"
    rgb_crop: str = "views"
    pose_frames: int | None = None
    heatmap_box: str | None = None
    heatmap_size: int = 56
    heatmap_test_size: int = 56
    sigma: float = 0.6
    rotation: float = 0.0
    stream: str = "joint"

    def __post_init__(self):
        if self.frames < 1 or self.crop < 1:
            raise ConfigError(f"frames and crop must be >= 1, got {self.frames} and {self.crop}")
        if not 0.0 <= self.flip <= 1.0:
            raise ConfigError(f"flip must be a probability in [0, 1], got {self.flip}")
        if self.sampling not in SAMPLINGS or self.rgb_crop not in RGB_CROPS:
            raise ConfigError(f"sampling must be one of {SAMPLINGS} and rgb_crop one of {RGB_CROPS}, got "
                              f"{self.sampling!r} and {self.rgb_crop!r}")

    @property
    def draws(self) -> dict[str, slice]:
        """The columns of `clip_randoms` this rule draws beyond NUM_RANDOMS, by use: "frames" (the
        uniform sampler's share, offset and frames; the crop_resize crop's share and start), "pose_frames"
        (the heatmaps' frames beside RGB), "crop" (the RGB's RandomResizedCrop), "pose_crop" (the pose
        box's RandomResizedCrop), "rotation" (angles about x, y, z)."""
        sizes = {}
        if self.sampling == "uniform":
            sizes["frames"] = ps.sample_draws(self.frames)
        elif self.sampling == "crop_resize":
            sizes["frames"] = ctr.CROP_DRAWS
        if self.pose_frames is not None:
            sizes["pose_frames"] = ps.sample_draws(self.pose_frames)
        if self.rgb_crop == "resized" and self.rgb_size is not None:
            sizes["crop"] = ps.CROP_DRAWS
        if self.heatmap_box == "pose":
            sizes["pose_crop"] = ps.CROP_DRAWS
        if self.rotation > 0:
            sizes["rotation"] = ctr.ROTATION_DRAWS
        columns, at = {}, NUM_RANDOMS
        for name, size in sizes.items():
            columns[name], at = slice(at, at + size), at + size
        return columns

    @property
    def extra_draws(self) -> int:
        """How many columns `clip_randoms` adds to `epoch_randoms` for this rule."""
        return sum(s.stop - s.start for s in self.draws.values())

    @property
    def spatial_views(self) -> bool:
        """Whether a multi-clip test takes views, not times: the model takes the stored frames whole (a
        32-frame store, 32-frame clips: every temporal clip would be the same). Never for "uniform":
        PYSKL's test clips are times, each with the centre crop."""
        return self.sampling == "window" and not self.rgb_all and (self.rgb_frames or 0) <= self.frames

    def _uniform(self, count: Tensor, frames: int, randoms: Tensor | None, column: str, clip: int,
                 clips: int) -> Tensor:
        """(B, frames) int64: PYSKL's UniformSampleFrames over count (B,) frames; training: the draws in
        `randoms` columns `column`; test: clip `clip` of its seeded `clips`-clip test (computed on the
        host: `count` is read back, so give host tensors)."""
        if randoms is None:
            every = ps.uniform_sample_frames(count, frames, clips, train=False)  # (B, clips * frames)
            return every[:, clip * frames:(clip + 1) * frames]
        uniforms = randoms[:, None, self.draws[column]]  # (B, 1, frames + 3)
        return ps.uniform_sample_frames(count, frames, train=True, uniforms=uniforms)

    def crop_resize_taps(self, num_frames: Tensor, randoms: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """CTR-GCN's valid_crop_resize of samples with num_frames (B,) kept frames to T frames: (first,
        second, weight) (B, T) each (`ctrgcn_sampling.crop_resize_taps`): a random crop of 50-100% at
        training (`randoms`), the centred 95% at test."""
        if randoms is None:
            return ctr.crop_resize_taps(num_frames, ctr.TEST_P_INTERVAL, self.frames)
        return ctr.crop_resize_taps(num_frames, ctr.TRAIN_P_INTERVAL, self.frames,
                                    uniforms=randoms[:, self.draws["frames"]])

    def skeleton_positions(self, num_frames: Tensor, randoms: Tensor | None = None,
                           offsets: Tensor | None = None, clip: int = 0, clips: int = 1) -> Tensor:
        """Fractional positions (B, T) float64 in the kept skeleton frames of samples with num_frames (B,).
        "window": training (`randoms` (B, NUM_RANDOMS)): a window of 50-100% of the frames at a random
        place, HCN's augmentation; test: the centred 95% window (CTR-GCN, PYSKL); clip k of a multi-clip
        test (`offsets` (T,), `clip_offsets`): one frame from each of T equal segments. The frames are then
        interpolated there (`transforms.resample_packed`). "uniform": PYSKL's frames (whole numbers; the
        test's clip `clip` of `clips` on the host). "crop_resize": where CTR-GCN's taps fall (what
        `Batch.frames` rounds; the clip mixes the taps themselves, `crop_resize_taps`)."""
        if self.sampling == "uniform":
            return self._uniform(num_frames, self.frames, randoms, "frames", clip, clips).double()
        if self.sampling == "crop_resize":
            first, second, weight = self.crop_resize_taps(num_frames, randoms)
            return first.double() + weight.double() * (second - first).double()
        if offsets is not None:
            return segment_positions(num_frames, self.frames, offsets).double()
        ratio = window_ratio(None if randoms is None else randoms[:, WINDOW_RATIO], len(num_frames),
                             num_frames.device)
        return window_positions(num_frames, self.frames, ratio,
                                None if randoms is None else randoms[:, WINDOW_START])

    def clip_offsets(self, clip: int, clips: int) -> Tensor | None:
        """(T,) float64 segment offsets of skeleton clip `clip` of a `clips`-clip test (None for one clip,
        and for the reference samplings, whose clips are their own)."""
        return clip_uniforms(clips, self.frames)[clip] if clips > 1 and self.sampling == "window" else None

    def rgb_positions(self, stored: Tensor, randoms: Tensor | None = None, clip: int = 0,
                      clips: int = 1) -> Tensor:
        """(B, T) int64: the stored RGB frames of the clips of samples holding stored (B,) frames (those
        with a source frame). A 32-frame store: every stored frame, evenly subsampled when T is smaller;
        a `--frames all` store: the skeleton's window rule over its frames (a new window per training
        epoch, from `randoms`); a multi-clip test over stored frames it does not take whole: the segment
        rule (clip `clip` of `clips`). "uniform": PYSKL's sampler over the stored frames (on the host)."""
        if self.sampling == "uniform":
            return self._uniform(stored, self.frames, randoms, "frames", clip, clips)
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
        if randoms is not None and self.rgb_crop == "resized":  # PYSKL's integer box, as (x0, y0, w, h)
            uniforms = randoms[:, self.draws["crop"]]
            box = ps.random_resized_crop_box(self.rgb_size, self.rgb_size, uniforms=uniforms)
            return torch.cat([box[:, :2], box[:, 2:] - box[:, :2]], dim=1).double()
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

    def pose_positions(self, stored: Tensor, randoms: Tensor | None = None, clip: int = 0,
                       clips: int = 1) -> Tensor:
        """(B, pose_frames) int64: the stored RGB frames at whose instants a clip with RGB takes its
        heatmaps: PYSKL's sampler over the stored frames (B,) again, with draws of its own (RGBPose's
        MMUniformSampleFrames samples each modality apart), on the host."""
        return self._uniform(stored, self.pose_frames, randoms, "pose_frames", clip, clips)

    def augment_skeleton(self, skeleton: Tensor, flip: Tensor, randoms: Tensor | None = None,
                         mirror: Tensor | None = None, parents: Tensor | None = None) -> Tensor:
        """Skeletons (B, 3, T, V, M) -> the network's skeleton input: mirrored where `flip`, turned by
        CTR-GCN's random rotation (training, rotation > 0), then its stream. mirror:
        `transforms.mirror_index`, parents: `ctrgcn_sampling.bone_parents`, made ahead (None: here)."""
        skeleton = mirror_skeleton(skeleton, flip, index=mirror)
        if self.rotation > 0 and randoms is not None:
            angles = randoms[:, self.draws["rotation"]]
            skeleton = ctr.random_rotation(skeleton, self.rotation, uniforms=angles)
        return ctr.stream(skeleton, self.stream, parents)

    def heatmaps(self, xy: Tensor, tracking: Tensor, flip: Tensor, randoms: Tensor | None = None,
                 boxes: Tensor | None = None, video_box: Tensor | None = None,
                 video_size: Tensor | None = None, mirror: Tensor | None = None) -> Tensor:
        """Joint heatmaps (B, V, T, H, H) of a clip's 2D joints: xy (B, T, M, V, 2) colour-camera pixels
        (`skeleton/color_xy`, 0 where absent), tracking (B, T, M, V) (`skeleton/tracking`), flips (B,).
        heatmap_box "pose": PoseC3D's (`clip_heatmaps.pose_box_heatmaps`: the box around the clip's
        joints, its random resized crop at training from `randoms`, the whole box at heatmap_test_size
        at test). "rgb": the joints in the RGB crop (`boxes` (B, 4), `rule.boxes`; the sample's
        `rgb/crop_box` (B, 4) and `rgb/video_size` (B, 2)), at heatmap_size over the crop's side."""
        if self.heatmap_box == "pose":
            crop = None if randoms is None else randoms[:, self.draws["pose_crop"]]
            return pose_box_heatmaps(xy, tracking, flip, size=self.heatmap_size,
                                     test_size=self.heatmap_test_size, sigma=self.sigma, uniforms=crop,
                                     index=mirror)
        return crop_box_heatmaps(xy, tracking, video_box, video_size, self.rgb_size, boxes, flip,
                                 crop=self.crop, size=self.heatmap_size, sigma=self.sigma, index=mirror)
