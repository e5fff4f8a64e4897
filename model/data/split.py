"""The training data path: one split of a prepared store -> model-ready batches on the device.

    spec = ClipSpec(frames=32, skeleton=True, rgb=True, crop=224)
    data = SplitData(read_split("ntu60.zarr", "xsub", "train", need_rgb=True), spec, device, seed=0)
    for batch in data.batches(epoch=3, batch_size=32, train=True):
        out = net(batch.rgb, batch.skeleton, batch.motion)   # (B, 3, T, 224, 224), (B, 3, T, 25, 2) x 2
    for batch in data.batches(0, 32, train=False, clip=k, clips=10):   # clip k of the 10-clip test
        ...
    spec = ClipSpec(skeleton=False, heatmaps=True, **reference_clip("posec3d"))   # clip_recipes.py
    data = SplitData(read_split("ntu60.zarr", "xsub", "train", *spec.needs), spec, device)  # no RGB stage
    batch.heatmaps                                          # (B, 25, 48, 56, 56), drawn on the device

Skeletons are resident on the device, packed by the frames each sample holds (`skeletons.py`). A
batch is pure tensor work there: a temporal window (training: a random 50-100% window, HCN's
augmentation; test: the centred 95% window, CTR-GCN/PYSKL's test crop), resampled to `frames` by
linear interpolation between the two nearest frames (an actor absent from one of them takes the
other), the optional horizontal flip, and motion (`model.skeleton_motion`, eq. 2, masked).

RGB: the main process decides each clip's stored frames from the per-sample tables it reads once
(`rgb_clips.rgb_frame_table`): every stored frame of a 32-frame store (evenly subsampled when the model
takes fewer), a window of a `--frames all` store (a new one per training epoch, the skeleton rule).
DataLoader workers only decode (`rgb_clips.RGBClips`), into pinned memory on CUDA; the augmentation
runs on the device: a random resized crop (area 50-100%, aspect 3/4-4/3) to `crop` at training, the
centre crop at test, the flip (applied to the skeleton too: x mirrored, left and right joints
swapped), and scaling to [-1, 1] (what the pytorch-i3d checkpoints expect). Fused models take the
skeleton at the clip's source frames (`rgb/frame_index` matched to `skeleton/frame_index`).

Multi-clip test (`clips` > 1, what PYSKL and MMAction2 report): clip k of a skeleton is one frame drawn
from each of `frames` equal segments of the sequence, at offsets fixed by (TEST_SEED, k)
(`segment_positions`, PYSKL's UniformSampleFrames); clip k of RGB is the same rule over the stored
frames, or, for a store whose frames the model takes whole (a 32-frame store, 32-frame clips: every clip
would be the same), view k of `clips` crops spread along the frame's diagonal (`view_boxes`). One clip
is the centred window and the centre crop, as at every epoch's evaluation.

Nothing in a step waits for the device: each epoch's order, uniforms, RGB frames and their skeleton
frames are copied to the device once, before its first step; a batch then indexes them there.

The reference models' clips (`ClipSpec` sampling, heatmaps, rgb_crop, rgb_norm, rotation, stream;
`clip_recipes.reference_clip` gives each model's): PYSKL's UniformSampleFrames over the kept skeleton
frames or the stored RGB frames, its RandomResizedCrop and ImageNet normalisation; PoseC3D's heatmaps
drawn in the batch on the device from 2D joints kept resident beside the skeletons (`skeleton/color_xy`
and `skeleton/tracking`, packed: `skeletons.load_packed_poses`), on the box around the clip's joints or
on the RGB crop (RGBPoseConv3D: its 32 pose frames drawn over the same stored frames as its 8 RGB ones,
at their instants through `rgb/frame_index` and `skeleton/frame_index`); CTR-GCN's valid_crop_resize,
random rotation and input stream. `sampling.py` and `clip_heatmaps.py` say how.

Determinism: every random choice is a pure function of (seed, epoch, sample): `epoch_order` is the
epoch's permutation, `clip_randoms` one row of uniforms per sample (`epoch_randoms`, and the reference
samplings' own draws). A batch is the same whatever the process count or the step a run resumed at. The
rules that turn those uniforms into frames, crops, flips and heatmaps are `sampling.ClipRule`'s, which
the public dataset (`dataset.NTUDataset`) calls too, one sample at a time: a sample's clip is the same
tensor through either (tests/test_dataset.py, tests/test_reference_data.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.data.clip_heatmaps import gather_poses
from model.data.clip_spec import ClipSpec
from model.data.ctrgcn_sampling import bone_parents
from model.data.motion import skeleton_motion
from model.data.rgb_clips import ClipRequest, RGBClips, collate_batch, rgb_frame_table
from model.data.sampling import (  # noqa: F401  (the columns and draws, public here as before)
    CROP_RATIO,
    CROP_SCALE,
    CROP_X,
    CROP_Y,
    FLIP,
    NUM_RANDOMS,
    WINDOW_RATIO,
    WINDOW_START,
    ClipRule,
    clip_randoms,
    epoch_order,
    epoch_randoms,
)
from model.data.skeletons import PackedSkeletons, load_packed, load_packed_poses
from model.data.transforms import (
    crop_clips,
    gather_packed,
    interpolate_packed,
    mirror_index,
    resample_packed,
    to_model_layout,
)
from ntu_pipeline.errors import ConfigError, StoreFormatError
from ntu_pipeline.store import open_store, split_indices
from ntu_pipeline.store.schema import require_stages
from ntu_pipeline.store.splits import check_protocol, describe_left_out, usable_samples


@dataclass(frozen=True, eq=False)
class SplitInfo:
    """One part of a split: n samples, `indices` (n,) into the store, `labels` (n,) int64,
    `num_frames` (n,) skeleton frames kept; RGB layout where the store has RGB (`rgb_frames` stored
    per clip: 32, or 300 for `--frames all`; `rgb_size` S of the S x S frames)."""

    store: Path
    protocol: str
    part: str
    indices: np.ndarray
    labels: np.ndarray
    num_frames: np.ndarray
    class_names: tuple[str, ...]
    dataset: str
    rgb_frames: int | None = None
    rgb_size: int | None = None
    rgb_all: bool = False
    left_out: dict[str, int] = dataclasses.field(default_factory=dict)  # "<stage> <status>" -> samples
    rgb_options: dict = dataclasses.field(default_factory=dict)  # the RGB stage's: frames, size, codec
    has_skeleton: bool = True  # read with need_skeleton: every sample's skeleton usable

    def __len__(self) -> int:
        return len(self.indices)


def read_split(store: str | Path, protocol: str, part: str, need_rgb: bool = False,
               need_skeleton: bool = True) -> SplitInfo:
    """The `part` ("train" or "test") of `protocol` in `store`: its samples a model can use.

    A split is protocol membership; the samples kept are those whose modalities the model needs are
    usable (`ntu_pipeline.store.splits.usable_samples`: ok, or a missing-list skeleton with frames that
    the split kept), the others counted by reason in `left_out`. Raises, naming the store and the fix,
    for: an unknown format, a protocol of the other dataset, a store without the split, without the
    skeleton or RGB stage a model needs or with that stage unfinished, or no usable sample in the part.
    """
    store = Path(store)
    group = open_store(store)
    check_protocol(group, protocol)
    stages = (("skeleton",) if need_skeleton else ()) + (("rgb",) if need_rgb else ())
    require_stages(group, stages)
    if protocol not in group["splits"]:
        raise StoreFormatError(f"{store} has no split {protocol!r}; make it with: "
                               f"ntu-prep split --protocol {protocol} {store}")
    train, test = split_indices(group, protocol)
    keep_missing = bool(group["splits"][protocol].attrs.get("keep_missing", False))
    members = {"train": train, "test": test}[part]
    if len(members) == 0:
        raise StoreFormatError(f"{store}: split {protocol}/{part} is empty")
    indices, left_out = usable_samples(group, members, stages, keep_missing)
    if len(indices) == 0:
        why = f" (left out: {describe_left_out(left_out)})" if left_out else ""
        raise StoreFormatError(f"{store}: split {protocol}/{part} has no sample with a usable "
                               f"{' and '.join(stages)}{why}")
    return samples_info(group, store, indices, protocol, part, need_rgb, left_out, need_skeleton)


def samples_info(group, store: Path, indices: np.ndarray, protocol: str, part: str, need_rgb: bool,
                 left_out: dict[str, int], need_skeleton: bool = True) -> SplitInfo:
    """The SplitInfo of samples `indices` of `store` (opened as `group`), their usability checked by the
    caller (`read_split`; `model.predict.recordings` for the recordings it prepares)."""
    recorded = dict(group.attrs.get("stages", {}))
    rgb: dict = {}
    if need_rgb:
        frames = group["rgb/frames"]
        rgb = {"rgb_frames": int(frames.shape[1]), "rgb_size": int(frames.shape[2]),
               "rgb_all": recorded["rgb"]["options"].get("frames") == "all",
               "rgb_options": dict(recorded["rgb"]["options"])}
    num_frames = group["samples/num_frames"][:][indices] if "skeleton" in recorded else np.zeros(len(indices))
    return SplitInfo(
        store=store, protocol=protocol, part=part, indices=indices,
        labels=group["samples/label"][:][indices].astype(np.int64), num_frames=num_frames.astype(np.int64),
        class_names=tuple(group.attrs["class_names"]), dataset=str(group.attrs["dataset"]),
        left_out=left_out, has_skeleton=need_skeleton, **rgb)


def clip_rule(spec: ClipSpec, info: SplitInfo) -> ClipRule:
    """The rule that cuts `spec`'s clips out of the samples of `info` (`sampling.ClipRule`)."""
    pose_frames = (spec.heatmap_frames or spec.frames) if spec.heatmaps and spec.rgb else None
    return ClipRule(spec.frames, spec.crop, spec.flip, info.rgb_size if spec.rgb else None,
                    info.rgb_frames if spec.rgb else None, info.rgb_all and spec.rgb, spec.sampling,
                    spec.rgb_crop, pose_frames, spec.heatmap_box if spec.heatmaps else None,
                    spec.heatmap_size, spec.heatmap_test_size or spec.heatmap_size, spec.sigma, spec.rotation,
                    spec.stream)


# --- order --------------------------------------------------------------------------------

def train_plan(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
               world: int = 1) -> list[np.ndarray]:
    """This process's split positions for each step of a training epoch: the epoch's order in global
    batches of `batch_size` (the last partial batch dropped), each cut into `world` equal parts."""
    order = epoch_order(n, seed, epoch)
    per_rank = batch_size // world
    return [order[s * batch_size + rank * per_rank: s * batch_size + (rank + 1) * per_rank]
            for s in range(n // batch_size)]


def test_plan(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[np.ndarray]:
    """This process's split positions for evaluation: its contiguous share, in batches."""
    mine = np.array_split(np.arange(n), world)[rank]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


# --- RGB plans -----------------------------------------------------------------------------------

class _PlanSampler(torch.utils.data.Sampler):
    """Yields the batches of ClipRequests set by `SplitData`; lives in the main process, so persistent
    workers see each epoch's plan."""

    def __init__(self):
        self.plan: list[list[ClipRequest]] = []

    def __iter__(self):
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def _to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A host array on the device without waiting: from pinned memory, non-blocking, on CUDA (the pinned
    copy lives until the copy is done: the caching host allocator keeps it for its stream)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


# --- batches ------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Batch:
    """rgb (B, 3, T, crop, crop) in [-1, 1] (ImageNet-normalised with rgb_norm "imagenet") or None;
    skeleton and motion (B, 3, T, 25, 2) or None (skeleton: the spec's stream; motion: eq. 2 of it);
    labels (B,) int64; positions (B,) int64 into the split; frames (B, T) int64, the stored frames the
    clips took: `rgb/frames` positions for models with RGB, kept skeleton frames (`skeleton/joints`, the
    nearest to each interpolated position) for the others; heatmaps (B, 25, T_h, H, H) float32 or None
    (T_h = heatmap_frames beside RGB, else T; H = heatmap_size, heatmap_test_size at test with the pose
    box) (all on the device)."""

    rgb: Tensor | None
    skeleton: Tensor | None
    motion: Tensor | None
    labels: Tensor
    positions: Tensor
    frames: Tensor | None = None
    heatmaps: Tensor | None = None


@dataclass(frozen=True, eq=False)
class _Epoch:
    """One epoch's (or test clip's) choices, on the device: uniforms (n, NUM_RANDOMS + extra) or None at
    test, stored RGB frames of the clips (n, T) and their skeleton frames (n, T) or None, the test clip (k
    of `clips`) and its segment offsets (T,) (None for one clip); for "uniform" without RGB the kept
    frames (n, T) float64 (drawn on the host: PYSKL's test draws are), and beside RGB the kept frames of
    the heatmaps (n, T_h) (-1: none) or None."""

    randoms: Tensor | None
    rgb_frames: Tensor | None
    rgb_skeleton: Tensor | None
    clip: int
    clips: int
    offsets: Tensor | None
    positions: Tensor | None = None
    pose_kept: Tensor | None = None


class SplitData:
    """A split's samples as batches on `device`: skeletons (and 2D joints for heatmaps) resident, RGB
    through DataLoader workers."""

    def __init__(self, info: SplitInfo, spec: ClipSpec, device: torch.device | str, seed: int = 0,
                 workers: int = 0, rank: int = 0, world: int = 1, skeletons: PackedSkeletons | None = None):
        """skeletons: already resident (a benchmark's synthetic ones); None: loaded from the store."""
        self.info, self.spec, self.seed = info, spec, seed
        self.device, self.rank, self.world = torch.device(device), rank, world
        if spec.rgb and info.rgb_size is None:
            raise ConfigError(f"{info.store}: the clips need RGB frames: read the split with need_rgb=True")
        if spec.rgb and spec.crop > info.rgb_size:
            raise ConfigError(f"--crop {spec.crop} is larger than the stored RGB frames of {info.store} "
                              f"({info.rgb_size} x {info.rgb_size})")
        if spec.heatmaps and not info.has_skeleton:
            raise ConfigError(f"{info.store}: heatmaps are drawn from the skeletons' 2D joints: read the "
                              f"split with need_skeleton=True")
        classes = len(info.class_names)
        if info.labels.min() < 0 or info.labels.max() >= classes:  # once here, never in a step
            raise StoreFormatError(f"{info.store}: labels outside [0, {classes}) in {info.protocol}/"
                                   f"{info.part}: samples/label is damaged (`ntu-prep verify`)")
        self.rule = clip_rule(spec, info)
        self.labels = torch.from_numpy(info.labels).to(self.device)
        self.num_frames = torch.from_numpy(info.num_frames).to(self.device)
        self.skeletons = skeletons
        self.mirror = mirror_index(self.device)  # made here: a copy inside a step would wait
        self.parents = bone_parents(self.device) if "bone" in spec.stream else None
        if spec.skeleton and skeletons is None:
            dtype = torch.float16 if spec.half else torch.float32
            self.skeletons = load_packed(info.store, info.indices, info.num_frames, spec.normalize, dtype,
                                         self.device)
        self.poses = self.video_box = self.video_size = None
        if spec.heatmaps:
            self.poses = load_packed_poses(info.store, info.indices, info.num_frames, self.device)
        if spec.heatmaps and spec.heatmap_box == "rgb":
            group = open_store(info.store)
            self.video_box, self.video_size = (torch.from_numpy(group[path][:][info.indices]).to(self.device)
                                               for path in ("rgb/crop_box", "rgb/video_size"))
        self.loader = self.rgb_table = None
        if spec.rgb:
            matched = spec.skeleton or spec.heatmaps  # the skeleton frames at the stored frames' instants
            self.rgb_table = rgb_frame_table(open_store(info.store), info.indices, matched)
            self._sampler = _PlanSampler()
            self.loader = torch.utils.data.DataLoader(
                RGBClips(info.store), batch_sampler=self._sampler, collate_fn=collate_batch,
                num_workers=workers, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None)

    def __len__(self) -> int:
        return len(self.info)

    @property
    def spatial_views(self) -> bool:
        """Whether the multi-clip test takes views, not times: the model takes the stored frames whole."""
        return self.rule.spatial_views

    def rgb_frames(self, randoms: Tensor | None, clip: int = 0, clips: int = 1) -> np.ndarray:
        """(n, T) int64: the stored frames of every sample's clip this epoch (train: `randoms`) or for
        test clip `clip` of `clips`."""
        return self.rule.rgb_positions(torch.from_numpy(self.rgb_table.stored), randoms, clip, clips).numpy()

    def clip_frames(self, epoch: int = 0, train: bool = False, clip: int = 0, clips: int = 1) -> np.ndarray:
        """(n, T) int64: the stored frames each sample's clip takes (`Batch.frames` of the same epoch or
        test clip): `rgb/frames` positions for models with RGB, the kept skeleton frames nearest to the
        interpolated positions (rounded) for skeleton models. What a picture of the clip draws."""
        randoms = clip_randoms(len(self.info), self.seed, epoch, self.rule) if train else None
        if self.spec.rgb:
            return self.rgb_frames(randoms, clip, clips)
        num_frames = torch.from_numpy(self.info.num_frames)
        positions = self.rule.skeleton_positions(num_frames, randoms, self.rule.clip_offsets(clip, clips),
                                                 clip, clips)
        return positions.round().long().numpy()

    def _epoch(self, epoch: int, train: bool, clip: int, clips: int) -> tuple[_Epoch, np.ndarray | None]:
        n, spec, rule = len(self.info), self.spec, self.rule
        randoms = clip_randoms(n, self.seed, epoch, rule) if train else None
        frames = self.rgb_frames(randoms, clip, clips) if self.loader is not None else None
        skeleton = pose = positions = None
        rows, table = np.arange(n)[:, None], self.rgb_table
        if frames is not None and spec.skeleton:
            skeleton = _to_device(table.to_skeleton[rows, frames].astype(np.int64), self.device)  # (n, T)
        if frames is not None and spec.heatmaps:  # the heatmaps' own stored frames, then their skeleton's
            stored = rule.pose_positions(torch.from_numpy(table.stored), randoms, clip, clips).numpy()
            pose = _to_device(table.to_skeleton[rows, stored].astype(np.int64), self.device)  # (n, T_h)
        if frames is None and spec.sampling == "uniform":
            num_frames = torch.from_numpy(self.info.num_frames)
            positions = _to_device(rule.skeleton_positions(num_frames, randoms, None, clip, clips).numpy(),
                                   self.device)  # (n, T)
        offsets = rule.clip_offsets(clip, clips)
        choices = _Epoch(None if randoms is None else _to_device(randoms.numpy(), self.device),
                         None if frames is None else _to_device(frames, self.device), skeleton, clip, clips,
                         None if offsets is None else _to_device(offsets.numpy(), self.device),
                         positions, pose)
        return choices, frames

    def batches(self, epoch: int, batch_size: int, train: bool, start_step: int = 0, clip: int = 0,
                clips: int = 1) -> Iterator[Batch]:
        """The epoch's batches from step `start_step` on. batch_size: global for training (this process
        gets batch_size / world of each), per process at test (every sample once, in order). clip of
        clips: which test clip (see the module docstring)."""
        n = len(self.info)
        plan = (train_plan(n, batch_size, self.seed, epoch, self.rank, self.world) if train
                else test_plan(n, batch_size, self.rank, self.world))[start_step:]
        if not plan:
            return
        choices, frames = self._epoch(epoch, train, clip, clips)
        order = _to_device(np.concatenate(plan), self.device)  # this process's positions, step after step
        bounds = np.cumsum([0, *(len(p) for p in plan)]).tolist()
        if self.loader is not None:
            indices = self.info.indices
            self._sampler.plan = [[ClipRequest(int(indices[p]), frames[p]) for p in positions]
                                  for positions in plan]
            loaded = iter(self.loader)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            clips_in = next(loaded).to(self.device, non_blocking=True) if self.loader is not None else None
            yield self._assemble(order[lo:hi], choices, clips_in)

    def _assemble(self, pos: Tensor, choices: _Epoch, clips: Tensor | None) -> Batch:
        """One batch on the device from split positions (B,) [and its decoded clips (B, T, S, S, 3)]."""
        spec, rule, b = self.spec, self.rule, len(pos)
        u = choices.randoms[pos] if choices.randoms is not None else None
        flip = rule.flips(u, b, self.device)
        skeleton = motion = rgb = heatmaps = boxes = None
        frames = choices.rgb_frames[pos] if choices.rgb_frames is not None else None
        positions = choices.positions[pos] if choices.positions is not None else None
        if spec.skeleton:
            packed = self.skeletons
            starts, lengths = packed.starts[pos], packed.lengths[pos]
            if choices.rgb_skeleton is not None:
                joints = gather_packed(packed.frames, starts, choices.rgb_skeleton[pos])
            elif spec.sampling == "crop_resize":
                taps = rule.crop_resize_taps(self.num_frames[pos], u)  # (B, T) x 3
                joints = interpolate_packed(packed.frames, starts, *taps)
                frames = rule.skeleton_positions(self.num_frames[pos], u).round().long()
            else:
                if positions is None:
                    positions = rule.skeleton_positions(self.num_frames[pos], u, choices.offsets)
                joints = resample_packed(packed.frames, starts, lengths, positions)
                frames = positions.round().long()
            skeleton = rule.augment_skeleton(to_model_layout(joints), flip, u, self.mirror, self.parents)
            motion = skeleton_motion(skeleton)
        if clips is not None:
            boxes = rule.boxes(u, b, choices.clip, choices.clips, self.device)
            rgb = crop_clips(clips, boxes, flip, spec.crop, spec.rgb_norm)
        if spec.heatmaps:
            kept = choices.pose_kept[pos] if choices.pose_kept is not None else positions.long()  # (B, T_h)
            if frames is None:
                frames = kept
            xy, tracking = gather_poses(self.poses.xy, self.poses.tracking, self.poses.starts[pos], kept)
            heatmaps = rule.heatmaps(xy, tracking, flip, u, boxes,
                                     None if self.video_box is None else self.video_box[pos],
                                     None if self.video_size is None else self.video_size[pos], self.mirror)
        return Batch(rgb, skeleton, motion, self.labels[pos], pos, frames, heatmaps)
