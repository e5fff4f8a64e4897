"""sample_indices, the person box (crop.py) and the crop's pixels (pixels.py), on synthetic input."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from video_files import WHOLE, H, W, numbers, psnr, write_video

from ntu_pipeline.video.crop import fallback_crop_box, person_crop_box, scale_box, usable_joints
from ntu_pipeline.video.decode import decode_clip
from ntu_pipeline.video.pixels import _fast_path, crop_frame, crop_resize_i420, crop_resize_rgb, snap_box
from ntu_pipeline.video.timeline import sample_indices

# ---------------------------------------------------------------- sample_indices


def test_sample_indices_longer_than_t_are_distinct_and_spread():
    idx = sample_indices(103, 32)
    assert idx.shape == (32,)
    assert np.all(np.diff(idx) >= 103 // 32)  # distinct, at least floor(n/t) apart
    assert idx[0] == 1 and idx[-1] == 101  # centres of the first and last of 32 segments of 103
    assert np.array_equal(idx, np.floor((np.arange(32) + 0.5) * 103 / 32).astype(int))


def test_sample_indices_equal_is_every_frame():
    assert np.array_equal(sample_indices(32, 32), np.arange(32))


def test_sample_indices_shorter_than_t_repeat_every_frame_in_order():
    idx = sample_indices(5, 12)
    assert np.all(np.diff(idx) >= 0)
    counts = np.bincount(idx, minlength=5)
    assert counts.sum() == 12 and set(counts.tolist()) <= {2, 3}  # each frame floor or ceil of 12/5 times


@pytest.mark.parametrize("n,t", [(0, 4), (4, 0), (-1, 3)])
def test_sample_indices_rejects_empty(n, t):
    with pytest.raises(ValueError):
        sample_indices(n, t)


# ---------------------------------------------------------------- the person box


def joints_at(points) -> np.ndarray:
    """(1, 2, 25, 2): actor 1 with joints at `points` (the rest zero, i.e. absent), actor 2 absent."""
    xy = np.zeros((1, 2, 25, 2), np.float32)
    xy[0, 0, : len(points)] = points
    return xy


def test_person_box_is_a_padded_square_holding_every_joint():
    xy = joints_at([(900, 300), (1000, 700), (950, 500)])
    box = person_crop_box(xy, margin=0.25)
    assert box.dtype == np.float32
    x0, y0, x1, y1 = box
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert y1 - y0 == pytest.approx(400 * 1.5)  # the longer side (y, 400 px) plus 25% on each side
    assert (x0 + x1) / 2 == pytest.approx(950) and (y0 + y1) / 2 == pytest.approx(500)


def test_person_box_ignores_zero_nonfinite_and_far_joints():
    xy = joints_at([(900, 300), (1000, 700), (np.nan, 10), (np.inf, 500), (1e6, 400), (-5000, 400)])
    assert np.allclose(person_crop_box(xy), person_crop_box(joints_at([(900, 300), (1000, 700)])))
    assert len(usable_joints(xy)) == 2


def test_person_box_none_when_no_joint_is_usable():
    assert person_crop_box(np.zeros((10, 2, 25, 2), np.float32)) is None
    assert person_crop_box(np.full((3, 2, 25, 2), np.nan, np.float32)) is None


def test_person_box_of_one_joint_has_the_minimum_side():
    box = person_crop_box(joints_at([(960, 540)]), min_side=0.1)
    assert box[2] - box[0] == pytest.approx(108) and box[3] - box[1] == pytest.approx(108)


@pytest.mark.parametrize("points,inside", [
    ([(5, 500), (60, 700)], "left"), ([(1900, 500), (1915, 700)], "right"),
    ([(900, 3), (950, 200)], "top"), ([(900, 900), (950, 1079)], "bottom"),
])
def test_person_box_is_shifted_inside_at_every_border(points, inside):
    x0, y0, x1, y1 = person_crop_box(joints_at(points))
    assert x0 >= 0 and y0 >= 0 and x1 <= 1920 and y1 <= 1080
    edge = {"left": x0, "right": 1920 - x1, "top": y0, "bottom": 1080 - y1}[inside]
    assert edge == pytest.approx(0, abs=1e-3)
    xs, ys = np.array(points).T
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1


def test_person_box_larger_than_the_frame_stays_centred_and_extends_past_it():
    xy = joints_at([(200, 50), (1700, 1000)])  # 1500 x 950 of joints: padded square 2250 > both sides
    x0, y0, x1, y1 = person_crop_box(xy)
    assert x1 - x0 == pytest.approx(2250) and y1 - y0 == pytest.approx(2250)
    assert (x0 + x1) / 2 == pytest.approx(950) and (y0 + y1) / 2 == pytest.approx(525)
    assert x0 < 0 and y0 < 0 and x1 > 1920 and y1 > 1080


def test_person_box_taller_than_the_frame_is_still_shifted_inside_in_x():
    xy = joints_at([(40, 0), (60, 1000)])  # padded side 1500 > 1080 but < 1920
    x0, y0, x1, y1 = person_crop_box(xy)
    assert x0 == pytest.approx(0) and x1 == pytest.approx(1500)
    assert y0 < 0 and y1 > 1080


def test_fallback_box_is_the_centred_square():
    assert np.array_equal(fallback_crop_box((1920, 1080)), [420, 0, 1500, 1080])
    assert np.array_equal(fallback_crop_box((480, 640)), [0, 80, 480, 560])


def test_scale_box_to_a_resized_video():
    box = np.array([420, 0, 1500, 1080], np.float32)
    assert np.allclose(scale_box(box, (1920, 1080), (960, 540)), [210, 0, 750, 540])
    assert np.allclose(scale_box(box, (1920, 1080), (640, 480)), [140, 0, 500, 480])  # per axis


def test_snap_box_grows_to_a_four_pixel_grid():
    assert snap_box(np.array([752.9, 217.0, 1343.5, 807.6])) == (752, 216, 1344, 808)
    assert snap_box(np.array([-3.0, -1.0, 1.0, 2.0])) == (-4, -4, 4, 4)
    with pytest.raises(ValueError):
        snap_box(np.array([10.0, 10.0, 5.0, 20.0]))


# ---------------------------------------------------------------- cropping pixels


def grey_planes(level_y: int = 200, h: int = 60, w: int = 80):
    """Y, U, V planes of a uniform grey 4:2:0 frame (h, w)."""
    return (np.full((h, w), level_y, np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
            np.full((h // 2, w // 2), 128, np.uint8))


def grey_rgb(level_y: int) -> float:
    return (level_y - 16) * 255 / 219


@pytest.mark.parametrize("box,black,image", [
    # a 40-pixel box over a uniform 80x60 frame, half past one edge: half the 64-pixel output is black
    ((-20, 0, 20, 40), np.s_[:, :30], np.s_[:, 34:]),  # past the left edge
    ((60, 0, 100, 40), np.s_[:, 34:], np.s_[:, :30]),  # past the right edge
    ((0, -20, 40, 20), np.s_[:30, :], np.s_[34:, :]),  # past the top
    ((0, 40, 40, 80), np.s_[34:, :], np.s_[:30, :]),  # past the bottom
])
def test_crop_past_each_border_is_black_there_and_the_image_elsewhere(box, black, image):
    out = crop_resize_i420(*grey_planes(), box, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[black].max() <= 2
    assert np.abs(out[image].astype(float) - grey_rgb(200)).max() <= 2


def test_crop_larger_than_the_image_pads_all_around():
    y, u, v = grey_planes(h=60, w=80)
    out = crop_resize_i420(y, u, v, (-40, -60, 120, 100), 80)  # 160 x 160 box, image in the middle
    # the image covers x 40..120 and y 60..120 of the box: output x 20..60, y 30..60 at half scale
    assert np.abs(out[33:57, 23:57].astype(float) - grey_rgb(200)).max() <= 2
    assert out[:27].max() <= 2 and out[63:].max() <= 2 and out[:, :17].max() <= 2 and out[:, 63:].max() <= 2


def test_crop_outside_the_image_is_all_black():
    assert crop_resize_i420(*grey_planes(), (200, 200, 240, 240), 32).max() <= 2


def test_crop_puts_content_where_the_box_says():
    y, u, v = grey_planes(level_y=16)
    y[20:40, 40:60] = 235  # a white square
    out = crop_resize_i420(y, u, v, (20, 0, 80, 60), 60)  # 60x60 box: scale 1, square at x 20..40
    white = out[:, :, 1] > 128
    rows, cols = np.nonzero(white)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 20, 39)


def textured_frame(w: int = 320, h: int = 240) -> av.VideoFrame:
    """A yuv420p frame of smooth colour (like video's chroma) over fine luma detail."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 200 // w + 20, yy * 200 // h + 20, 128 + 80 * np.sin(xx / 9) * np.cos(yy / 13)], -1)
    rgb = rgb + 40 * np.sin((xx + 2 * yy) / 3)[..., None]
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


@pytest.mark.parametrize("size", [250, 254, 256])
@pytest.mark.parametrize("box", [(40, 20, 280, 220), (-60, -40, 200, 200), (200, 100, 400, 300)])
def test_fast_path_equals_the_rgb_path_at_sizes_of_2_mod_4(size, box):
    """S = 2 (mod 4): the chroma planes are (S/2, S/2) with S/2 odd, written into the flat I420 buffer."""
    frame = textured_frame()
    assert _fast_path(frame)
    fast = crop_frame(frame, box, size)
    reference = crop_resize_rgb(frame.to_ndarray(format="rgb24"), box, size)  # convert all, then crop
    assert fast.shape == (size, size, 3) and fast.dtype == np.uint8
    assert psnr(fast, reference) > 35  # the tolerance of the real-sample test at 256


def yuv_rgb(y: int, u: int, v: int) -> np.ndarray:
    """(3,) uint8: one limited-range BT.601 YUV colour in RGB, by OpenCV's own I420 conversion."""
    i420 = np.array([[y, y], [y, y], [u, v]], np.uint8)  # (3, 2): 2x2 luma, then one U and one V
    return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)[0, 0]


@pytest.mark.parametrize("size", [16, 18, 22, 30, 34, 128, 250, 254])
def test_chroma_quadrants_land_where_the_box_says_at_any_even_size(size):
    """Four colours in the quadrants of a 4:2:0 frame come out in the quadrants of the crop."""
    y = np.full((80, 80), 120, np.uint8)
    u, v = np.empty((40, 40), np.uint8), np.empty((40, 40), np.uint8)
    colours = {(0, 0): (60, 200), (0, 1): (200, 60), (1, 0): (90, 90), (1, 1): (170, 170)}  # (U, V)
    for (r, c), (cu, cv) in colours.items():
        u[r * 20: (r + 1) * 20, c * 20: (c + 1) * 20] = cu
        v[r * 20: (r + 1) * 20, c * 20: (c + 1) * 20] = cv
    out = crop_resize_i420(y, u, v, (0, 0, 80, 80), size)
    assert out.shape == (size, size, 3)
    h, m = size // 2, 3  # quadrant side, margin kept from the boundary (where colours mix)
    for (r, c), (cu, cv) in colours.items():
        quadrant = out[r * h + m * r: (r + 1) * h - m * (1 - r), c * h + m * c: (c + 1) * h - m * (1 - c)]
        assert np.abs(quadrant.astype(int) - yuv_rgb(120, cu, cv)).max() <= 2, (r, c)


@pytest.mark.parametrize("size", [250, 254])
def test_decode_clip_at_a_size_of_2_mod_4(tmp_path, size):
    path = write_video(tmp_path / "v.avi", 20)
    clip = decode_clip(path, WHOLE, size=size, frames=4, box_frame_size=(W, H))
    assert clip.frames.shape == (4, size, size, 3) and numbers(clip) == clip.frame_index.tolist()
