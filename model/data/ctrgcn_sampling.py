"""CTR-GCN's data path (`feeders/feeder_ntu.py`, `feeders/tools.py` of Uason-Chen/CTR-GCN) as pure batched
tensor functions, in its order: the valid frames, a crop of them resized to 64 frames, a random
rotation at training, then the stream (bone and motion). tests/test_reference_sampling.py compares each
with a transcription of that code.

    x = to_model_layout(joints)                                    # (B, 3, T, 25, 2), transforms.py
    x = valid_crop_resize(x, num_frames, TRAIN_P_INTERVAL, uniforms=u[:, :2])   # (B, 3, 64, 25, 2)
    x = random_rotation(x, uniforms=u[:, 2:5])                    # training only
    x = stream(x, "bone_motion")                                  # or "joint", "bone", "joint_motion"
    # test: valid_crop_resize(x, num_frames, TEST_P_INTERVAL), no rotation

`joints` are the store's `skeleton/joints` (B, T, 2, 25, 3) and `num_frames` its `samples/num_frames`:
the store keeps a sample's frames from 0 on and drops frames with no actor, so that count is the
feeder's `valid_frame_num` (frames with any non-zero coordinate). For resident packed skeletons
(`skeletons.py`), `crop_resize_taps` gives the two frames and the weight of each output frame. CTR-GCN's
own arrays were translated to the first frame's body centre by its preprocessing script before the
feeder; that is the loader's normalisation (`ntu_pipeline.skeleton.normalize`), not a step here.

Randomness as in `pyskl_sampling`: `uniforms` rows in [0, 1) per sample (a pure function of (seed, epoch,
sample index) when drawn per epoch from `np.random.default_rng([seed, epoch, stream])`). The crop takes
2 (its share of the frames, its start: np.random.randint(0, m) is floor(u * m)), the rotation 3 (its
angles about x, y, z: torch's uniform_(-theta, theta) is u * 2 theta - theta).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ntu_pipeline.skeleton.joints import (
    BONES,  # the 24 NTU bones, (child, parent): CTR-GCN's ntu_pairs, 0-based
)

TRAIN_P_INTERVAL = (0.5, 1.0)  # config/nturgbd-cross-subject/default.yaml
TEST_P_INTERVAL = (0.95,)
WINDOW = 64  # window_size
MIN_CROP = 64  # valid_crop_resize's lower bound on a training crop, fixed in its code (not the window)
ROTATION = 0.3  # random_rot's theta, radians
CROP_DRAWS, ROTATION_DRAWS = 2, 3
STREAMS = ("joint", "bone", "joint_motion", "bone_motion")
NUM_JOINTS = 25


def crop_resize_taps(valid_frames: Tensor, p_interval: tuple[float, ...], window: int = WINDOW, *,
                     uniforms: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Where valid_crop_resize reads each output frame: (first, second, weight), each (B, window); output
    frame t = (1 - weight) * frame[first] + weight * frame[second] (int64 frame numbers, float32 weight).

    valid_frames (B,): frames of each sample (at least 1 is assumed: the reference fails on 0).
    p_interval (p,): the centred crop, int((1 - p) * n / 2) frames off each end (test, (0.95,)).
    p_interval (lo, hi): a crop of int(n * r) frames, r = lo + u0 * (hi - lo), at least MIN_CROP and at
    most n, starting at floor(u1 * (n - length + 1)); uniforms (B, CROP_DRAWS) (training).
    The crop is stretched to `window` frames as F.interpolate(mode="bilinear", align_corners=False) does
    on the time axis (source (t + 0.5) * length / window - 0.5, clamped at 0, in float32).
    """
    dev = valid_frames.device if uniforms is None else uniforms.device
    n = valid_frames.to(dev).long().clamp_min(1)  # (B,)
    if len(p_interval) == 1:
        bias = ((1 - p_interval[0]) * n.double() / 2).long()  # int() of a non-negative number
        begin, length = bias, n - 2 * bias
    elif len(p_interval) == 2:
        if uniforms is None:
            raise ValueError("a random crop (p_interval (lo, hi)) needs uniforms (B, 2)")
        lo, hi = p_interval
        u = uniforms.double()
        share = u[:, 0] * (hi - lo) + lo
        length = (n * share).floor().long().clamp_min(MIN_CROP).minimum(n)
        begin = (u[:, 1] * (n - length + 1)).floor().long()
    else:
        raise ValueError(f"p_interval holds one share (test) or two (training), got {p_interval}")
    scale = (length.float() / window)[:, None]  # (B, 1), float32 as PyTorch's kernel
    t = torch.arange(window, dtype=torch.float32, device=dev)
    source = (scale * (t + 0.5) - 0.5).clamp_min(0)  # (B, window)
    step = source.long()  # truncation: source >= 0
    weight = source - step
    second = (step + 1).minimum(length[:, None] - 1)
    return begin[:, None] + step, begin[:, None] + second, weight


def valid_crop_resize(data: Tensor, valid_frames: Tensor, p_interval: tuple[float, ...],
                      window: int = WINDOW, *, uniforms: Tensor | None = None) -> Tensor:
    """tools.valid_crop_resize, batched: skeletons (B, C, T, V, M) whose first valid_frames (B,) frames
    are the sample's -> (B, C, window, V, M) float32: a crop of those frames (`crop_resize_taps`),
    linearly resized to `window` frames."""
    valid_frames = valid_frames.clamp_max(data.shape[2])
    first, second, weight = crop_resize_taps(valid_frames, p_interval, window, uniforms=uniforms)
    x = data.float().movedim(2, 1)  # (B, T, C, V, M)
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    weight = weight[..., None, None, None]  # (B, window, 1, 1, 1)
    out = (1 - weight) * x[rows, first] + weight * x[rows, second]  # (B, window, C, V, M)
    return out.movedim(1, 2)


def rotation_matrices(angles: Tensor) -> Tensor:
    """tools._rot: (B, 3) angles about x, y, z -> (B, 3, 3) Rz @ Ry @ Rx, each in CTR-GCN's sign
    convention (Rx = [[1, 0, 0], [0, c, s], [0, -s, c]], Ry = [[c, 0, -s], [0, 1, 0], [s, 0, c]],
    Rz = [[c, s, 0], [-s, c, 0], [0, 0, 1]]: rotations of the frame, not of the points)."""
    c, s = angles.cos(), angles.sin()  # (B, 3)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def matrix(*rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)  # (B, 3, 3)

    rx = matrix((one, zero, zero), (zero, c[:, 0], s[:, 0]), (zero, -s[:, 0], c[:, 0]))
    ry = matrix((c[:, 1], zero, -s[:, 1]), (zero, one, zero), (s[:, 1], zero, c[:, 1]))
    rz = matrix((c[:, 2], s[:, 2], zero), (-s[:, 2], c[:, 2], zero), (zero, zero, one))
    return rz @ ry @ rx


def random_rotation(data: Tensor, theta: float = ROTATION, *, uniforms: Tensor) -> Tensor:
    """tools.random_rot, batched: skeletons (B, 3, T, V, M) turned by one rotation per sample, angles
    about x, y, z uniform in [-theta, theta) from uniforms (B, ROTATION_DRAWS) -> (B, 3, T, V, M)."""
    angles = uniforms.to(data.dtype) * (2 * theta) - theta  # (B, 3)
    return torch.einsum("bij,bjtvm->bitvm", rotation_matrices(angles), data)


def bone_parents(device: torch.device | str) -> Tensor:
    """(25,) int64 on `device`: each joint's parent in BONES, joint 20 (the root) its own, for `bones`.
    Make it once, before the training steps: it is a host-to-device copy, which waits."""
    parent = list(range(NUM_JOINTS))
    for child, up in BONES:
        parent[child] = up
    return torch.tensor(parent, device=device)


def bones(data: Tensor, parents: Tensor | None = None) -> Tensor:
    """Bone vectors as the feeder's `bone` option: joint minus its parent (BONES), zero at the root
    (CTR-GCN's pair (21, 21)). data (B, C, T, V, M) -> (B, C, T, V, M); parents: bone_parents, made ahead
    (None makes it here)."""
    if parents is None:
        parents = bone_parents(data.device)
    return data - data.index_select(3, parents)


def motion(data: Tensor) -> Tensor:
    """The feeder's `vel` option: x_{t+1} - x_t, zero at the last frame. (B, C, T, V, M) -> the same.
    Unmasked, unlike `model.data.motion.skeleton_motion`: an actor entering or leaving makes a step."""
    return torch.cat([data[:, :, 1:] - data[:, :, :-1], torch.zeros_like(data[:, :, :1])], dim=2)


def stream(data: Tensor, name: str, parents: Tensor | None = None) -> Tensor:
    """CTR-GCN's input stream `name` (STREAMS) of skeletons (B, C, T, V, M), after crop and rotation:
    "joint" as is, "bone" (bone=True), "joint_motion" (vel=True), "bone_motion" (both: the bones' motion)."""
    if name == "joint":
        return data
    if name == "bone":
        return bones(data, parents)
    if name == "joint_motion":
        return motion(data)
    if name == "bone_motion":
        return motion(bones(data, parents))
    raise ValueError(f"unknown stream {name!r}; expected one of {STREAMS}")
