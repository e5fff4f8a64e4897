"""The person box: which square of the video the RGB stage keeps, from the skeleton's colour pixels.

Usage:
    box = person_crop_box(actors.color_xy)            # (4,) float32 x0, y0, x1, y1, or None
    if box is None:
        box = fallback_crop_box(COLOR_FRAME_SIZE)     # and the stage says so in the sample's note
    video_box = scale_box(box, COLOR_FRAME_SIZE, (width, height))   # a resized mirror's pixels

Boxes are (x0, y0, x1, y1) in pixels, x to the right and y down, x1/y1 exclusive, as floats. One box
covers the whole clip (every usable joint of both actors over every frame), so the crop does not move
over time (a moving crop would add motion the performer did not make). The box may extend past the image
where the padded person is larger than the frame; the decoder pads those pixels black
(`ntu_pipeline.video.decode`).

Everything here is pure numpy and cheap; nothing reads files.
"""

from __future__ import annotations

import numpy as np

COLOR_FRAME_SIZE = (1920, 1080)  # (width, height) of the Kinect v2 colour camera, what color_xy is in
DEFAULT_MARGIN = 0.25
MIN_SIDE_FRACTION = 0.1  # the smallest box side, as a share of the frame height


def usable_joints(color_xy: np.ndarray, frame_size: tuple[int, int] = COLOR_FRAME_SIZE) -> np.ndarray:
    """(P, 2) float64: the joints worth boxing, out of color_xy (..., 2) in pixels.

    A joint is left out when both its coordinates are exactly zero (an absent actor is stored as
    zeros), when either is not finite, or when it lies more than one frame size outside the frame
    (Kinect projects badly tracked joints far away).
    """
    xy = np.asarray(color_xy, dtype=np.float64).reshape(-1, 2)  # (P, 2)
    w, h = frame_size
    finite = np.isfinite(xy).all(axis=1)
    xy = np.where(finite[:, None], xy, 0.0)
    present = (xy != 0).any(axis=1)
    near = (xy[:, 0] >= -w) & (xy[:, 0] <= 2 * w) & (xy[:, 1] >= -h) & (xy[:, 1] <= 2 * h)
    return xy[finite & present & near]


def person_crop_box(
    color_xy: np.ndarray,
    frame_size: tuple[int, int] = COLOR_FRAME_SIZE,
    margin: float = DEFAULT_MARGIN,
    min_side: float = MIN_SIDE_FRACTION,
) -> np.ndarray | None:
    """The square around every usable joint of the clip, or None when no joint is usable.

    color_xy:   (F, M, 25, 2) joint pixel coordinates (any leading shape works), e.g.
                `ActorSequence.color_xy` or a row of the store's `skeleton/color_xy`.
    frame_size: (width, height) of the frame color_xy is in.
    margin:     padding added on each side, as a share of the joints' extent in that dimension.
    min_side:   the smallest side, as a share of the frame height (a single joint still gets a box).

    The joints' bounding box is padded by `margin`, made square (the longer side, at least
    `min_side * height`) about its centre, then, in each dimension where the square fits in the
    frame, shifted inside it; where it does not fit it stays centred on the person and extends past
    the image on both sides (the decoder pads with black). Returns (4,) float32 x0, y0, x1, y1 in
    color_xy's pixels.
    """
    if margin < 0 or min_side < 0:
        raise ValueError(f"margin and min_side must be >= 0, got {margin} and {min_side}")
    xy = usable_joints(color_xy, frame_size)  # (P, 2)
    if len(xy) == 0:
        return None
    lo, hi = xy.min(axis=0), xy.max(axis=0)  # (2,) each
    extent = hi - lo
    lo, hi = lo - margin * extent, hi + margin * extent
    side = max(float((hi - lo).max()), min_side * frame_size[1])
    centre = (lo + hi) / 2
    box = np.empty(4, np.float64)
    for axis, size in enumerate(frame_size):
        start = centre[axis] - side / 2
        if side <= size:
            start = min(max(start, 0.0), size - side)
        box[axis], box[axis + 2] = start, start + side
    return box.astype(np.float32)


def fallback_crop_box(frame_size: tuple[int, int] = COLOR_FRAME_SIZE) -> np.ndarray:
    """The box used when a sample has no usable skeleton: the centred square of side min(width, height).

    For the 1920x1080 NTU frame that is (420, 0, 1500, 1080), the middle of the room where performers
    stand. Returns (4,) float32 x0, y0, x1, y1 in frame_size's pixels.
    """
    w, h = frame_size
    side = min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    return np.array([x0, y0, x0 + side, y0 + side], np.float32)


def scale_box(box: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """The box in another frame size: colour-camera pixels (from_size) to a video's own (to_size).

    box: (4,) x0, y0, x1, y1. Each axis is scaled by its own ratio, so a mirror resized to another
    aspect ratio still crops the same part of the scene. Returns (4,) float32.
    """
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return (np.asarray(box, np.float64) * np.array([sx, sy, sx, sy])).astype(np.float32)


def project_to_crop(color_xy: np.ndarray, box: np.ndarray, video_size: tuple[int, int], size: int,
                    frame_size: tuple[int, int] = COLOR_FRAME_SIZE) -> np.ndarray:
    """Joint pixel positions in the stored crop: (..., 2) colour-camera pixels -> (..., 2) float32.

    box: the stored `rgb/crop_box` (video pixels); video_size: `rgb/video_size`; size: the crop's side.
    A joint at (0, 0) (absent) maps to NaN, so a drawing or a check can skip it.
    """
    xy = np.asarray(color_xy, np.float64)
    sx, sy = video_size[0] / frame_size[0], video_size[1] / frame_size[1]
    x0, y0, x1, y1 = (float(v) for v in box)
    u = (xy[..., 0] * sx - x0) * size / (x1 - x0)
    v = (xy[..., 1] * sy - y0) * size / (y1 - y0)
    out = np.stack([u, v], axis=-1).astype(np.float32)
    out[(xy == 0).all(axis=-1)] = np.nan
    return out
