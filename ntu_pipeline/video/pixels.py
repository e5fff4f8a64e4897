"""Pixel maths of the RGB crop: pure functions over numpy arrays and decoded frames (no PyAV import).

Usage:
    box = snap_box(video_box)                       # (x0, y0, x1, y1) ints on a 4-pixel grid
    rgb = crop_frame(frame, box, 256)               # (256, 256, 3) uint8 from an av.VideoFrame
    rgb = crop_resize_i420(y, u, v, box, 256)       # the same from YUV 4:2:0 planes (H, W), (H/2, W/2)
    rgb = crop_resize_rgb(frame_rgb, box, 256)      # the same from an (H, W, 3) RGB image

`decode.py` decides which frames to keep; this module turns one into its stored square. A box is x0,
y0, x1, y1 in the frame's luma pixels, x1/y1 exclusive, and may extend past the image: the pixels there
are black (limited-range black in YUV, zero in RGB). The fast path crops the Y, U and V planes (views
of the decoder's buffers, no copy), resizes each with INTER_AREA (`area_resize`) and only then
converts the S x S result to RGB (BT.601 limited range, what swscale and OpenCV use for NTU's files):
about 4x cheaper than converting the whole 1920x1080 frame first. Frames in other pixel formats
(full-range or BT.709 YUV, 4:2:2...) go through FFmpeg's full RGB conversion first, which is slower.
`crop_frame` reads a decoded frame only through its planes and format fields, so nothing here needs
PyAV itself.
"""

from __future__ import annotations

import cv2
import numpy as np

_BLACK_YUV = (16, 128, 128)  # limited-range black in Y, U, V


def snap_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """The integer box actually cropped: (4,) float x0, y0, x1, y1 grown to edges on a 4-pixel grid.

    Even edges put the chroma planes of 4:2:0 video (half resolution) on the luma grid; multiples of 4
    let every plane be halved exactly (`area_resize`).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"box must be finite with x1 > x0 and y1 > y0, got {list(box)}")
    x0i, y0i = 4 * int(np.floor(x0 / 4)), 4 * int(np.floor(y0 / 4))
    x1i, y1i = 4 * int(np.ceil(x1 / 4)), 4 * int(np.ceil(y1 / 4))
    return x0i, y0i, max(x1i, x0i + 4), max(y1i, y0i + 4)


def area_resize(image: np.ndarray, side: int) -> np.ndarray:
    """(side, side, ...) INTER_AREA resize of an (h, w, ...) image, halving it exactly first when >= 3x.

    OpenCV's INTER_AREA is fast for exact integer factors and costs ~2-4 ns per source pixel otherwise
    (1 ms for a 592-pixel crop, 3 ms for a 1080-pixel one). An exact 2x2 mean first makes large crops
    ~3x cheaper, and from a factor of 3 up it stays within ~46-52 dB of the one-step result (measured on
    the real samples); between 2x and 3x it would cost 4-6 dB, so those crops are resized in one step.
    """
    h, w = image.shape[:2]
    if h >= 3 * side and w >= 3 * side and h % 2 == 0 and w % 2 == 0:
        image = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _cut(plane: np.ndarray, x0: int, y0: int, x1: int, y1: int, fill) -> np.ndarray:
    """(y1 - y0, x1 - x0, ...): plane[y0:y1, x0:x1], a view where the box is inside the (h, w, ...)
    plane, else a copy padded with `fill`."""
    h, w = plane.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return plane[y0:y1, x0:x1]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 >= ix1 or iy0 >= iy1:  # the box misses the image
        return np.full((y1 - y0, x1 - x0) + plane.shape[2:], fill, plane.dtype)
    return cv2.copyMakeBorder(
        plane[iy0:iy1, ix0:ix1], iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1, cv2.BORDER_CONSTANT, value=fill
    )


def crop_resize_i420(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, box: tuple[int, int, int, int], size: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the box of a YUV 4:2:0 frame, resized, then converted.

    y: (H, W) uint8; u, v: (ceil(H/2), ceil(W/2)) uint8; box: even integers x0, y0, x1, y1 in luma
    pixels (`snap_box` gives multiples of 4), possibly past the image (padded black); size even
    (S/2 may be odd: the chroma planes are written into the flat I420 buffer, not as rows of it).
    Each plane is resized (`area_resize`) before the BT.601 limited-range YUV->RGB conversion, about
    4x cheaper than converting the whole frame first. `out`, if given, is the (size, size, 3) uint8
    array written.
    """
    x0, y0, x1, y1 = box
    half = size // 2
    luma, chroma = size * size, half * half
    i420 = np.empty(luma + 2 * chroma, np.uint8)  # (3S²/2,): Y (S, S), then U and V (S/2, S/2) each
    i420[:luma] = area_resize(_cut(y, x0, y0, x1, y1, _BLACK_YUV[0]), size).reshape(-1)
    for k, plane in enumerate((u, v)):
        c = area_resize(_cut(plane, x0 // 2, y0 // 2, x1 // 2, y1 // 2, _BLACK_YUV[1 + k]), half)
        i420[luma + k * chroma: luma + (k + 1) * chroma] = c.reshape(-1)
    i420 = i420.reshape(size * 3 // 2, size)  # (3S/2, S): the 2-D buffer OpenCV's I420 reader takes
    if out is None:
        return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420, dst=out)
    return out


def crop_resize_rgb(rgb: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """(size, size, 3) uint8: the box of an (H, W, 3) uint8 image, padded black past it, `area_resize`d."""
    x0, y0, x1, y1 = box
    return area_resize(_cut(rgb, x0, y0, x1, y1, (0, 0, 0)), size)


def _plane(frame, k: int) -> np.ndarray:
    """(height, width) uint8 view of plane k of a decoded av.VideoFrame, no copy (rows are padded to
    line_size bytes)."""
    p = frame.planes[k]
    rows = np.frombuffer(p, np.uint8, count=p.line_size * p.height).reshape(p.height, p.line_size)
    return rows[:, : p.width]


def _fast_path(frame) -> bool:
    """Whether the frame's YUV may be cropped as 4:2:0 limited-range BT.601 (all NTU files)."""
    return (
        frame.format.name == "yuv420p"
        and frame.color_range != 2  # 2 = full ("JPEG") range
        and frame.colorspace in (2, 5, 6)  # unspecified, BT.470BG, SMPTE 170M: BT.601 matrices
    )


def crop_frame(frame, box: tuple[int, int, int, int], size: int, out: np.ndarray | None = None) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the snapped box (`snap_box`, video pixels) of a decoded av.VideoFrame,
    resized. `out`, if given, is the (size, size, 3) uint8 array written (and returned)."""
    if _fast_path(frame):
        return crop_resize_i420(_plane(frame, 0), _plane(frame, 1), _plane(frame, 2), box, size, out)
    crop = crop_resize_rgb(frame.to_ndarray(format="rgb24"), box, size)
    if out is None:
        return crop
    out[...] = crop
    return out
