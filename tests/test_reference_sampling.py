"""The reference networks' sampling and augmentation (model/data/pyskl_sampling.py, ctrgcn_sampling.py)
against plain transcriptions of PYSKL's and CTR-GCN's code, fed the same draws, plus properties that
hold whatever the draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.data import ctrgcn_sampling as ctr
from model.data import pyskl_sampling as ps
from model.data.transforms import MIRROR_JOINTS, mirror_index

# --- transcriptions of the references -------------------------------------------------------------------


class FedDraws:
    """Stands in for np.random inside a transcription: hands out a row of given uniforms (C, L + 3),
    clip by clip, from the columns uniform_sample_frames reads (0 share, 1 offset, 2.. the frames)."""

    def __init__(self, row: np.ndarray):
        self.row, self.clip, self.scalars = row, -1, 0

    def rand(self):  # the first draw of every clip
        self.clip, self.scalars = self.clip + 1, 0
        return self.row[self.clip, 0]

    def randint(self, low, high=None):
        low, high = (0, low) if high is None else (low, high)
        if np.ndim(high):
            u = self.row[self.clip, 2:2 + len(high)]
            return low + np.floor(u * (high - low)).astype(np.int64)
        self.scalars += 1
        return low + int(math.floor(self.row[self.clip, self.scalars] * (high - low)))

    def choice(self, n, k, replace):
        assert not replace
        return np.argsort(self.row[self.clip, 2:2 + n], kind="stable")[:k]


def pyskl_clips(num_frames, clip_len, num_clips, p_interval, rng, test):
    """UniformSampleFrames._get_train_clips / _get_test_clips and the final np.mod, as PYSKL has them;
    rng: np.random itself (test) or FedDraws (train)."""
    total = num_frames
    allinds = []
    for i in range(num_clips):
        old_num_frames = num_frames
        pi = p_interval
        ratio = rng.rand() * (pi[1] - pi[0]) + pi[0]
        num_frames = int(ratio * num_frames)
        off = rng.randint(old_num_frames - num_frames + 1)
        if num_frames < clip_len:
            if test:
                start = i if num_frames < num_clips else i * num_frames // num_clips
            else:
                start = rng.randint(0, num_frames)
            inds = np.arange(start, start + clip_len)
        elif clip_len <= num_frames < 2 * clip_len:
            basic = np.arange(clip_len)
            inds = rng.choice(clip_len + 1, num_frames - clip_len, replace=False)
            offset = np.zeros(clip_len + 1, dtype=np.int64)
            offset[inds] = 1
            offset = np.cumsum(offset)
            inds = basic + offset[:-1]
        else:
            bids = np.array([i * num_frames // clip_len for i in range(clip_len + 1)])
            bsize = np.diff(bids)
            bst = bids[:clip_len]
            offset = rng.randint(bsize)
            inds = bst + offset
        allinds.append(inds + off)
        num_frames = old_num_frames
    return np.mod(np.concatenate(allinds), total)


def pyskl_compact(kp, img_shape, padding=0.25, threshold=10, hw_ratio=(1.0, 1.0), allow_imgpad=True):
    """PoseCompact.__call__ (MMCompact._get_box): (box, keypoints moved), kp (..., 2) float32. numpy 1.x
    (PYSKL's) turned a float32 scalar op a Python number into float64; numpy 2 keeps float32, so the
    promotion is spelt out."""
    h, w = img_shape
    kp = kp.copy()
    kp[np.isnan(kp)] = 0.0
    kp_x, kp_y = kp[..., 0], kp[..., 1]
    min_x = np.min(kp_x[kp_x != 0], initial=np.inf)
    min_y = np.min(kp_y[kp_y != 0], initial=np.inf)
    max_x = np.max(kp_x[kp_x != 0], initial=-np.inf)
    max_y = np.max(kp_y[kp_y != 0], initial=-np.inf)
    if max_x - min_x < threshold or max_y - min_y < threshold:
        return (0, 0, w, h), kp
    center = (np.float64(max_x + min_x) / 2, np.float64(max_y + min_y) / 2)
    half_width = np.float64(max_x - min_x) / 2 * (1 + padding)
    half_height = np.float64(max_y - min_y) / 2 * (1 + padding)
    if hw_ratio is not None:
        half_height = max(hw_ratio[0] * half_width, half_height)
        half_width = max(1 / hw_ratio[1] * half_height, half_width)
    min_x, max_x = center[0] - half_width, center[0] + half_width
    min_y, max_y = center[1] - half_height, center[1] + half_height
    if not allow_imgpad:
        min_x, min_y = int(max(0, min_x)), int(max(0, min_y))
        max_x, max_y = int(min(w, max_x)), int(min(h, max_y))
    else:
        min_x, min_y = int(min_x), int(min_y)
        max_x, max_y = int(max_x), int(max_y)
    kp_x[kp_x != 0] -= min_x
    kp_y[kp_y != 0] -= min_y
    return (min_x, min_y, max_x, max_y), kp


def pyskl_resize(kp, img_shape, new_w, new_h):
    """Resize(keep_ratio=False) on keypoints."""
    img_h, img_w = img_shape
    return kp * np.array([new_w / img_w, new_h / img_h], dtype=np.float32)


def pyskl_crop_bbox(img_shape, area_range, aspect_ratio_range, u, max_attempts=10):
    """RandomResizedCrop.get_crop_bbox, its np.random.uniform and random.randint fed from u (22,)."""
    img_h, img_w = img_shape
    area = img_h * img_w
    min_ar, max_ar = aspect_ratio_range
    aspect_ratios = np.exp(np.log(min_ar) + (np.log(max_ar) - np.log(min_ar)) * u[:max_attempts])
    target_areas = (area_range[0] + (area_range[1] - area_range[0]) * u[max_attempts:2 * max_attempts]) * area
    candidate_crop_w = np.round(np.sqrt(target_areas * aspect_ratios)).astype(np.int32)
    candidate_crop_h = np.round(np.sqrt(target_areas / aspect_ratios)).astype(np.int32)
    for i in range(max_attempts):
        crop_w = candidate_crop_w[i]
        crop_h = candidate_crop_h[i]
        if crop_h <= img_h and crop_w <= img_w:
            x_offset = int(math.floor(u[-2] * (img_w - crop_w + 1)))  # random.randint(0, img_w - crop_w)
            y_offset = int(math.floor(u[-1] * (img_h - crop_h + 1)))
            return x_offset, y_offset, x_offset + crop_w, y_offset + crop_h
    crop_size = min(img_h, img_w)
    x_offset = (img_w - crop_size) // 2
    y_offset = (img_h - crop_size) // 2
    return x_offset, y_offset, x_offset + crop_size, y_offset + crop_size


def pyskl_flip_kps(kps, img_width, left_kp, right_kp):
    """Flip._flip_kps on kps (M, T, V, 2)."""
    kps = kps.copy()
    kp_x = kps[..., 0]
    kp_x[kp_x != 0] = img_width - kp_x[kp_x != 0]
    new_order = list(range(kps.shape[2]))
    for left, right in zip(left_kp, right_kp, strict=True):
        new_order[left] = right
        new_order[right] = left
    return kps[:, :, new_order]


def ctrgcn_valid_crop_resize(data_numpy, valid_frame_num, p_interval, window, u):
    """tools.valid_crop_resize; its np.random.rand and randint fed from u (2,)."""
    C, T, V, M = data_numpy.shape
    begin = 0
    end = valid_frame_num
    valid_size = end - begin
    if len(p_interval) == 1:
        p = p_interval[0]
        bias = int((1 - p) * valid_size / 2)
        data = data_numpy[:, begin + bias:end - bias, :, :]
        cropped_length = data.shape[1]
    else:
        p = u[0] * (p_interval[1] - p_interval[0]) + p_interval[0]
        cropped_length = np.minimum(np.maximum(int(np.floor(valid_size * p)), 64), valid_size)
        bias = int(math.floor(u[1] * (valid_size - cropped_length + 1)))
        data = data_numpy[:, begin + bias:begin + bias + cropped_length, :, :]
    data = torch.tensor(data, dtype=torch.float)
    data = data.permute(0, 2, 3, 1).contiguous().view(C * V * M, cropped_length)
    data = data[None, None, :, :]
    data = F.interpolate(data, size=(C * V * M, window), mode="bilinear", align_corners=False).squeeze()
    return data.contiguous().view(C, V, M, window).permute(0, 3, 1, 2).contiguous().numpy()


def ctrgcn_random_rot(data_numpy, rot):
    """tools.random_rot with its drawn angles rot (3,) given; tools._rot inlined."""
    data_torch = torch.from_numpy(data_numpy)
    C, T, V, M = data_torch.shape
    data_torch = data_torch.permute(1, 0, 2, 3).contiguous().view(T, C, V * M)
    rot = torch.stack([rot] * T, dim=0)
    cos_r, sin_r = rot.cos(), rot.sin()
    zeros = torch.zeros(rot.shape[0], 1)
    ones = torch.ones(rot.shape[0], 1)
    r1 = torch.stack((ones, zeros, zeros), dim=-1)
    rx2 = torch.stack((zeros, cos_r[:, 0:1], sin_r[:, 0:1]), dim=-1)
    rx3 = torch.stack((zeros, -sin_r[:, 0:1], cos_r[:, 0:1]), dim=-1)
    rx = torch.cat((r1, rx2, rx3), dim=1)
    ry1 = torch.stack((cos_r[:, 1:2], zeros, -sin_r[:, 1:2]), dim=-1)
    r2 = torch.stack((zeros, ones, zeros), dim=-1)
    ry3 = torch.stack((sin_r[:, 1:2], zeros, cos_r[:, 1:2]), dim=-1)
    ry = torch.cat((ry1, r2, ry3), dim=1)
    rz1 = torch.stack((cos_r[:, 2:3], sin_r[:, 2:3], zeros), dim=-1)
    r3 = torch.stack((zeros, zeros, ones), dim=-1)
    rz2 = torch.stack((-sin_r[:, 2:3], cos_r[:, 2:3], zeros), dim=-1)
    rz = torch.cat((rz1, rz2, r3), dim=1)
    rot = rz.matmul(ry).matmul(rx)
    data_torch = torch.matmul(rot, data_torch)
    return data_torch.view(T, C, V, M).permute(1, 0, 2, 3).contiguous().numpy()


# CTR-GCN's feeders/bone_pairs.py, 1-based
CTRGCN_NTU_PAIRS = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10), (12, 11),
    (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23), (21, 21),
    (23, 8), (24, 25), (25, 12),
)


def ctrgcn_feeder_streams(data_numpy, bone, vel):
    """The end of Feeder.__getitem__: bone, then vel."""
    if bone:
        bone_data_numpy = np.zeros_like(data_numpy)
        for v1, v2 in CTRGCN_NTU_PAIRS:
            bone_data_numpy[:, :, v1 - 1] = data_numpy[:, :, v1 - 1] - data_numpy[:, :, v2 - 1]
        data_numpy = bone_data_numpy
    if vel:
        data_numpy[:, :-1] = data_numpy[:, 1:] - data_numpy[:, :-1]
        data_numpy[:, -1] = 0
    return data_numpy


@pytest.fixture
def numpy_global_state():
    """PYSKL's test sampler seeds numpy's global generator: put it back afterwards."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# --- UniformSampleFrames --------------------------------------------------------------------------------

FRAME_COUNTS = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 95, 96, 97, 103, 150, 300]


@pytest.mark.parametrize("clip_len,num_clips,p_interval", [(8, 1, (1.0, 1.0)), (16, 3, (1.0, 1.0)),
                                                          (48, 2, (0.5, 1.0)), (5, 4, (0.25, 0.75))])
def test_uniform_sample_train_equals_pyskl(clip_len, num_clips, p_interval):
    rng = np.random.default_rng(3)
    counts = [n for n in FRAME_COUNTS * 4 if n * p_interval[0] >= 1]  # PYSKL fails on an empty window
    u = rng.random((len(counts), num_clips, ps.sample_draws(clip_len)))
    got = ps.uniform_sample_frames(torch.tensor(counts), clip_len, num_clips, train=True,
                                   uniforms=torch.from_numpy(u), p_interval=p_interval)
    assert got.shape == (len(counts), num_clips * clip_len) and got.dtype == torch.int64
    for i, n in enumerate(counts):
        want = pyskl_clips(n, clip_len, num_clips, p_interval, FedDraws(u[i]), test=False)
        np.testing.assert_array_equal(got[i].numpy(), want, err_msg=f"n={n}")


@pytest.mark.parametrize("clip_len,num_clips,p_interval", [(48, 10, (1.0, 1.0)), (8, 1, (1.0, 1.0)),
                                                          (32, 10, (1.0, 1.0)), (16, 4, (0.5, 1.0))])
def test_uniform_sample_test_equals_pyskl_seeded(numpy_global_state, clip_len, num_clips, p_interval):
    counts = FRAME_COUNTS + [299, 64, 20]
    got = ps.uniform_sample_frames(torch.tensor(counts), clip_len, num_clips, train=False,
                                   p_interval=p_interval)
    for i, n in enumerate(counts):
        np.random.seed(ps.TEST_SEED)
        want = pyskl_clips(n, clip_len, num_clips, p_interval, np.random, test=True)
        np.testing.assert_array_equal(got[i].numpy(), want, err_msg=f"n={n}")


def test_uniform_sample_segments_span_their_draws():
    """A long sequence: u = 0 takes each segment's first frame, u -> 1 its last, and every frame is
    inside its own segment for any u."""
    n, clip_len = torch.tensor([100, 103]), 8
    edges = [np.arange(clip_len + 1) * int(v) // clip_len for v in n]
    for fill, pick in ((0.0, lambda e: e[:-1]), (1 - 1e-12, lambda e: e[1:] - 1)):
        u = torch.full((2, 1, ps.sample_draws(clip_len)), fill, dtype=torch.float64)
        u[:, :, :2] = 0.0  # whole sequence, no offset
        got = ps.uniform_sample_frames(n, clip_len, train=True, uniforms=u)
        for row, e in zip(got.numpy(), edges, strict=True):
            np.testing.assert_array_equal(row, pick(e))
    u = torch.from_numpy(np.random.default_rng(0).random((2, 1, ps.sample_draws(clip_len))))
    for row, e in zip(ps.uniform_sample_frames(n, clip_len, train=True, uniforms=u).numpy(), edges,
                      strict=True):
        assert ((row >= e[:-1]) & (row < e[1:])).all()


def test_uniform_sample_short_and_medium_shapes():
    """clip_len <= n < 2 clip_len: increasing, distinct, steps of 1 or 2, (n - clip_len) steps of 2;
    n < clip_len: a run of consecutive frames wrapping round n."""
    clip_len = 16
    u = torch.from_numpy(np.random.default_rng(1).random((50, 1, ps.sample_draws(clip_len))))
    for n in (16, 20, 31):
        got = ps.uniform_sample_frames(torch.full((50,), n), clip_len, train=True, uniforms=u).numpy()
        steps = np.diff(got, axis=1)
        assert ((steps == 1) | (steps == 2)).all() and (got >= 0).all() and (got < n).all()
        assert (got[:, 0] <= 1).all()
        assert ((steps == 2).sum(axis=1) + got[:, 0] + (n - 1 - got[:, -1]) == n - clip_len).all()
    got = ps.uniform_sample_frames(torch.full((50,), 5), clip_len, train=True, uniforms=u).numpy()
    assert ((np.diff(got, axis=1) % 5) == 1).all()


def test_uniform_sample_rows_depend_only_on_their_sample():
    """A sample's frames are a function of its count and its own row of draws (the pure (seed, epoch,
    index) rule), whatever the batch holds; the test clips are fixed."""
    rows = np.random.default_rng([7, 2, 5]).random((6, 2, ps.sample_draws(12)))
    counts = torch.tensor([40, 9, 12, 300, 23, 1])
    whole = ps.uniform_sample_frames(counts, 12, 2, train=True, uniforms=torch.from_numpy(rows))
    alone = ps.uniform_sample_frames(counts[3:4], 12, 2, train=True, uniforms=torch.from_numpy(rows[3:4]))
    assert torch.equal(whole[3:4], alone)
    a = ps.uniform_sample_frames(counts, 12, 10, train=False)
    b = ps.uniform_sample_frames(counts.flip(0), 12, 10, train=False).flip(0)
    assert torch.equal(a, b) and not torch.equal(a[3, :12], a[3, 12:24])  # clips differ, samples don't
    with pytest.raises(ValueError, match="needs uniforms"):
        ps.uniform_sample_frames(counts, 12, train=True)


# --- PoseCompact, Resize, the box in the stored crop ---------------------------------------------------

def _random_pose(rng, b=6, t=5, m=2, v=25, missing=0.3):
    """xy (B, T, M, V, 2) float32 in the 1920x1080 frame (some past its edges), a share zeroed as missing."""
    centre = rng.uniform([200, 100], [1700, 980], (b, 1, 1, 1, 2))
    spread = rng.uniform(5, 400, (b, 1, 1, 1, 2))
    xy = (centre + spread * rng.standard_normal((b, t, m, v, 2))).astype(np.float32)
    valid = rng.random((b, t, m, v)) > missing
    xy[~valid] = 0.0
    return xy, valid


@pytest.mark.parametrize("hw_ratio,allow_imgpad", [((1.0, 1.0), True), ((1.0, 1.0), False), (None, True),
                                                   ((0.75, 1.5), False)])
def test_pose_compact_and_resize_equal_pyskl(hw_ratio, allow_imgpad):
    rng = np.random.default_rng(11)
    xy, valid = _random_pose(rng, b=40)
    xy[0, :, :, :, 0] = 700 + rng.random(xy.shape[1:4]) * 5  # narrower than the threshold
    xy[0][~valid[0]] = 0.0
    xy[1], valid[1] = 0.0, False  # no keypoint at all
    box = ps.pose_compact_box(torch.from_numpy(xy), torch.from_numpy(valid), img_shape=(1080, 1920),
                              hw_ratio=hw_ratio, allow_imgpad=allow_imgpad)
    grid = ps.xy_to_grid(torch.from_numpy(xy), torch.from_numpy(valid), box, (64, 48))
    for i in range(len(xy)):
        want_box, moved = pyskl_compact(xy[i], (1080, 1920), hw_ratio=hw_ratio, allow_imgpad=allow_imgpad)
        assert tuple(box[i].tolist()) == want_box
        shape = (want_box[3] - want_box[1], want_box[2] - want_box[0])
        want = pyskl_resize(moved, shape, 48, 64)
        assert grid.dtype == torch.float32 and np.array_equal(grid[i].numpy(), want), i
    assert tuple(box[0].tolist()) == (0, 0, 1920, 1080) and tuple(box[1].tolist()) == (0, 0, 1920, 1080)


def test_pose_compact_box_holds_the_valid_keypoints_only():
    rng = np.random.default_rng(2)
    xy, valid = _random_pose(rng, b=30)
    xy[:, 0, 0, 0] = (5000.0, -3000.0)  # far away, but not valid: ignored
    valid[:, 0, 0, 0] = False
    box = ps.pose_compact_box(torch.from_numpy(xy), torch.from_numpy(valid), img_shape=(1080, 1920))
    side = (box[:, 2:] - box[:, :2]).double()
    # hw_ratio (1, 1): square, up to int() of each edge (towards zero: one pixel each side of 0)
    assert ((side[:, 0] - side[:, 1]).abs() <= 2).all()
    grid = ps.xy_to_grid(torch.from_numpy(xy), torch.from_numpy(valid), box, (56, 56))
    inside = grid[torch.from_numpy(valid)]
    assert (inside >= 0).all() and (inside <= 56).all()
    assert (grid[~torch.from_numpy(valid)] == 0).all()


def test_short_side_size_equals_mmcv_rescale():
    h, w = torch.tensor([100, 57, 1080, 64, 333]), torch.tensor([100, 61, 1920, 63, 90])
    got_h, got_w = ps.short_side_size(h, w, 64)
    for i in range(len(h)):
        factor = min(np.inf / max(int(h[i]), int(w[i])), 64 / min(int(h[i]), int(w[i])))
        want = (int(int(w[i]) * factor + 0.5), int(int(h[i]) * factor + 0.5))  # mmcv's _scale_size
        assert (int(got_w[i]), int(got_h[i])) == want


def test_box_in_crop_places_the_box_as_project_to_crop_places_joints():
    from ntu_pipeline.video.crop import project_to_crop
    crop = torch.tensor([[400.0, -20.0, 1500.0, 1080.0], [0.0, 0.0, 960.0, 540.0]])
    video = torch.tensor([[1920, 1080], [960, 540]])
    box = torch.tensor([[600, 100, 1200, 700], [300, 200, 1500, 900]])
    got = ps.box_in_crop(box, crop, video, 256)
    for i in range(2):
        corners = project_to_crop(box[i].view(2, 2).numpy(), crop[i].numpy(), tuple(video[i].tolist()), 256)
        np.testing.assert_allclose(got[i].view(2, 2).numpy(), corners, rtol=1e-6)
    whole = ps.box_in_crop(crop[:1], crop[:1], video[:1], 256)
    assert torch.allclose(whole, torch.tensor([[0.0, 0.0, 256.0, 256.0]], dtype=torch.float64))


# --- Flip ---------------------------------------------------------------------------------------------------

def test_kinect_left_right_pairs():
    names = dict(zip(ps.KINECT_LEFT, ps.KINECT_RIGHT, strict=True))
    # ShoulderLeft/Right, HandLeft/Right, HipLeft/Right, FootLeft/Right, HandTipLeft/Right, ThumbLeft/Right
    assert {4: 8, 7: 11, 12: 16, 15: 19, 21: 23, 22: 24}.items() <= names.items()
    assert len(names) == 10 and not set(ps.KINECT_LEFT) & set(ps.KINECT_RIGHT)
    assert set(range(25)) - set(ps.KINECT_LEFT) - set(ps.KINECT_RIGHT) == {0, 1, 2, 3, 20}  # spine, head


def test_flip_xy_equals_pyskl_and_undoes_itself():
    rng = np.random.default_rng(4)
    xy, valid = _random_pose(rng, b=4)
    flip = torch.tensor([True, False, True, True])
    got = ps.flip_xy(torch.from_numpy(xy), 1920, flip, mirror_index("cpu"))
    for i in range(4):
        want = pyskl_flip_kps(xy[i].transpose(1, 0, 2, 3), 1920, ps.KINECT_LEFT, ps.KINECT_RIGHT)
        want = want.transpose(1, 0, 2, 3) if flip[i] else xy[i]
        assert np.array_equal(got[i].numpy(), want)
    back = ps.flip_xy(got, torch.full((4,), 1920.0), flip)
    assert torch.allclose(back, torch.from_numpy(xy), atol=1e-3)  # width - (width - x): float32 rounding


def test_flip_xy_leaves_a_mirror_symmetric_pose_unchanged():
    """Left joint j at x = c - d_j, its right mirror at c + d_j, the middle at c: the flip about the
    image of width 2c gives the same pose."""
    rng = np.random.default_rng(5)
    xy = np.zeros((1, 1, 1, 25, 2), np.float32)
    xy[..., 1] = rng.uniform(100, 900, 25)
    for left, right in zip(ps.KINECT_LEFT, ps.KINECT_RIGHT, strict=True):
        d = rng.uniform(10, 200)
        xy[..., left, 0], xy[..., right, 0] = 500 - d, 500 + d
        xy[..., right, 1] = xy[..., left, 1]
    xy[..., [0, 1, 2, 3, 20], 0] = 500
    assert torch.allclose(ps.flip_xy(torch.from_numpy(xy), 1000.0), torch.from_numpy(xy), atol=1e-3)


def test_flip_heatmaps_equals_pyskl_double():
    heat = torch.rand(2, 25, 3, 7, 9)  # (B, V, T, H, W)
    got = ps.flip_heatmaps(heat)
    index = np.arange(25)
    for left, right in zip(ps.KINECT_LEFT, ps.KINECT_RIGHT, strict=True):
        index[left], index[right] = right, left
    for b in range(2):
        pyskl = heat[b].transpose(0, 1).numpy()  # (T, V, H, W), GeneratePoseTarget's layout
        want = pyskl[..., ::-1][:, index]
        assert np.array_equal(got[b].transpose(0, 1).numpy(), want)
    assert torch.equal(ps.flip_heatmaps(got), heat)
    assert MIRROR_JOINTS == index.tolist()


# --- RandomResizedCrop, Normalize -----------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(64, 64), (64, 81), (256, 256), (10, 200), (57, 64)])
def test_random_resized_crop_equals_pyskl(h, w):
    u = np.random.default_rng(h * w).random((200, ps.CROP_DRAWS))
    u[:5, :2 * ps.CROP_ATTEMPTS] = 0.999  # the largest areas at the widest aspect: later attempts
    got = ps.random_resized_crop_box(h, w, uniforms=torch.from_numpy(u))
    for i in range(len(u)):
        assert tuple(got[i].tolist()) == pyskl_crop_bbox((h, w), ps.CROP_AREA, ps.CROP_ASPECT, u[i]), i
    assert (got[:, :2] >= 0).all() and (got[:, 2] <= w).all() and (got[:, 3] <= h).all()


def test_random_resized_crop_shapes_and_fallback():
    u = torch.from_numpy(np.random.default_rng(8).random((500, ps.CROP_DRAWS)))
    h, w = torch.full((500,), 256), torch.full((500,), 256)
    box = ps.random_resized_crop_box(h, w, uniforms=u).double()
    cw, ch = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    share = cw * ch / 256**2
    assert (share > 0.55).all() and (share < 1.0 + 1e-9).all()
    aspect = cw / ch
    assert (aspect > 3 / 4 - 0.02).all() and (aspect < 4 / 3 + 0.02).all()
    thin = ps.random_resized_crop_box(10, 200, uniforms=u[:3])  # nothing fits: the centred square
    assert thin.tolist() == [[95, 0, 105, 10]] * 3


def test_normalize_clips_uses_the_config_values():
    assert ps.IMAGENET_MEAN == (123.675, 116.28, 103.53) and ps.IMAGENET_STD == (58.395, 57.12, 57.375)
    clips = torch.randint(0, 256, (2, 3, 4, 5, 3), dtype=torch.uint8)  # (B, T, H, W, 3)
    want = (clips.numpy().astype(np.float32) - np.float32(ps.IMAGENET_MEAN)) / np.float32(ps.IMAGENET_STD)
    got = ps.normalize_clips(clips)
    assert got.dtype == torch.float32 and np.allclose(got.numpy(), want, atol=1e-6)
    channels_first = ps.normalize_clips(clips.permute(0, 4, 1, 2, 3), dim=1)
    assert torch.equal(channels_first, got.permute(0, 4, 1, 2, 3))


# --- CTR-GCN --------------------------------------------------------------------------------------------

def _skeletons(rng, counts, t=300):
    """(B, 3, T, 25, 2) float32, each sample's first counts[i] frames non-zero (actor 2 absent in some)."""
    data = np.zeros((len(counts), 3, t, 25, 2), np.float32)
    for i, n in enumerate(counts):
        data[i, :, :n] = rng.standard_normal((3, n, 25, 2))
        if i % 2:
            data[i, :, :n, :, 1] = 0.0
    return data


@pytest.mark.parametrize("p_interval", [ctr.TRAIN_P_INTERVAL, ctr.TEST_P_INTERVAL, (1.0,), (0.2, 0.6)])
def test_valid_crop_resize_equals_ctrgcn(p_interval):
    rng = np.random.default_rng(9)
    counts = [1, 2, 20, 63, 64, 65, 100, 150, 299, 300]
    data = _skeletons(rng, counts)
    u = rng.random((len(counts), ctr.CROP_DRAWS))
    valid = np.sum(data.sum(1).sum(-1).sum(-1) != 0, axis=1)  # the feeder's valid_frame_num, per sample
    assert valid.tolist() == counts
    got = ctr.valid_crop_resize(torch.from_numpy(data), torch.tensor(counts), p_interval,
                                uniforms=torch.from_numpy(u) if len(p_interval) == 2 else None)
    assert got.shape == (len(counts), 3, 64, 25, 2) and got.dtype == torch.float32
    for i, n in enumerate(counts):
        want = ctrgcn_valid_crop_resize(data[i], n, p_interval, 64, u[i])
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-6, atol=1e-6, err_msg=f"n={n}")


def test_valid_crop_resize_keeps_lines_and_whole_windows():
    """Frames at x = a + b t stay on that line (linear interpolation, inside the crop); a crop of
    exactly `window` frames is copied."""
    t = torch.arange(300, dtype=torch.float32)
    data = (2.0 + 0.5 * t).view(1, 1, 300, 1, 1).expand(3, 3, 300, 25, 2).contiguous()
    counts = torch.tensor([64, 80, 200])
    out = ctr.valid_crop_resize(data, counts, (1.0,))
    first, second, w = ctr.crop_resize_taps(counts, (1.0,))
    where = (1 - w) * first + w * second  # (B, 64) source positions
    assert torch.allclose(out[:, 0, :, 0, 0], 2.0 + 0.5 * where, atol=1e-4)
    assert torch.equal(out[0], data[0, :, :64])
    assert (where[1:, -1] <= counts[1:] - 1).all() and (where >= 0).all()


def test_random_rotation_equals_ctrgcn():
    rng = np.random.default_rng(10)
    data = _skeletons(rng, [30, 64, 64], t=64)
    u = torch.from_numpy(rng.random((3, ctr.ROTATION_DRAWS)).astype(np.float32))
    got = ctr.random_rotation(torch.from_numpy(data), uniforms=u)
    for i in range(3):
        angles = u[i] * (2 * ctr.ROTATION) - ctr.ROTATION
        np.testing.assert_allclose(got[i].numpy(), ctrgcn_random_rot(data[i], angles), rtol=1e-5, atol=1e-6)
    r = ctr.rotation_matrices(torch.from_numpy(rng.uniform(-3, 3, (5, 3))))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=r.dtype).expand(5, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(5, dtype=r.dtype))
    half = torch.full((3, 3), 0.5)  # angle 0
    assert torch.allclose(ctr.random_rotation(torch.from_numpy(data), uniforms=half), torch.from_numpy(data))


@pytest.mark.parametrize("name,bone,vel", [("joint", False, False), ("bone", True, False),
                                           ("joint_motion", False, True), ("bone_motion", True, True)])
def test_streams_equal_the_ctrgcn_feeder(name, bone, vel):
    data = _skeletons(np.random.default_rng(12), [64, 40], t=64)
    got = ctr.stream(torch.from_numpy(data), name, ctr.bone_parents("cpu"))
    for i in range(2):
        assert np.array_equal(got[i].numpy(), ctrgcn_feeder_streams(data[i].copy(), bone, vel))


def test_bones_follow_the_ntu_graph_and_motion_ends_at_zero():
    from model.networks.ctrgcn import NTU_INWARD
    assert tuple(ctr.BONES) == tuple(NTU_INWARD)
    one_based = sorted((c + 1, p + 1) for c, p in ctr.BONES)
    assert one_based == sorted(p for p in CTRGCN_NTU_PAIRS if p != (21, 21))
    data = torch.randn(2, 3, 10, 25, 2)
    b = ctr.bones(data)
    assert (b[:, :, :, 20] == 0).all() and torch.equal(b[:, :, :, 4], data[:, :, :, 4] - data[:, :, :, 20])
    m = ctr.motion(data)
    assert (m[:, :, -1] == 0).all() and torch.allclose(m.sum(2), data[:, :, -1] - data[:, :, 0], atol=1e-5)
    with pytest.raises(ValueError, match="unknown stream"):
        ctr.stream(data, "velocity")
    with pytest.raises(ValueError, match="needs uniforms"):
        ctr.valid_crop_resize(data, torch.tensor([10, 10]), ctr.TRAIN_P_INTERVAL)


def test_ctrgcn_path_from_store_layout():
    """The store's (B, T, M, V, 3) joints through the documented order, each sample's draws its own row."""
    rng = np.random.default_rng(13)
    joints = torch.from_numpy(_skeletons(rng, [50, 120, 300])).permute(0, 2, 4, 3, 1)  # (B, T, M, V, 3)
    x = joints.permute(0, 4, 1, 3, 2)  # transforms.to_model_layout
    u = torch.from_numpy(np.random.default_rng([0, 3, 2]).random((3, ctr.CROP_DRAWS + ctr.ROTATION_DRAWS)))
    counts = torch.tensor([50, 120, 300])

    def run(rows):
        y = ctr.valid_crop_resize(x[rows], counts[rows], ctr.TRAIN_P_INTERVAL, uniforms=u[rows, :2])
        return ctr.stream(ctr.random_rotation(y, uniforms=u[rows, 2:]), "bone_motion")

    whole = run(torch.arange(3))
    assert whole.shape == (3, 3, 64, 25, 2) and torch.isfinite(whole).all()
    assert torch.allclose(whole[1:2], run(torch.tensor([1])))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_results_stay_on_the_inputs_device_and_match_the_host(device):
    """Every function runs where its inputs are (no host tensor mixed in) and agrees with the host run."""
    rng = np.random.default_rng(14)
    xy, valid = (torch.from_numpy(a) for a in _random_pose(rng, b=8))
    counts = torch.tensor([5, 20, 40, 64, 90, 120, 300, 1])
    u = torch.from_numpy(rng.random((8, 1, ps.sample_draws(16))))
    crop_u = torch.from_numpy(rng.random((8, ps.CROP_DRAWS)))
    joints = torch.from_numpy(_skeletons(rng, counts.tolist()))
    ctr_u = torch.from_numpy(rng.random((8, ctr.CROP_DRAWS + ctr.ROTATION_DRAWS)))
    flip = torch.arange(8) % 2 == 0

    def run(d):
        box = ps.pose_compact_box(xy.to(d), valid.to(d), img_shape=(1080, 1920))
        h, w = ps.short_side_size(box[:, 3] - box[:, 1], box[:, 2] - box[:, 0], 64)
        grid = ps.xy_to_grid(xy.to(d), valid.to(d), box, (h, w))
        crop = ps.random_resized_crop_box(h, w, uniforms=crop_u.to(d))
        grid = ps.flip_xy(ps.xy_to_grid(grid, valid.to(d), crop, (56, 56)), 56, flip.to(d), mirror_index(d))
        draws = ctr_u.to(d)
        x = ctr.valid_crop_resize(joints.to(d), counts.to(d), ctr.TRAIN_P_INTERVAL, uniforms=draws[:, :2])
        x = ctr.stream(ctr.random_rotation(x, uniforms=draws[:, 2:]), "bone_motion", ctr.bone_parents(d))
        return {"frames": ps.uniform_sample_frames(counts.to(d), 16, train=True, uniforms=u.to(d)),
                "test_frames": ps.uniform_sample_frames(counts.to(d), 16, 2, train=False),
                "box": box, "crop": crop, "grid": grid, "ctrgcn": x,
                "rgb": ps.normalize_clips(torch.arange(96, dtype=torch.uint8, device=d).view(2, 4, 4, 3))}

    here, there = run(torch.device("cpu")), run(torch.device(device))
    for name, value in there.items():
        assert value.device.type == device, name
        assert torch.allclose(value.cpu().double(), here[name].double(), atol=1e-4), name
