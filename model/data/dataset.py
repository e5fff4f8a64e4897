"""The public dataset: one side of a protocol split of a prepared store, as items of named tensors.

    from torch.utils.data import DataLoader
    from model import NTUDataset, rgb_to_model
    train = NTUDataset("ntu60.zarr", "xsub", "train", inputs=("skeleton", "rgb"), frames=16, crop=112)
    loader = DataLoader(train, batch_size=16, shuffle=True, num_workers=4, persistent_workers=True)
    for epoch in range(epochs):
        train.set_epoch(epoch)                   # as DistributedSampler.set_epoch; workers see it
        for batch in loader:                     # batch["skeleton"] (B, 3, 16, 25, 2), batch["label"] (B,)
            rgb = rgb_to_model(batch["rgb"].to(dev), batch["crop_box"].to(dev), batch["flip"].to(dev),
                               train.crop)       # (B, 3, 16, 112, 112) float32 in [-1, 1], on the device
    test = NTUDataset("ntu60.zarr", "xsub", "test", inputs=("skeleton",), clip=k, clips=10)  # clip k of 10

An item is `ntu-train`'s clip of that sample, bit for bit: the same sample, epoch and test clip give the
same tensors as `SplitData.batches` (tests/test_dataset.py, tests/test_reference_data.py), because both
call the same rules (`sampling.ClipRule`: windows, segments, crop boxes, flips, the reference samplings
and heatmaps, from `clip_randoms`) and transforms (`transforms.py`). The reference models' clips take
ClipSpec's settings by name: `NTUDataset(store, "xsub", "train", inputs=("heatmaps",),
**clip_recipes.reference_clip("posec3d"))`. Keys (T = frames, S the stored RGB side, H = heatmap_size):

    label          () int64                 name   str (the NTU sample name)
    frame_index    (T,) int64               the source frame of each clip frame (the video's for RGB
                                            inputs; for skeletons, the kept frame nearest each position)
    flip           () bool                  whether the item is mirrored (training only)
    skeleton       (3, T, 25, 2) float32    normalised, resampled to T frames, mirrored where `flip` (then
                                            rotated at training and taken as `stream`, CTR-GCN's)
    motion         (3, T, 25, 2) float32    `skeleton_motion` of it (paper eq. 2)
    bones          (3, T, 25, 2) float32    `skeleton_bones` of it (CTR-GCN's bone stream)
    joints_2d      (2, T, 25, 2) float32    x, y in pixels of the model's crop x crop (after the crop and
                                            the flip; 0 where the joint is absent)
    joints_2d_score (T, 25, 2) float32      Kinect tracking as a score (`heatmaps.tracking_scores`)
    heatmaps       (25, T, H, H) float32    `heatmaps.joint_heatmaps` of joints_2d; with heatmap_box, the
                                            reference heatmaps (25, T_h, H, H) (`clip_heatmaps.py`)
    limb_heatmaps  (24, T, H, H) float32    `heatmaps.limb_heatmaps` of them
    rgb            (3, T, S, S) uint8       the clip's stored frames as stored: crop, flip and scaling
                                            are `rgb_to_model`'s, on the device
    crop_box       (4,) float64             x0, y0, w, h of the crop in stored pixels (RGB and 2D inputs)

Where the fused models take them, the skeleton inputs and joints_2d are taken at the RGB clip's frames
(zero where no actor was seen at that instant); without RGB, at the skeleton's positions (joints_2d at the
nearest kept frames).

Costs: the dataset keeps the split's small tables (indices, labels, frame counts, names); an item reads its
sample's rows through zarr (1-10 ms a read, two for a skeleton item) and its RGB frames straight from the
shard files (`FrameReader`), in whichever process asks. `preload=True` reads the split's skeletons and
their frame numbers once instead, packed (`skeletons.load_packed`, as ntu-train keeps them: ~2 GB for
NTU60 xsub's training side), into memory that forked workers share.

Epochs: `set_epoch(e)` writes the epoch into a one-number tensor in shared memory, which every worker's
copy of the dataset reads for each item, so persistent workers see it too (fork or spawn). Call it between
epochs, as `DistributedSampler.set_epoch`: an item is a pure function of (seed, epoch, sample).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from model.data.clip_heatmaps import gather_poses
from model.data.heatmaps import bone_index, joint_heatmaps, limb_heatmaps, tracking_scores
from model.data.motion import skeleton_motion
from model.data.rgb_clips import match_frames, stored_frames
from model.data.sampling import clip_randoms
from model.data.skeletons import load_packed, load_packed_poses, load_packed_table
from model.data.split import ClipSpec, clip_rule, read_split
from model.data.transforms import (
    crop_points,
    gather_packed,
    interpolate_packed,
    mirror_skeleton,
    normalize_skeletons,
    resample_packed,
    skeleton_bones,
    to_heatmap_pixels,
    to_model_layout,
)
from ntu_pipeline.errors import ConfigError, StoreFormatError
from ntu_pipeline.store import open_store, read_strings
from ntu_pipeline.store.frame_reader import FrameReader
from ntu_pipeline.store.schema import has_stage
from ntu_pipeline.video.crop import project_to_crop

SKELETON_INPUTS = ("skeleton", "motion", "bones")
POSE_INPUTS = ("joints_2d", "heatmaps", "limb_heatmaps")  # 2D joints in the RGB crop
INPUTS = (*SKELETON_INPUTS, *POSE_INPUTS, "rgb")
SIDES = ("train", "test")


class NTUDataset(torch.utils.data.Dataset):
    """Items of one side of `protocol`'s split of the prepared `store` (see the module docstring).

    inputs: any of INPUTS. frames: T per clip. crop: the RGB crop's side (rgb, joints_2d). clip, clips:
    clip k of a `clips`-clip test (test side only; the rule of `ntu-train eval --clips`). flip: the
    probability of the horizontal flip at training. normalize: the skeleton's ("none", "spine",
    "spine_axes", "spine_first"). seed: of every draw. heatmap_size: H of the H x H heatmaps. preload:
    read the split's skeletons once, not per item. The training side draws a new window, crop and flip
    per epoch (`set_epoch`); the test side takes the centred window and the centre crop (or clip k),
    never flipped.

    The reference models' clips, keyword arguments named and meant as `ClipSpec`'s fields (so
    `**clip_recipes.reference_clip(name)` passes whole): sampling, heatmap_box (None: `heatmaps` are
    the 2D joints of the RGB crop, as above; "pose" or "rgb": the reference heatmaps, `ClipSpec`'s
    heatmaps), heatmap_test_size, heatmap_frames, sigma, rgb_crop, rgb_norm (what `rgb_to_model` takes
    as norm), rotation, stream (what `skeleton` becomes).

    Samples whose modalities the inputs need are unusable (failed, absent, missing) are left out and
    counted: `left_out` {"<stage> <status>": samples}, as `ntu-train fit` reports them. A store without
    the stage an input needs raises StoreFormatError, one line naming the input and the command.
    """

    def __init__(self, store: str | Path, protocol: str, side: str = "train",
                 inputs: tuple[str, ...] = ("skeleton",), frames: int = 32, crop: int = 224, clip: int = 0,
                 clips: int = 1, flip: float = 0.5, normalize: str = "spine_axes", seed: int = 0,
                 heatmap_size: int = 56, preload: bool = False, *, sampling: str = "window",
                 heatmap_box: str | None = None, heatmap_test_size: int | None = None,
                 heatmap_frames: int | None = None, sigma: float = 0.6, rgb_crop: str = "views",
                 rgb_norm: str = "i3d", rotation: float = 0.0, stream: str = "joint"):
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        unknown = [name for name in inputs if name not in INPUTS]
        if unknown or not inputs:
            raise ConfigError(f"inputs must be some of {', '.join(INPUTS)}, got {inputs!r}")
        if side not in SIDES:
            raise ConfigError(f"side must be 'train' or 'test', got {side!r}")
        if clips < 1 or not 0 <= clip < clips or (side == "train" and clips > 1):
            raise ConfigError(f"clip {clip} of {clips}: need 0 <= clip < clips, and clips = 1 on the "
                              f"training side")
        if heatmap_size < 1:
            raise ConfigError(f"heatmap_size must be >= 1, got {heatmap_size}")
        self.store, self.inputs, self.side = Path(store), inputs, side
        self.clip, self.clips, self.seed, self.heatmap_size = clip, clips, seed, heatmap_size
        maps = heatmap_box is not None  # the reference heatmaps (ClipSpec.heatmaps)
        if maps and ("heatmaps" not in inputs or {"joints_2d", "limb_heatmaps"} & set(inputs)):
            raise ConfigError(f"heatmap_box {heatmap_box!r} gives the reference models' heatmaps: input "
                              f"'heatmaps', without joints_2d or limb_heatmaps, got {inputs!r}")
        pose = any(n in POSE_INPUTS for n in inputs) and not maps  # 2D joints in the RGB crop
        rgb = "rgb" in inputs
        need_skeleton = pose or any(n in SKELETON_INPUTS for n in inputs)
        self.spec = ClipSpec(frames=frames, skeleton=need_skeleton, rgb=rgb, crop=crop, flip=flip,
                             normalize=normalize, sampling=sampling, heatmaps=maps, heatmap_size=heatmap_size,
                             heatmap_test_size=heatmap_test_size, heatmap_frames=heatmap_frames,
                             heatmap_box=heatmap_box or "pose", sigma=sigma, rgb_crop=rgb_crop,
                             rgb_norm=rgb_norm, rotation=rotation, stream=stream)
        _require_stages(self.store, inputs, need_skeleton or maps, rgb or pose)
        self.info = read_split(self.store, protocol, side, need_rgb=rgb or pose,
                               need_skeleton=need_skeleton or maps)
        if (rgb or pose) and crop > self.info.rgb_size:
            raise ConfigError(f"crop {crop} is larger than the stored RGB frames of {self.store} "
                              f"({self.info.rgb_size} x {self.info.rgb_size})")
        classes = len(self.info.class_names)
        if self.info.labels.min() < 0 or self.info.labels.max() >= classes:
            raise StoreFormatError(f"{self.store}: labels outside [0, {classes}) in {protocol}/{side}: "
                                   f"samples/label is damaged (`ntu-prep verify`)")
        self.rule = clip_rule(self.spec, self.info)
        if pose and not rgb:  # the crop's geometry without the frames: boxes only, one view
            self.rule = dataclasses.replace(self.rule, rgb_size=self.info.rgb_size)
        names = read_strings(open_store(self.store)["samples/name"])
        self.names = [names[i] for i in self.info.indices]
        self.packed = self.packed_frames = self.packed_poses = None
        lengths = np.maximum(self.info.num_frames, 1)  # as load_packed packs them
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (n,)
        if preload and any(n in SKELETON_INPUTS for n in inputs):
            self.packed = load_packed(self.store, self.info.indices, self.info.num_frames, normalize)
        if preload and (need_skeleton or maps):
            self.packed_frames = load_packed_table(self.store, "skeleton/frame_index", self.info.indices,
                                                   self.info.num_frames)  # (F,) source frames
        if preload and maps:
            self.packed_poses = load_packed_poses(self.store, self.info.indices, self.info.num_frames)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._rows: _SampleRows | None = None
        self._randoms: tuple[int, Tensor] | None = None

    # --- what a user reads --------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        return self.spec.frames

    @property
    def crop(self) -> int:
        return self.spec.crop

    @property
    def rgb_norm(self) -> str:
        """What `rgb_to_model` takes as norm for this dataset's `rgb`."""
        return self.spec.rgb_norm

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def num_classes(self) -> int:
        return len(self.info.class_names)

    @property
    def left_out(self) -> dict[str, int]:
        """{"<stage> <status>": samples} of the side's samples left out for an unusable modality."""
        return dict(self.info.left_out)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the training draws (window, crop, flip) of the next items, in every worker."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.info)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_rows"] = state["_randoms"] = None  # reopened where used: nothing open crosses processes
        return state

    # --- one item -----------------------------------------------------------------------------------

    def __getitem__(self, position: int) -> dict[str, Tensor | str]:
        p = range(len(self))[position]
        info, rule = self.info, self.rule
        index, n = int(info.indices[p]), int(info.num_frames[p])
        length = max(n, 1)  # an empty sample holds one zero frame, as ntu-train packs it
        u = self._epoch_randoms()[p:p + 1] if self.side == "train" else None  # (1, NUM_RANDOMS + extra)
        flip = rule.flips(u, 1)  # (1,)
        rows = self._store_rows()
        clip = self._timeline(p, rows, index, n, u)
        item: dict[str, Tensor | str] = {"label": torch.tensor(info.labels[p]), "name": self.names[p],
                                         "frame_index": torch.from_numpy(clip.frame_index), "flip": flip[0]}
        if any(name in SKELETON_INPUTS for name in self.inputs):
            joints = self._joints(p, rows, index, length)  # (L, M, V, 3)
            start = torch.zeros(1, dtype=torch.long)
            if clip.positions is None:  # the fused models': at the RGB clip's frames
                joints = gather_packed(joints, start, torch.from_numpy(clip.kept)[None])  # (1, T, M, V, 3)
            elif self.spec.sampling == "crop_resize":
                joints = interpolate_packed(joints, start, *rule.crop_resize_taps(torch.tensor([n]), u))
            else:
                joints = resample_packed(joints, start, torch.tensor([length]), clip.positions)
            skeleton = rule.augment_skeleton(to_model_layout(joints), flip, u)  # (1, 3, T, V, M)
            if "skeleton" in self.inputs:
                item["skeleton"] = skeleton[0]
            if "motion" in self.inputs:
                item["motion"] = skeleton_motion(skeleton)[0]
            if "bones" in self.inputs:
                item["bones"] = skeleton_bones(skeleton)[0]
        box = None
        if rule.rgb_size is not None:
            views = (self.clip, self.clips) if self.spec.rgb else (0, 1)  # 2D joints alone: one view
            box = rule.boxes(u, 1, *views)  # (1, 4) float64
            item["crop_box"] = box[0]
        if self.spec.heatmaps:
            maps = self._heatmaps(p, rows, index, length, clip.pose, u, flip, box)  # (1, V, T_h, H, H)
            item["heatmaps"] = maps[0]
        elif any(name in POSE_INPUTS for name in self.inputs):
            item.update(self._pose(rows, index, length, clip.kept, box, flip))
        if clip.rgb_frames is not None:
            frames = rows.rgb(index, clip.rgb_frames)  # (T, S, S, 3)
            item["rgb"] = torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous()  # (3, T, S, S)
        return item

    def _timeline(self, p: int, rows: _SampleRows, index: int, n: int, u: Tensor | None) -> _Clip:
        """Which frames of sample `index` (n kept skeleton frames) the clip takes, by the rules of
        ntu-train (`ClipRule`): with RGB, the stored frames, and the skeleton's at their instants;
        without, the skeleton's interpolated positions and the kept frames nearest to them."""
        rule, spec = self.rule, self.spec
        kept = self._kept_frames(p, rows, index, max(n, 1)) if spec.skeleton or spec.heatmaps else None
        if spec.rgb:
            source = rows.read("rgb/frame_index", index)  # (T_s,) the source frame of each stored frame
            stored = torch.from_numpy(stored_frames(source[None]))  # (1,)
            frames = rule.rgb_positions(stored, u, self.clip, self.clips)[0].numpy()  # (T,) stored frames
            to_kept = match_frames(kept[:n], source) if kept is not None else None  # (T_s,) -1: none
            pose = None
            if spec.heatmaps:  # the heatmaps' own stored frames (RGBPose's 32 beside 8)
                pose = to_kept[rule.pose_positions(stored, u, self.clip, self.clips)[0].numpy()]
            at = to_kept[frames] if to_kept is not None else None
            return _Clip(source[frames].astype(np.int64), frames, at, None, pose)
        offsets = rule.clip_offsets(self.clip, self.clips)
        positions = rule.skeleton_positions(torch.tensor([n]), u, offsets, self.clip, self.clips)  # (1, T)
        nearest = positions[0].round().long().numpy()  # (T,) the kept frame nearest each position
        pose = nearest if spec.heatmaps else None  # uniform: the frames themselves
        return _Clip(kept[nearest].astype(np.int64), None, nearest, positions, pose)

    def _heatmaps(self, p: int, rows: _SampleRows, index: int, length: int, kept: np.ndarray,
                  u: Tensor | None, flip: Tensor, box: Tensor | None) -> Tensor:
        """The reference heatmaps (1, V, T_h, H, H) of sample `index` at its kept frames `kept` (T_h,)
        (-1: none), with the RGB crop `box` (1, 4) (None without RGB), as `SplitData` draws them
        (`ClipRule.heatmaps`)."""
        if self.packed_poses is not None:
            poses = self.packed_poses
            table, starts = (poses.xy, poses.tracking), poses.starts[p:p + 1]
        else:
            table = tuple(torch.from_numpy(rows.read(path, index, length))
                          for path in ("skeleton/color_xy", "skeleton/tracking"))  # (L, M, V, 2), (L, M, V)
            starts = torch.zeros(1, dtype=torch.long)
        xy, tracking = gather_poses(*table, starts, torch.from_numpy(kept)[None])
        video = (None, None)
        if self.spec.heatmap_box == "rgb":
            video = tuple(torch.from_numpy(rows.read(path, index))[None]
                          for path in ("rgb/crop_box", "rgb/video_size"))  # (1, 4), (1, 2)
        return self.rule.heatmaps(xy, tracking, flip, u, box, *video)

    def _pose(self, rows: _SampleRows, index: int, length: int, at: np.ndarray, box: Tensor,
              flip: Tensor) -> dict[str, Tensor]:
        """joints_2d (2, T, V, M) in the crop, their scores (T, V, M) and the heatmaps asked for, of the
        kept frames `at` (T,) (-1: none) of sample `index`, cropped by `box` (1, 4), mirrored by `flip`."""
        size, crop = self.info.rgb_size, self.spec.crop
        seen = at >= 0
        color = rows.read("skeleton/color_xy", index, length)[at.clip(min=0)]  # (T, M, V, 2)
        color[~seen] = 0
        tracking = rows.read("skeleton/tracking", index, length)[at.clip(min=0)]  # (T, M, V)
        tracking[~seen] = 0
        video_box, video_size = rows.read("rgb/crop_box", index), rows.read("rgb/video_size", index)
        stored = torch.from_numpy(project_to_crop(color, video_box, tuple(video_size), size))  # NaN: absent
        in_crop = crop_points(stored.double()[None], box, torch.zeros(1, dtype=torch.bool), size, crop)
        score = tracking_scores(torch.from_numpy(tracking)).double()[None, ..., None]  # (1, T, M, V, 1)
        layout = to_model_layout(torch.cat([in_crop, score], dim=-1))  # (1, 3, T, V, M): x, y, score
        layout = mirror_skeleton(layout, flip, width=float(crop))  # x -> crop - x, sides swapped
        absent = layout[:, :2].isnan().any(dim=1)  # (1, T, V, M)
        xy = torch.where(absent[:, None], 0.0, layout[:, :2]).float()  # (1, 2, T, V, M)
        score = torch.where(absent, 0.0, layout[:, 2]).float()  # (1, T, V, M)
        out = {}
        if "joints_2d" in self.inputs:
            out["joints_2d"], out["joints_2d_score"] = xy[0], score[0]
        h = self.heatmap_size
        points = to_heatmap_pixels(xy, crop, h)
        if "heatmaps" in self.inputs:
            out["heatmaps"] = joint_heatmaps(points, score, (h, h))[0]  # (V, T, H, H)
        if "limb_heatmaps" in self.inputs:
            out["limb_heatmaps"] = limb_heatmaps(points, score, bone_index("cpu"), (h, h))[0]  # (L, T, H, H)
        return out

    def _kept_frames(self, p: int, rows: _SampleRows, index: int, length: int) -> np.ndarray:
        """(L,) the source frames of sample `index`'s kept skeleton frames (-1 past them)."""
        if self.packed_frames is not None:
            return self.packed_frames[self.starts[p]:self.starts[p] + length]
        return rows.read("skeleton/frame_index", index, length)

    def _joints(self, p: int, rows: _SampleRows, index: int, length: int) -> Tensor:
        """Sample `index`'s kept frames (L, M, V, 3), normalised as ntu-train normalises them."""
        if self.packed is not None:
            return self.packed.frames[self.starts[p]:self.starts[p] + length]
        joints = torch.from_numpy(rows.read("skeleton/joints", index, length))[None]  # (1, L, M, V, 3)
        return normalize_skeletons(joints, self.spec.normalize)[0]

    def _epoch_randoms(self) -> Tensor:
        """This epoch's uniforms (n, NUM_RANDOMS + extra), made once per epoch in each process."""
        epoch = self.epoch
        if self._randoms is None or self._randoms[0] != epoch:
            self._randoms = (epoch, clip_randoms(len(self.info), self.seed, epoch, self.rule))
        return self._randoms[1]

    def _store_rows(self) -> _SampleRows:
        if self._rows is None or self._rows.pid != os.getpid():
            self._rows = _SampleRows(self.store, self.spec.rgb)
        return self._rows


class _Clip(NamedTuple):
    """When an item's clip is: frame_index (T,) the source frames; rgb_frames (T,) the stored RGB frames
    (None without RGB); kept (T,) the kept skeleton frame of each clip frame (-1: none) or the nearest to
    each position; positions (1, T) float64 where the skeleton is interpolated (None: taken at `kept`);
    pose (T_h,) the kept skeleton frames of the reference heatmaps (-1: none), None without them."""

    frame_index: np.ndarray
    rgb_frames: np.ndarray | None
    kept: np.ndarray | None
    positions: Tensor | None
    pose: np.ndarray | None = None


class _SampleRows:
    """One sample's rows of the store's per-sample arrays, read through zarr, and its RGB frames, read
    from the shard files; opened in the process that reads (a worker opens its own)."""

    def __init__(self, store: Path, rgb: bool):
        self.pid = os.getpid()
        self.group = open_store(store)
        self.arrays: dict[str, object] = {}
        self.frames = FrameReader(store, "rgb/frames") if rgb else None

    def read(self, path: str, index: int, length: int | None = None) -> np.ndarray:
        """Row `index` of array `path` (its first `length` frames where given)."""
        if path not in self.arrays:
            self.arrays[path] = self.group[path]
        array = self.arrays[path]
        return array[index] if length is None else array[index, :length]

    def rgb(self, index: int, frames: np.ndarray) -> np.ndarray:
        return self.frames.read(index, frames)  # (T, S, S, 3) uint8


def _require_stages(store: Path, inputs: tuple[str, ...], skeleton: bool, rgb: bool) -> None:
    """StoreFormatError in one line, naming the inputs, where the store lacks a stage they need."""
    group = open_store(store)
    for stage, needed, what, option in (("skeleton", skeleton, "skeletons", "--skeletons DIR"),
                                        ("rgb", rgb, "RGB frames", "--videos DIR")):
        if needed and not has_stage(group, stage):
            users = [n for n in inputs if (n != "rgb" if stage == "skeleton" else n not in SKELETON_INPUTS)]
            raise StoreFormatError(f"{store}: input {', '.join(users)} needs the {what}, which the store "
                                   f"lacks; add them with: ntu-prep extract {option} --out {store}")
