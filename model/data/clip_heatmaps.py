"""A clip's joint heatmaps as the reference models take them, made on the device from its 2D joints.

    xy, tracking = gather_poses(poses.xy, poses.tracking, poses.starts[rows], kept)  # (B, T, M, V, 2)
    maps = pose_box_heatmaps(xy, tracking, flip, size=56, test_size=64, sigma=0.6, uniforms=u)  # PoseC3D
    maps = crop_box_heatmaps(xy, tracking, video_box, video_size, 256, boxes, flip, crop=224, size=56,
                             sigma=0.7)                                                      # RGBPoseConv3D

`xy` are the store's `skeleton/color_xy` (colour-camera pixels of the 1920 x 1080 frame, 0 where no actor)
at the clip's frames and `tracking` its `skeleton/tracking`, the Kinect states that become the scores
(`heatmaps.tracking_scores`). Both functions end in `heatmaps.joint_heatmaps` (PYSKL's GeneratePoseTarget)
and return (B, V, T, H, H) float32; `sampling.ClipRule.heatmaps` calls them for both data paths.

- `pose_box_heatmaps`, PoseC3D's pipeline (configs/posec3d/slowonly_r50_ntu60_xsub/joint.py) in the
  functions of `pyskl_sampling`, composed as its module docstring shows: PoseCompact's square box around
  every joint of the clip (padding 0.25), at training Resize(-1, test_size), RandomResizedCrop (area
  0.56-1), Resize(size, size), Flip; at test the box resized to test_size x test_size (PYSKL: 64 where it
  trains at 56). Needs nothing of the RGB stage: a store without videos trains PoseC3D.
- `crop_box_heatmaps`, RGBPoseConv3D's: the joints where they lie in the RGB clip's crop (`rgb/crop_box`,
  `rgb/video_size`, then the crop box of the clip), mirrored with it, at size x size over the crop's side
  (PYSKL's scaling=0.25: 56 for 224). Coordinates are the crop's pixel edges (pixel j spans [j, j + 1)),
  in which PYSKL's keypoint Flip (x -> W - x) is exactly the image's mirror, so the maps stay on the
  mirrored frames; `transforms.to_heatmap_pixels` takes them to the maps' pixel centres.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.data.heatmaps import joint_heatmaps, tracking_scores
from model.data.pyskl_sampling import (
    flip_xy,
    pose_compact_box,
    random_resized_crop_box,
    short_side_size,
    xy_to_grid,
)
from model.data.transforms import crop_points, to_heatmap_pixels
from ntu_pipeline.video.crop import COLOR_FRAME_SIZE

COLOR_IMAGE = (COLOR_FRAME_SIZE[1], COLOR_FRAME_SIZE[0])  # (h, w) of skeleton/color_xy's frame, 1080 x 1920


def gather_poses(xy: Tensor, tracking: Tensor, starts: Tensor, kept: Tensor) -> tuple[Tensor, Tensor]:
    """Packed 2D joints xy (F, M, V, 2) and tracking (F, M, V) (`skeletons.load_packed_poses`, or one
    sample's rows with starts 0) at kept-frame positions kept (B, T) (-1: none, zero there) of the
    samples starting at starts (B,) -> xy (B, T, M, V, 2) float32, tracking (B, T, M, V) as stored."""
    rows = starts[:, None] + kept.clamp(min=0)  # (B, T)
    unseen = kept < 0
    return (xy[rows].float().masked_fill(unseen[..., None, None, None], 0.0),
            tracking[rows].masked_fill(unseen[..., None, None], 0))


def _heatmaps(grid: Tensor, score: Tensor, side: int, sigma: float) -> Tensor:
    """joint_heatmaps of positions (B, T, M, V, 2) in heatmap pixels and scores (B, T, M, V)."""
    return joint_heatmaps(grid.permute(0, 4, 1, 3, 2), score.permute(0, 1, 3, 2), (side, side), sigma)


def pose_box_heatmaps(xy: Tensor, tracking: Tensor, flip: Tensor, *, size: int, test_size: int,
                      sigma: float, uniforms: Tensor | None = None, index: Tensor | None = None) -> Tensor:
    """PoseC3D's heatmaps (B, V, T, H, H) of a clip's joints xy (B, T, M, V, 2) in colour-camera pixels
    (0: absent) and tracking states (B, T, M, V): H = size at training (uniforms (B, CROP_DRAWS) of the
    crop, flip (B,) bool), H = test_size at test (uniforms None: the whole box, no flip). index:
    `transforms.mirror_index`, made ahead (None: here)."""
    valid = xy.ne(0).any(dim=-1)  # (B, T, M, V): PYSKL counts a keypoint that is not at 0
    box = pose_compact_box(xy, valid, img_shape=COLOR_IMAGE)  # (B, 4) int64
    score = tracking_scores(tracking)
    if uniforms is None:
        return _heatmaps(xy_to_grid(xy, valid, box, (test_size, test_size)), score, test_size, sigma)
    h, w = short_side_size(box[:, 3] - box[:, 1], box[:, 2] - box[:, 0], test_size)  # Resize(-1, test_size)
    grid = xy_to_grid(xy, valid, box, (h, w))
    crop = random_resized_crop_box(h, w, uniforms=uniforms)  # (B, 4) in the resized box
    grid = flip_xy(xy_to_grid(grid, valid, crop, (size, size)), size, flip, index)
    return _heatmaps(grid, score, size, sigma)


def project_points(xy: Tensor, video_box: Tensor, video_size: Tensor, stored: int,
                   frame_size: tuple[int, int] = COLOR_FRAME_SIZE) -> Tensor:
    """Colour-camera pixels xy (B, ..., 2) -> (B, ..., 2) float32 pixels of the stored S x S crop
    (S = stored) whose `rgb/crop_box` (B, 4) and `rgb/video_size` (B, 2) are given; NaN where xy is
    (0, 0) (absent). `ntu_pipeline.video.crop.project_to_crop`'s arithmetic, batched on the device."""
    shape = (xy.shape[0],) + (1,) * (xy.ndim - 2)
    box, size, points = video_box.double(), video_size.double(), xy.double()
    x0, y0, x1, y1 = (box[:, k].view(shape) for k in range(4))
    sx, sy = (size[:, 0] / frame_size[0]).view(shape), (size[:, 1] / frame_size[1]).view(shape)
    u = (points[..., 0] * sx - x0) * stored / (x1 - x0)
    v = (points[..., 1] * sy - y0) * stored / (y1 - y0)
    out = torch.stack([u, v], dim=-1).float()
    return out.masked_fill(xy.eq(0).all(dim=-1)[..., None], float("nan"))


def crop_box_heatmaps(xy: Tensor, tracking: Tensor, video_box: Tensor, video_size: Tensor, stored: int,
                      boxes: Tensor, flip: Tensor, *, crop: int, size: int, sigma: float,
                      index: Tensor | None = None) -> Tensor:
    """RGBPoseConv3D's heatmaps (B, V, T, size, size) of joints xy (B, T, M, V, 2) in colour-camera
    pixels and tracking (B, T, M, V), over the RGB crop: stored frames of side `stored` cut from the video
    by video_box (B, 4) and video_size (B, 2), then the clip's crop boxes (B, 4) (x0, y0, w, h in stored
    pixels, `ClipRule.boxes`) resized to crop x crop and mirrored where flip (B,)."""
    points = project_points(xy, video_box, video_size, stored).double()  # (B, T, M, V, 2)
    in_crop = crop_points(points, boxes, torch.zeros_like(flip), stored, crop)
    in_crop = flip_xy(in_crop, float(crop), flip, index)  # PYSKL's Flip, Kinect sides swapped
    absent = in_crop.isnan().any(dim=-1)  # (B, T, M, V)
    score = tracking_scores(tracking).masked_fill(absent, 0.0)
    grid = to_heatmap_pixels(in_crop.masked_fill(absent[..., None], 0.0), crop, size).float()
    return _heatmaps(grid, score, size, sigma)
