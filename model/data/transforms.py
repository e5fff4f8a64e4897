"""Pure tensor transforms of the data path: skeleton normalisation, temporal windows and resampling,
the horizontal flip, bones, RGB crops. Batched, on whatever device the tensors are on; `split.py` (ntu-train's
batches) and `dataset.py` (`NTUDataset`) apply them through the rules of `sampling.py`; this module knows
nothing of stores.

    joints = normalize_skeletons(joints, "spine_axes")           # (B, T, M, V, 3)
    positions = window_positions(num_frames, 32, window_ratio(u, B, device))
    joints = resample_packed(frames, starts, lengths, positions)  # (B, 32, M, V, 3)
    clips = crop_clips(clips, crop_boxes(u4, B, 256, 224, device), flip, 224)

Public, for a training step of one's own on the device (`NTUDataset` hands over raw uint8 frames, their
crop boxes and flips; shapes below):

    rgb = rgb_to_model(batch["rgb"], batch["crop_box"], batch["flip"], crop)  # (B, 3, T, S, S) uint8
                                                     # -> (B, 3, T, crop, crop) float32 in [-1, 1]
    motion = skeleton_motion(skeleton)               # model.data.motion: (B, 3, T, 25, 2), eq. 2
    bones = skeleton_bones(skeleton)                 # (B, 3, T, 25, 2): joint minus its parent joint
    flipped = mirror_skeleton(skeleton, flip)        # (B, C, T, V, M), flip (B,) bool
    xy = crop_points(points, boxes, flip, S, crop)   # (B, ..., 2) stored-frame pixels -> crop pixels
    xy = to_heatmap_pixels(joints_2d, crop, 56)      # (B, 2, T, V, M) crop pixels -> 56 x 56 heatmaps'
    maps = joint_heatmaps(xy, batch["joints_2d_score"], (56, 56))   # heatmaps.py: (B, V, T, 56, 56)

Shapes: resident skeletons packed (F, M, V, 3) with per-sample starts and lengths (`skeletons.py`);
model layout (B, 3, T, V, M); clips (B, T, S, S, 3) uint8 in, (B, 3, T, crop, crop) out. What runs in a
training step never copies from the host or reads a value back (no host-device synchronisation): every
tensor a function makes is made on its input's device (a host tensor mixed in fails on CUDA, or copies
and waits), and the one constant index (`mirror_index`) is made by the caller before the first step and
passed in.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ntu_pipeline.skeleton.joints import BONES
from ntu_pipeline.skeleton.normalize import LEFT_SHOULDER, RIGHT_SHOULDER, SPINE_BASE, SPINE_MID

NORMALIZATIONS = ("none", "spine", "spine_axes", "spine_first")
RGB_NORMS = ("i3d", "imagenet")  # [-1, 1] (the pytorch-i3d checkpoints), or ImageNet's mean and std
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # PYSKL's img_norm_cfg, RGB order, 0-255 units
IMAGENET_STD = (58.395, 57.12, 57.375)
TRAIN_WINDOW = (0.5, 1.0)  # HCN: a random window of 50-100% of the frames kept
TEST_WINDOW = 0.95  # the centred window at test (CTR-GCN, PYSKL)
TEST_SEED = 255  # of the multi-clip test's offsets (PYSKL's UniformSampleFrames test seed)
CROP_AREA = (0.5, 1.0)  # random resized crop: share of the stored frame's area
CROP_ASPECT = (3 / 4, 4 / 3)

# Kinect v2 joints (0-based): left arm 4-7, hand tip 21, thumb 22; right arm 8-11, 23, 24; left leg
# 12-15, right leg 16-19; the spine, neck and head (0-3, 20) are their own mirror image.
_LEFT = (4, 5, 6, 7, 21, 22, 12, 13, 14, 15)
_RIGHT = (8, 9, 10, 11, 23, 24, 16, 17, 18, 19)
MIRROR_JOINTS = list(range(25))
for _l, _r in zip(_LEFT, _RIGHT, strict=True):
    MIRROR_JOINTS[_l], MIRROR_JOINTS[_r] = _r, _l


def _first_true(mask: Tensor) -> Tensor:
    """Index of the first True along the last axis (0 where none): (B, T) bool -> (B,) int64."""
    return mask.int().argmax(dim=-1)


def center_on_spine(joints: Tensor, present: Tensor) -> Tensor:
    """Subtract actor 1's spine-middle joint per frame: joints (B, T, M, V, 3), present (B, T, M) bool.

    Frames without actor 1 use its last earlier frame (or its first one); empty slots stay zero;
    samples without actor 1 are returned unchanged. As `ntu_pipeline.skeleton.normalize.center_on_spine`.
    """
    b, t = present.shape[:2]
    actor1 = present[:, :, 0]  # (B, T)
    frame = torch.arange(t, device=joints.device).expand(b, t)
    seen = torch.where(actor1, frame, -1).cummax(dim=1).values  # (B, T)
    seen = torch.where(seen < 0, _first_true(actor1)[:, None], seen)
    centre = joints[:, :, 0, SPINE_MID].gather(1, seen[..., None].expand(b, t, 3))  # (B, T, 3)
    centre = centre * actor1.any(dim=1)[:, None, None]  # no actor 1: nothing to centre on
    return (joints - centre[:, :, None, None]) * present[..., None, None]


def _rotation_between(a: Tensor, b: Tensor) -> Tensor:
    """(B, 3, 3) rotations turning directions a (B, 3) into b (3,) (Rodrigues), float64."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = (b / b.norm()).expand_as(a)
    axis = torch.linalg.cross(a, b)
    sin, cos = axis.norm(dim=-1), (a * b).sum(dim=-1)  # (B,)
    k = axis / sin.clamp_min(1e-300)[:, None]
    zero = torch.zeros_like(sin)
    K = torch.stack([zero, -k[:, 2], k[:, 1], k[:, 2], zero, -k[:, 0], -k[:, 1], k[:, 0], zero],
                    dim=-1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(K)
    rodrigues = eye + sin[:, None, None] * K + (1 - cos)[:, None, None] * K @ K
    # opposite directions: a half turn about an axis orthogonal to a
    helper = torch.where((a[:, :1].abs() < 0.9), a.new_tensor([1.0, 0, 0]), a.new_tensor([0.0, 1, 0]))
    ortho = torch.linalg.cross(a, helper)
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    half_turn = 2 * ortho[:, :, None] * ortho[:, None, :] - eye
    parallel = torch.where((cos > 0)[:, None, None], eye, half_turn)
    return torch.where((sin < 1e-8)[:, None, None], parallel, rodrigues)


def align_to_axes(joints: Tensor, present: Tensor) -> Tensor:
    """Rotate so actor 1's first hip -> spine bone is +z, then its left -> right shoulders +x.

    joints (B, T, M, V, 3), present (B, T, M) bool -> rotated joints (empty slots zero). Samples without
    actor 1 are returned unchanged. As `ntu_pipeline.skeleton.normalize.align_to_axes`; the rotation is
    found in float64 and applied in the joints' dtype.
    """
    b = joints.shape[0]
    actor1 = present[:, :, 0]
    first = joints[torch.arange(b, device=joints.device), _first_true(actor1), 0].double()  # (B, V, 3)
    r1 = _rotation_between(first[:, SPINE_MID] - first[:, SPINE_BASE], first.new_tensor([0.0, 0, 1]))
    shoulders = (r1 @ (first[:, RIGHT_SHOULDER] - first[:, LEFT_SHOULDER])[..., None])[..., 0]
    shoulders = shoulders * shoulders.new_tensor([1.0, 1, 0])  # turn about z only
    flat = shoulders.norm(dim=-1) < 1e-8
    r2 = _rotation_between(torch.where(flat[:, None], shoulders.new_tensor([1.0, 0, 0]), shoulders),
                           shoulders.new_tensor([1.0, 0, 0]))
    eye = torch.eye(3, dtype=r1.dtype, device=r1.device)
    rotation = torch.where(actor1.any(dim=1)[:, None, None], r2 @ r1, eye)  # (B, 3, 3)
    rotated = joints.flatten(1, 3) @ rotation.transpose(1, 2).to(joints.dtype)  # (B, T*M*V, 3)
    return rotated.view(joints.shape) * present[..., None, None]


def center_on_first_spine(joints: Tensor, present: Tensor) -> Tensor:
    """Subtract one origin per sample, actor 1's spine-middle joint in its first frame, from every present
    joint: joints (B, T, M, V, 3), present (B, T, M) bool. CTR-GCN's preprocessing (`seq_translation` of
    its data/ntu/seq_transformation.py: "new origin: joint-2" of actor 1's first non-zero frame, empty
    slots put back to zero). Samples without actor 1 are returned unchanged."""
    b = joints.shape[0]
    actor1 = present[:, :, 0]
    origin = joints[torch.arange(b, device=joints.device), _first_true(actor1), 0, SPINE_MID]  # (B, 3)
    origin = origin * actor1.any(dim=1)[:, None]
    return (joints - origin[:, None, None, None]) * present[..., None, None]


def normalize_skeletons(joints: Tensor, how: str) -> Tensor:
    """Apply normalisation `how` (NORMALIZATIONS) to joints (B, T, M, V, 3): "spine" centres every frame
    on actor 1's spine, "spine_axes" also turns it to its body axes, "spine_first" subtracts actor 1's
    spine in its first frame from the whole sequence (CTR-GCN's preprocessing)."""
    if how == "none":
        return joints
    present = joints.abs().sum(dim=(-1, -2)) > 0  # (B, T, M); faster than ne(0).any() on CPU
    if how == "spine_first":
        return center_on_first_spine(joints, present)
    joints = center_on_spine(joints, present)
    return align_to_axes(joints, present) if how == "spine_axes" else joints


def window_positions(num_frames: Tensor, frames: int, ratio: Tensor, start: Tensor | None = None) -> Tensor:
    """Fractional frame positions of `frames` evenly spaced samples of a window: (B, frames) float64.

    num_frames (B,): frames kept per sample; ratio (B,): the window's share of them; start (B,) uniforms
    in [0, 1) place the window (None: centred). Positions lie in [first, last] frame of the window.
    """
    n = num_frames.clamp_min(1).double()
    length = (ratio.double() * n).round().clamp(min=1).minimum(n)  # (B,)
    first = (start.double() * (n - length + 1)).floor() if start is not None else ((n - length) / 2).floor()
    k = torch.arange(frames, dtype=torch.float64, device=n.device)
    pos = first[:, None] + (k + 0.5) * (length / frames)[:, None] - 0.5  # (B, frames)
    return pos.clamp(min=first[:, None]).minimum((first + length - 1)[:, None])


def window_ratio(uniform: Tensor | None, size: int, device: torch.device | str) -> Tensor:
    """Window shares (B,): TRAIN_WINDOW drawn from uniforms (B,), or TEST_WINDOW where uniform is None."""
    if uniform is None:
        return torch.full((size,), TEST_WINDOW, dtype=torch.float64, device=device)
    lo, hi = TRAIN_WINDOW
    return lo + uniform.double() * (hi - lo)


def resample_packed(frames: Tensor, starts: Tensor, lengths: Tensor, positions: Tensor) -> Tensor:
    """Interpolate packed skeleton frames (F, M, V, C) (sample i's frames at starts[i] .. starts[i] +
    lengths[i] - 1) at fractional `positions` (B, T) in [0, length - 1] of the samples whose starts and
    lengths (B,) are given -> (B, T, M, V, C) float32. Between two frames the result is linear where the
    actor is in both, the frame that has it where it is in one, zero where in neither."""
    last = (lengths - 1).clamp_min(0)[:, None]  # (B, 1)
    i0 = positions.floor().long().clamp(min=0).minimum(last)  # (B, T)
    i1 = (i0 + 1).minimum(last)
    frac = (positions - i0).float()[..., None]  # (B, T, 1)
    a, b = frames[starts[:, None] + i0].float(), frames[starts[:, None] + i1].float()  # (B, T, M, V, C)
    wa = (1 - frac) * a.ne(0).any(-1).any(-1)  # (B, T, M)
    wb = frac * b.ne(0).any(-1).any(-1)
    total = wa + wb
    mixed = (a * wa[..., None, None] + b * wb[..., None, None]) / total.clamp_min(1e-12)[..., None, None]
    return torch.where((total > 0)[..., None, None], mixed, 0.0)


def interpolate_packed(frames: Tensor, starts: Tensor, first: Tensor, second: Tensor,
                       weight: Tensor) -> Tensor:
    """Packed skeleton frames (F, M, V, C) mixed as (1 - weight) * frame[first] + weight * frame[second]
    for the samples starting at `starts` (B,), frames first, second (B, T) int64 and weight (B, T) float32
    -> (B, T, M, V, C) float32. Unmasked, as CTR-GCN's valid_crop_resize interpolates (an actor present in
    one of the two frames only is mixed with zeros); `ctrgcn_sampling.crop_resize_taps` gives the taps."""
    a, b = frames[starts[:, None] + first].float(), frames[starts[:, None] + second].float()
    w = weight[..., None, None, None]  # (B, T, 1, 1, 1)
    return (1 - w) * a + w * b


def gather_packed(frames: Tensor, starts: Tensor, kept: Tensor) -> Tensor:
    """Packed skeleton frames (F, M, V, C) at kept-frame positions `kept` (B, T) (-1: none, zero there) of
    the samples starting at `starts` (B,) -> (B, T, M, V, C) float32."""
    out = frames[starts[:, None] + kept.clamp(min=0)].float()
    return torch.where((kept >= 0)[..., None, None, None], out, 0.0)


def segment_positions(num_frames: Tensor, frames: int, uniforms: Tensor) -> Tensor:
    """Integer frame positions (B, frames) int64: one frame drawn from each of `frames` equal segments of
    num_frames (B,), at its uniform (frames,) or (B, frames) in [0, 1) within the segment (PYSKL's
    UniformSampleFrames at test: frame i = floor((i + u_i) * n / frames); a short sample repeats)."""
    n = num_frames.clamp_min(1).double()[:, None]  # (B, 1)
    k = torch.arange(frames, dtype=torch.float64, device=n.device)
    pos = ((k + uniforms.to(n.device).double()) * n / frames).floor()
    return pos.long().minimum((n - 1).long())


def clip_uniforms(clips: int, frames: int, seed: int = TEST_SEED) -> Tensor:
    """(clips, frames) float64 uniforms of the multi-clip test: clip k's offsets within the segments,
    the same for every sample (as PYSKL reseeds its test sampler per sample), so clip k is a pure
    function of (seed, k) and the sample, whatever the process count."""
    return torch.from_numpy(np.random.default_rng([seed, frames]).random((clips, frames)))


def to_model_layout(joints: Tensor) -> Tensor:
    """(B, T, M, V, C) -> (B, C, T, V, M), the networks' skeleton layout."""
    return joints.permute(0, 4, 1, 3, 2).contiguous()


def mirror_index(device: torch.device | str) -> Tensor:
    """MIRROR_JOINTS (V,) int64 on `device`, for `mirror_skeleton`. Make it once, before the training
    steps (`SplitData` does): made from the host list, it is a copy to the device, which waits."""
    return torch.tensor(MIRROR_JOINTS, device=device)


def mirror_skeleton(skeleton: Tensor, flip: Tensor, width: float = 0.0,
                    index: Tensor | None = None) -> Tensor:
    """Mirror the samples where `flip` (B,) is True: x -> width - x and left/right joints swapped.

    skeleton (B, C, T, V, M) with x in channel 0: camera-space metres (width 0: x -> -x) or pixel
    coordinates in a crop `width` wide. Absent actors (all zero) stay zero for width 0. index:
    `mirror_index(skeleton.device)`, made ahead; None makes it here (a host-to-device copy: never in a
    training step).
    """
    if index is None:
        index = mirror_index(skeleton.device)
    mirrored = skeleton.index_select(3, index)
    mirrored = torch.cat([width - mirrored[:, :1], mirrored[:, 1:]], dim=1)
    return torch.where(flip[:, None, None, None, None], mirrored, skeleton)


# --- RGB: crops on the device -------------------------------------------------------------------------

def crop_boxes(uniforms: Tensor | None, batch: int, size: int, crop: int, device) -> Tensor:
    """Crop boxes (B, 4) = (x0, y0, w, h) in stored-frame pixels of S x S frames (S = size).

    uniforms (B, 4) (CROP_SCALE .. CROP_Y columns): a random resized crop, CROP_AREA of the frame at an
    aspect in CROP_ASPECT, anywhere inside it; None: the centre crop x crop (the test crop).
    """
    if uniforms is None:
        return view_boxes(batch, size, crop, 0, 1, device)
    u = uniforms.double()
    area = (CROP_AREA[0] + u[:, 0] * (CROP_AREA[1] - CROP_AREA[0])) * size * size
    log_ratio = math.log(CROP_ASPECT[0]) + u[:, 1] * (math.log(CROP_ASPECT[1]) - math.log(CROP_ASPECT[0]))
    w = (area * log_ratio.exp()).sqrt().clamp(max=size)
    h = (area / log_ratio.exp()).sqrt().clamp(max=size)
    return torch.stack([u[:, 2] * (size - w), u[:, 3] * (size - h), w, h], dim=1)


def view_boxes(batch: int, size: int, crop: int, view: int, views: int, device) -> Tensor:
    """Crop boxes (B, 4) of test view `view` of `views`: crop x crop at scale 1, the centre one for a
    single view, else views spread evenly along the frame's diagonal from the top-left corner to the
    bottom-right one (the multi-clip test of a store whose frames the model takes whole)."""
    side = float(min(crop, size))
    corner = (size - side) / 2 if views == 1 else (size - side) * view / (views - 1)
    boxes = torch.full((batch, 4), corner, dtype=torch.float64, device=device)  # a fill, no host copy
    boxes[:, 2:] = side
    return boxes


def _crop_affine(boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """affine_grid matrices (B, 2, 3) mapping the output crop to `boxes` of an S x S frame, mirrored
    where `flip` (align_corners=False: -1 and 1 are the outer edges of the pixels)."""
    x0, y0, w, h = boxes.unbind(1)
    sx = torch.where(flip, -w / size, w / size)
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, (2 * x0 + w) / size - 1], 1),
                        torch.stack([zero, h / size, (2 * y0 + h) / size - 1], 1)], dim=1)


def crop_clips(clips: Tensor, boxes: Tensor, flip: Tensor, crop: int, norm: str = "i3d") -> Tensor:
    """uint8 clips (B, T, S, S, 3) -> float32 (B, 3, T, crop, crop) in [-1, 1]: each clip's box
    (B, 4) resized to crop x crop (bilinear), mirrored where `flip` (B,). A centre box of `crop`
    pixels at scale 1 copies the pixels exactly. norm (RGB_NORMS): "i3d" scales to [-1, 1],
    "imagenet" takes IMAGENET_MEAN and divides by IMAGENET_STD per channel (PYSKL's Normalize).

    The whole frame is converted to float32 before sampling (0.8 GB at batch 32 of 32 x 256^2): a box
    is up to the whole frame (CROP_AREA, CROP_ASPECT), and a batch cut to its largest box would have to
    read the boxes back from the device, a wait in every step. The conversion is one pass with no
    uint8 copy in between, and the scaling is in place.
    """
    return _crop_frames(clips.permute(0, 1, 4, 2, 3), boxes, flip, crop, norm)  # (B, T, 3, S, S) view


def rgb_to_model(rgb: Tensor, boxes: Tensor, flip: Tensor, crop: int, norm: str = "i3d") -> Tensor:
    """What `NTUDataset` hands over -> what the networks take, equal to `ntu-train`'s batches: uint8
    clips (B, 3, T, S, S) (items' `rgb`, collated), crop boxes (B, 4) float64 (`crop_box`: x0, y0, w, h
    in stored pixels) and flips (B,) bool (`flip`) -> float32 (B, 3, T, crop, crop) in [-1, 1] (what
    the pytorch-i3d checkpoints expect): each box resized to crop x crop (bilinear), then mirrored where
    flipped. Run it on the device, in the training step; the boxes and flips may stay on the host only
    on the CPU. norm: "imagenet" for a dataset with rgb_norm="imagenet" (as `crop_clips`)."""
    return _crop_frames(rgb.permute(0, 2, 1, 3, 4), boxes, flip, crop, norm)  # (B, T, 3, S, S) view


def _crop_frames(frames: Tensor, boxes: Tensor, flip: Tensor, crop: int, norm: str = "i3d") -> Tensor:
    """uint8 frames (B, T, 3, S, S) (any strides) -> float32 (B, 3, T, crop, crop), scaled by `norm`."""
    b, t, _, s = frames.shape[:4]
    x = frames.to(torch.float32, memory_format=torch.contiguous_format).view(b, t * 3, s, s)  # (B, T*3, S, S)
    grid = F.affine_grid(_crop_affine(boxes, flip, s).float(), [b, t * 3, crop, crop], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                      align_corners=False)  # (B, T*3, crop, crop)
    x = x.view(b, t, 3, crop, crop)
    if norm == "i3d":
        x = x.div_(127.5).sub_(1.0)  # in place: no second output-sized tensor
    elif norm == "imagenet":
        mean, std = torch.empty(2, 3, device=x.device)
        for c in range(3):  # filled on the device: a tensor made from the host list would be a copy, a wait
            mean[c], std[c] = IMAGENET_MEAN[c], IMAGENET_STD[c]
        x = x.sub_(mean.view(3, 1, 1)).div_(std.view(3, 1, 1))
    else:
        raise ValueError(f"norm must be one of {RGB_NORMS}, got {norm!r}")
    return x.transpose(1, 2)  # (B, 3, T, crop, crop)


def crop_points(points: Tensor, boxes: Tensor, flip: Tensor, size: int, crop: int) -> Tensor:
    """Where pixel positions (B, ..., 2) of the stored S x S frames land in the output crop (B, ..., 2)
    of `crop_clips` / `rgb_to_model` with the same boxes (B, 4) and flips (B,) (pixel j spans [j, j + 1)).
    `NTUDataset` maps its `joints_2d` into the crop with it (unflipped: `mirror_skeleton` with the crop's
    width then mirrors them and swaps their sides, as the skeleton's)."""
    theta = _crop_affine(boxes, flip, size).to(points.dtype)  # (B, 2, 3)
    shape = (points.shape[0],) + (1,) * (points.ndim - 2)
    scale, shift = theta[:, [0, 1], [0, 1]].view(*shape, 2), theta[:, :, 2].view(*shape, 2)
    normalised = 2 * points / size - 1
    return ((normalised - shift) / scale + 1) * crop / 2


def to_heatmap_pixels(joints_2d: Tensor, crop: int, size: int) -> Tensor:
    """Joint positions (..., 2, T, V, M) in pixels of a crop x crop crop (`NTUDataset`'s `joints_2d`:
    pixel j spans [j, j + 1)) -> the same in pixels of size x size heatmaps, where pixel (i, j) is the
    point x = j, y = i (`model.data.heatmaps.joint_heatmaps`'s convention)."""
    return joints_2d * (size / crop) - 0.5


# --- skeleton streams -----------------------------------------------------------------------------------

def bone_parents(device: torch.device | str = "cpu") -> Tensor:
    """(V,) int64: the parent of each of NTU's 25 joints along its bone (`ntu_pipeline.skeleton.joints.BONES`,
    the pairs CTR-GCN's bone stream takes), joint 20 (spine at the shoulders, the root) its own."""
    parents = list(range(25))
    for child, parent in BONES:
        parents[child] = parent
    return torch.tensor(parents, device=device)


def skeleton_bones(skeleton: Tensor, parents: Tensor | None = None) -> Tensor:
    """Bones of skeletons (B, C, T, V, M) -> (B, C, T, V, M): joint v minus its parent joint (CTR-GCN's
    bone stream: `bone[v] = joint[v] - joint[parent(v)]`), zero at the root and for an absent actor.
    parents: `bone_parents(skeleton.device)`, made ahead (None makes it here: a host copy)."""
    if parents is None:
        parents = bone_parents(skeleton.device)
    return skeleton - skeleton.index_select(3, parents)
