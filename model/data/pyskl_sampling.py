"""PYSKL's frame sampling and augmentation (PoseC3D, SlowOnly-R50 on RGB, RGBPoseConv3D) as pure tensor
functions, for training those networks as their configs do. Each equals the PYSKL step it names, as the
code stands in `pyskl/datasets/pipelines/{sampling,augmentations,multi_modality,heatmap_related}.py`
(tests/test_reference_sampling.py compares each with a transcription of that code).

PoseC3D, `configs/posec3d/slowonly_r50_ntu60_xsub/joint.py`, in these functions (xy: `skeleton/color_xy`
at the sampled frames, (B, T, M, V, 2); valid: (B, T, M, V)):

    frames = uniform_sample_frames(num_frames, 48, train=True, uniforms=u)      # (B, 48); u (B, 1, 51)
    box = pose_compact_box(xy, valid, img_shape=(1080, 1920))                  # PoseCompact, hw_ratio 1
    h, w = short_side_size(box[:, 3] - box[:, 1], box[:, 2] - box[:, 0], 64)   # Resize(scale=(-1, 64))
    xy = xy_to_grid(xy, valid, box, (h, w))
    crop = random_resized_crop_box(h, w, uniforms=v)                           # area 0.56-1; v (B, 22)
    xy = flip_xy(xy_to_grid(xy, valid, crop, (56, 56)), 56, flip, index)      # Resize 56², Flip(0.5)
    # -> model.data.heatmaps.joint_heatmaps(xy, scores, (56, 56))
    # test: uniform_sample_frames(num_frames, 48, 10, train=False); xy_to_grid(xy, valid, box, (64, 64));
    # heatmaps, then flip_heatmaps(heatmaps, index) as the second half of GeneratePoseTarget(double=True)

SlowOnly-R50 on RGB (`configs/rgbpose_conv3d/rgb_only.py`): MMUniformSampleFrames(RGB=8), MMCompact (the
same box, over every frame's keypoints), Resize 256², RandomResizedCrop(0.56-1) on the 256² image,
Resize 224², Flip(0.5), then `normalize_clips` (IMAGENET_MEAN / IMAGENET_STD). Test: 10 clips, the box
resized to 224², no crop. RGBPoseConv3D (`rgbpose_conv3d.py`): the same with Pose=32 frames beside
RGB=8 (the box over the 32 pose frames' keypoints), heatmaps at a quarter of the image (56² of 224²),
the flip shared by both; at test the box is resized to 256² (heatmaps 64²).

Randomness: every random function takes `uniforms`, a row of draws in [0, 1) per sample, as
`model.data.sampling` takes its choices from the rows of `epoch_randoms`: rows drawn per epoch from
`np.random.default_rng([seed, epoch, stream]).random((n, k))` (a stream of its own, k this module's
counts) make a sample's draws a pure function of (seed, epoch, sample index), whatever the batch or
process count; `torch.rand(..., generator=g)` works as well. A draw stands where PYSKL calls numpy:
randint(m) is floor(u * m), Python's random.randint(0, m) floor(u * (m + 1)), choice(m, k,
replace=False) the k smallest of m uniforms. Given the same draws the result is PYSKL's; the draws
themselves are not numpy's stream. The test-mode sampler is the exception: PYSKL reseeds numpy with 255
for every sample, and this reruns those exact draws.

What the store changes (its `rgb/frames` hold 32 crops per video, the centres of 32 equal segments, at
`rgb/frame_index`; the skeleton keeps every frame with an actor, at `skeleton/frame_index`):
- RGB frames: PYSKL samples 8 frames of the whole video (one at random in each eighth). Here the same
  sampler runs over the 32 stored frames (`num_frames` = stored frames, `rgb_clips.stored_frames`): one
  stored frame at random out of each 4, so the instants are those of the 32-frame grid, not any frame of
  the eighth; at test every video with 32 stored frames gets the same stored positions (PYSKL's seeded
  offsets depend on the video's length). A `--frames all` store has every frame, and the rule is exact.
- Pose frames: sampled over the kept skeleton frames (`samples/num_frames`), exactly as PYSKL samples
  its per-frame HRNet keypoints, except that frames with no actor were dropped by the store. PYSKL draws
  the Pose frames independently of the RGB ones (MMUniformSampleFrames calls the sampler once per
  modality), so they are not the same instants in PYSKL either. To take the skeleton at the RGB frames'
  instants instead, match `rgb/frame_index` against `skeleton/frame_index`
  (`model.data.rgb_clips.match_frames`; -1 where no actor was seen at that frame).
- The box: MMCompact crops the 1920x1080 video around the keypoints (black outside the image); the
  store's frames are already its own person crop (`rgb/crop_box`: margin 0.25 of the extent per side,
  squared, moved inside the frame; PYSKL pads 0.125 per side). `box_in_crop` places PYSKL's box in the
  stored crop's pixels; where it reaches past the stored crop, those pixels were not stored.
- Keypoints: PYSKL's NTU keypoints are HRNet's 17 COCO joints with detector scores; here the Kinect's 25
  joints (`skeleton/color_xy`) with tracking states (`heatmaps.tracking_scores`), hence KINECT_LEFT and
  KINECT_RIGHT in place of the config's COCO left_kp / right_kp.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from model.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MIRROR_JOINTS  # the configs' img_norm_cfg

TEST_SEED = 255  # UniformSampleFrames(seed=255): the test sampler reseeds numpy with it per sample
COMPACT_PADDING, COMPACT_THRESHOLD = 0.25, 10  # PoseCompact / MMCompact defaults
CROP_AREA = (0.56, 1.0)  # RandomResizedCrop(area_range=...) of the PoseC3D and RGB configs
CROP_ASPECT = (3 / 4, 4 / 3)  # its default aspect_ratio_range
CROP_ATTEMPTS = 10  # get_crop_bbox's max_attempts
CROP_DRAWS = 2 * CROP_ATTEMPTS + 2  # aspects, areas, then the x and y offsets

# Kinect v2 joints (0-based) that swap under a horizontal flip, as PYSKL's left_kp / right_kp: each left
# joint is paired with its mirror image in `transforms.MIRROR_JOINTS` (shoulder 4 <-> 8, hand tip 21 <-> 23)
KINECT_LEFT = tuple(j for j, m in enumerate(MIRROR_JOINTS) if m > j)
KINECT_RIGHT = tuple(MIRROR_JOINTS[j] for j in KINECT_LEFT)


# --- UniformSampleFrames ------------------------------------------------------------------------------

def sample_draws(clip_len: int) -> int:
    """Uniforms one training clip of `clip_len` frames takes: the window's share and start, then
    clip_len + 1 for the frames."""
    return clip_len + 3


def _interval(p_interval: float | tuple[float, float]) -> tuple[float, float]:
    return (p_interval, p_interval) if isinstance(p_interval, int | float) else tuple(p_interval)


def uniform_sample_frames(num_frames: Tensor, clip_len: int, num_clips: int = 1, *, train: bool,
                          uniforms: Tensor | None = None, p_interval: float | tuple[float, float] = 1.0,
                          seed: int = TEST_SEED) -> Tensor:
    """PYSKL's UniformSampleFrames: frame indices (B, num_clips * clip_len) int64 in [0, num_frames).

    num_frames (B,) frames of each sample (at least 1: PYSKL takes the indices modulo it). Each clip
    takes a window of int(r * n) frames, r uniform in p_interval, at a random offset (the whole sequence
    for the default 1, which the PoseC3D and RGBPose configs keep). A window of 2 * clip_len frames or
    more gives one frame at random from each of clip_len equal segments; clip_len to 2 * clip_len - 1
    frames, clip_len consecutive frames with (window - clip_len) random one-frame skips; a shorter
    window, clip_len consecutive frames from a random start (test: clip k's fixed start), wrapping round
    the whole sequence.

    train: uniforms (B, num_clips, sample_draws(clip_len)) in [0, 1) (see the module docstring); the
    result is on their device. A window of 0 frames (r * n < 1), where PYSKL fails, takes 1 frame here.
    test: PYSKL's draws after np.random.seed(seed), exactly; a pure function of (n, clip_len,
    num_clips, p_interval, seed), computed once per distinct n on the host (num_frames is read back).
    """
    lo, hi = _interval(p_interval)
    if not train:
        rows = [_test_clips(int(n), clip_len, num_clips, lo, hi, seed) for n in num_frames.tolist()]
        return torch.from_numpy(np.stack(rows)).to(num_frames.device)
    if uniforms is None:
        raise ValueError("uniform_sample_frames(train=True) needs uniforms (B, num_clips, clip_len + 3)")
    u = uniforms.double()  # (B, C, L + 3)
    dev = u.device
    n = num_frames.to(dev).long().clamp_min(1)[:, None]  # (B, 1)
    length = ((u[..., 0] * (hi - lo) + lo) * n).floor().long().clamp_min(1)  # (B, C): int(ratio * n)
    offset = (u[..., 1] * (n - length + 1)).floor().long()  # (B, C)
    k = torch.arange(clip_len, device=dev)
    window = length[..., None]  # (B, C, 1)
    run = (u[..., 2:3] * window).floor().long() + k  # (B, C, L): short window
    rank = u[..., 2:].argsort(dim=-1).argsort(dim=-1)  # (B, C, L + 1): which of the L + 1 gaps skip
    skips = (rank < window - clip_len).long().cumsum(dim=-1)[..., :-1]
    spread = k + skips  # (B, C, L)
    edges = torch.arange(clip_len + 1, device=dev) * window // clip_len  # (B, C, L + 1)
    segments = edges[..., :-1] + (u[..., 2:2 + clip_len] * edges.diff(dim=-1)).floor().long()
    inds = torch.where(window < clip_len, run, torch.where(window < 2 * clip_len, spread, segments))
    return ((inds + offset[..., None]) % n[..., None]).flatten(1)  # (B, C * L)


@functools.lru_cache(maxsize=4096)
def _test_clips(n: int, clip_len: int, num_clips: int, lo: float, hi: float, seed: int) -> np.ndarray:
    """(num_clips * clip_len,) int64: the test sampler's frames of a sequence of n frames. The draws
    are numpy's legacy stream after seeding, call for call as PYSKL makes them."""
    draws = np.random.RandomState(seed)
    clips = []
    for clip in range(num_clips):
        length = int((draws.rand() * (hi - lo) + lo) * n)
        offset = draws.randint(n - length + 1)
        if length < clip_len:
            start = clip if length < num_clips else clip * length // num_clips
            inds = np.arange(start, start + clip_len)
        elif length < 2 * clip_len:
            step = np.zeros(clip_len + 1, np.int64)
            step[draws.choice(clip_len + 1, length - clip_len, replace=False)] = 1
            inds = np.arange(clip_len) + np.cumsum(step)[:-1]
        else:
            edges = np.arange(clip_len + 1) * length // clip_len
            inds = edges[:-1] + draws.randint(np.diff(edges))
        clips.append((inds + offset) % max(n, 1))
    out = np.concatenate(clips).astype(np.int64)
    out.flags.writeable = False  # shared by the cache
    return out


# --- PoseCompact / MMCompact and Resize ---------------------------------------------------------------

def pose_compact_box(xy: Tensor, valid: Tensor, *, img_shape: tuple[int, int],
                     padding: float = COMPACT_PADDING, threshold: float = COMPACT_THRESHOLD,
                     hw_ratio: tuple[float, float] | None = (1.0, 1.0), allow_imgpad: bool = True) -> Tensor:
    """PoseCompact's (and MMCompact's) box around a clip's keypoints: (B, 4) int64 x0, y0, x1, y1.

    xy (B, ..., 2) pixels of an image of img_shape (h, w), float32 as PYSKL keeps them; valid (B, ...)
    bool, the keypoints that count (PYSKL counts a coordinate that is not exactly 0, and a NaN as 0:
    equal where missing keypoints are zero). The tight box of the valid keypoints over every frame and
    person, grown about its centre by `padding` of its size, its height raised to hw_ratio[0] x its
    width and its width to its height / hw_ratio[1] (hw_ratio (1, 1): a square), each edge truncated
    towards zero (Python's int()); clamped to the image unless allow_imgpad. A tight box narrower or
    lower than `threshold` pixels (or no valid keypoint) gives the whole image (0, 0, w, h).
    The extremes' sums and differences are float32 and the rest float64, as numpy 1.x (PYSKL's) promotes
    float32 scalars mixed with Python numbers.
    """
    h, w = img_shape
    xy = xy.float()
    ok = (valid & torch.isfinite(xy).all(dim=-1)).flatten(1)  # (B, P)
    x, y = xy[..., 0].flatten(1), xy[..., 1].flatten(1)
    min_x, max_x = torch.where(ok, x, math.inf).amin(1), torch.where(ok, x, -math.inf).amax(1)  # (B,)
    min_y, max_y = torch.where(ok, y, math.inf).amin(1), torch.where(ok, y, -math.inf).amax(1)
    whole = ((max_x - min_x) < threshold) | ((max_y - min_y) < threshold)  # also: no valid keypoint
    cx, cy = (max_x + min_x).double() / 2, (max_y + min_y).double() / 2
    half_w = (max_x - min_x).double() / 2 * (1 + padding)
    half_h = (max_y - min_y).double() / 2 * (1 + padding)
    if hw_ratio is not None:
        half_h = torch.maximum(hw_ratio[0] * half_w, half_h)
        half_w = torch.maximum(1 / hw_ratio[1] * half_h, half_w)
    x0, x1, y0, y1 = cx - half_w, cx + half_w, cy - half_h, cy + half_h
    if not allow_imgpad:
        x0, y0, x1, y1 = x0.clamp_min(0), y0.clamp_min(0), x1.clamp_max(w), y1.clamp_max(h)
    edges = [torch.where(whole, edge, v) for edge, v in zip((0.0, 0.0, w, h), (x0, y0, x1, y1), strict=True)]
    return torch.stack(edges, dim=1).trunc().long()  # (B, 4)


def short_side_size(h: Tensor, w: Tensor, short: int) -> tuple[Tensor, Tensor]:
    """Resize(scale=(-1, short)) (keep_ratio, mmcv.rescale_size): the (h, w) int64 (B,) each that images
    of (h, w) (B,) take, the shorter side scaled to `short`, each side int(side * factor + 0.5)."""
    h, w = h.double(), w.double()
    factor = short / torch.minimum(h, w)
    return (h * factor + 0.5).long(), (w * factor + 0.5).long()


def xy_to_grid(xy: Tensor, valid: Tensor, box: Tensor, size: tuple[int, int] | tuple[Tensor, Tensor]
               ) -> Tensor:
    """Keypoints in the pixels of an (H, W) image made from `box` of their image, as PoseCompact (or a
    crop) then Resize(keep_ratio=False) move them: x -> (x - x0) * float32(W / (x1 - x0)), y likewise.

    xy (B, ..., 2); valid (B, ...) bool; box (B, 4) x0, y0, x1, y1 (pose_compact_box,
    random_resized_crop_box); size (H, W) ints or (B,) tensors each -> (B, ..., 2) float32, 0 where not
    valid (PYSKL keeps a missing keypoint at 0). Exact for PoseCompact + Resize; after a crop PYSKL's
    keypoints turn float64 (its box is int64), a difference of ~1e-5 pixel.
    """
    shape = (xy.shape[0],) + (1,) * (xy.ndim - 2)  # broadcasts over the keypoint axes
    box = box.to(xy.device).double()
    out_h, out_w = (s.double() if isinstance(s, Tensor) else float(s) for s in size)
    scale_x = (out_w / (box[:, 2] - box[:, 0])).float().view(shape)  # PYSKL's float32 scale_factor
    scale_y = (out_h / (box[:, 3] - box[:, 1])).float().view(shape)
    x = (xy[..., 0].float() - box[:, 0].float().view(shape)) * scale_x
    y = (xy[..., 1].float() - box[:, 1].float().view(shape)) * scale_y
    return torch.where(valid[..., None], torch.stack([x, y], dim=-1), 0.0)


def box_in_crop(box: Tensor, crop_box: Tensor, video_size: Tensor, size: int,
                frame_size: tuple[int, int] = (1920, 1080)) -> Tensor:
    """A box (B, 4) x0, y0, x1, y1 in colour-camera pixels (`skeleton/color_xy`'s) -> (B, 4) float64 in
    the pixels of the stored S x S crop (S = size) whose `rgb/crop_box` (B, 4) and `rgb/video_size`
    (B, 2) are given: where PYSKL's MMCompact box lies in the stored frames (as
    `ntu_pipeline.video.crop.project_to_crop` places joints)."""
    crop_box, video_size = crop_box.double(), video_size.double()
    scale = torch.stack([video_size[:, 0] / frame_size[0], video_size[:, 1] / frame_size[1]], dim=1)
    side = crop_box[:, 2:] - crop_box[:, :2]  # (B, 2)
    corners = box.double().view(-1, 2, 2)  # (B, 2 corners, 2)
    out = (corners * scale[:, None] - crop_box[:, None, :2]) * size / side[:, None]
    return out.reshape(-1, 4)


# --- Flip -----------------------------------------------------------------------------------------------

def flip_xy(xy: Tensor, width: float | Tensor, flip: Tensor | None = None, index: Tensor | None = None
            ) -> Tensor:
    """PYSKL's Flip on keypoints: x -> width - x where x is not 0 (0 marks a missing keypoint), then
    left and right joints swapped (KINECT_LEFT / KINECT_RIGHT). Not width - 1 - x: PYSKL flips
    keypoints so, while its image flip (and flip_heatmaps) moves pixel j to width - 1 - j.

    xy (B, ..., V, 2), V = 25; width: the image's, a number or (B,); flip (B,) bool: which samples
    (None: all). index: `transforms.mirror_index(xy.device)` made before the training steps (None makes
    it here, a host-to-device copy) -> (B, ..., V, 2).
    """
    if index is None:
        index = torch.tensor(MIRROR_JOINTS, device=xy.device)
    shape = (xy.shape[0],) + (1,) * (xy.ndim - 2)
    if isinstance(width, Tensor):
        width = width.to(xy.dtype).view(shape)
    x = torch.where(xy[..., 0] != 0, width - xy[..., 0], xy[..., 0])
    mirrored = torch.stack([x, xy[..., 1]], dim=-1).index_select(-2, index)
    if flip is None:
        return mirrored
    return torch.where(flip.view(shape + (1,)), mirrored, xy)


def flip_heatmaps(heatmaps: Tensor, index: Tensor | None = None) -> Tensor:
    """The flipped copy of GeneratePoseTarget(double=True): heatmaps (B, V, T, H, W) mirrored along W
    (column j -> W - 1 - j) with the joint channels swapped left/right -> (B, V, T, H, W). index as in
    flip_xy."""
    if index is None:
        index = torch.tensor(MIRROR_JOINTS, device=heatmaps.device)
    return heatmaps.flip(-1).index_select(1, index)


# --- RandomResizedCrop and Normalize --------------------------------------------------------------------

def random_resized_crop_box(h: int | Tensor, w: int | Tensor, *, uniforms: Tensor,
                            area_range: tuple[float, float] = CROP_AREA,
                            aspect_ratio_range: tuple[float, float] = CROP_ASPECT) -> Tensor:
    """RandomResizedCrop.get_crop_bbox: (B, 4) int64 x0, y0, x1, y1 (exclusive) in images of (h, w).

    h, w: ints or (B,); uniforms (B, CROP_DRAWS) in [0, 1): columns 0-9 the attempts' log-uniform
    aspects (w / h), 10-19 their areas (a share of h * w in area_range), 20-21 the offsets. The first
    attempt whose rounded size (half to even, as np.round) fits is placed at a uniform integer offset;
    if none fits, the centred square of side min(h, w).
    """
    u = uniforms.double()
    b, dev = u.shape[0], u.device
    h = h.to(dev).long() if isinstance(h, Tensor) else torch.full((b,), h, device=dev)  # a fill, no copy
    w = w.to(dev).long() if isinstance(w, Tensor) else torch.full((b,), w, device=dev)
    log_lo, log_hi = math.log(aspect_ratio_range[0]), math.log(aspect_ratio_range[1])
    aspect = (log_lo + (log_hi - log_lo) * u[:, :CROP_ATTEMPTS]).exp()  # (B, 10)
    lo, hi = area_range
    area = (lo + (hi - lo) * u[:, CROP_ATTEMPTS:2 * CROP_ATTEMPTS]) * (h * w)[:, None]
    crop_w, crop_h = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (crop_h <= h[:, None]) & (crop_w <= w[:, None])  # (B, 10)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first attempt that fits (0 if none)
    crop_w, crop_h = crop_w.gather(1, first)[:, 0], crop_h.gather(1, first)[:, 0]  # (B,)
    x0 = (u[:, -2] * (w - crop_w + 1)).floor().long()
    y0 = (u[:, -1] * (h - crop_h + 1)).floor().long()
    side = torch.minimum(h, w)
    found = fits.any(dim=1)
    x0, y0 = torch.where(found, x0, (w - side) // 2), torch.where(found, y0, (h - side) // 2)
    crop_w, crop_h = torch.where(found, crop_w, side), torch.where(found, crop_h, side)
    return torch.stack([x0, y0, x0 + crop_w, y0 + crop_h], dim=1)


def normalize_clips(clips: Tensor, dim: int = -1) -> Tensor:
    """Normalize(IMAGENET_MEAN, IMAGENET_STD, to_bgr=False): (x - mean) / std per RGB channel.

    clips: any layout with the 3 channels, RGB, along `dim` (-1 for the store's (B, T, H, W, 3), 1 for
    (B, 3, T, H, W)), uint8 or float in 0-255 units (crop_clips' [-1, 1] output is (x + 1) * 127.5 in
    them) -> float32, same shape and device.
    """
    shape = [1] * clips.ndim
    shape[dim] = 3
    mean, std = torch.empty(2, 3, device=clips.device)
    for c in range(3):  # filled on the device: a tensor made from the host list would be a copy, a wait
        mean[c], std[c] = IMAGENET_MEAN[c], IMAGENET_STD[c]
    return (clips.float() - mean.view(shape)) / std.view(shape)
