"""Previews of what training sees: one sample's stored RGB frames with its skeleton drawn on them.

    ntu-prep preview ntu60.zarr S001C001P001R001A001 -o preview.png

Each tile is a stored frame (the person-centred crop), with the skeleton of the same source frame
(`rgb/frame_index` matched against `skeleton/frame_index`) projected into the crop: actor 1 blue, actor
2 red. A frame with no skeleton at its instant is drawn without one and says so. What a user checks
with it: that the crop holds the people and the skeleton lies on them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import zarr

from .errors import ConfigError, NTUPrepError
from .images import write_image
from .sheet import ACTOR_COLOURS, MAX_COLUMNS
from .skeleton.joints import BONES
from .store.schema import has_stage, read_strings, require_stages
from .store.status import Status
from .video.crop import project_to_crop

DISPLAY_SIDE = 192  # tiles of smaller crops are enlarged to at least this


def skeleton_at_frames(group: zarr.Group, index: int, frames: np.ndarray) -> np.ndarray:
    """(T, 2, 25, 2) colour-camera pixels of the skeleton at the given source frames; 0 where none."""
    n = int(group["samples/num_frames"][index])
    source = group["skeleton/frame_index"][index, :n]
    color = group["skeleton/color_xy"][index, :n]
    out = np.zeros((len(frames), 2, 25, 2), np.float32)
    position = {int(f): j for j, f in enumerate(source)}
    for k, f in enumerate(frames):
        if int(f) in position:
            out[k] = color[position[int(f)]]
    return out


def first_complete_sample(group: zarr.Group) -> str:
    """The name of the first sample whose RGB is ok, and its skeleton too where the store has skeletons."""
    require_stages(group, ("rgb",), optional=("skeleton",))
    ok = group["rgb/status"][:] == Status.OK
    if has_stage(group, "skeleton"):
        ok &= group["samples/status"][:] == Status.OK
    if not ok.any():
        raise NTUPrepError("no sample has both its skeleton and its RGB ok" if has_stage(group, "skeleton")
                           else "no sample has its RGB ok")
    return str(group["samples/name"][int(ok.argmax())])


def draw_frame(frame: np.ndarray, joints_xy: np.ndarray, caption: str) -> np.ndarray:
    """BGR tile: frame (S, S, 3) RGB with joints_xy (2, 25, 2) crop pixels (NaN: absent) drawn on it,
    enlarged to at least DISPLAY_SIDE pixels."""
    zoom = max(1, -(-DISPLAY_SIDE // frame.shape[0]))  # small crops are enlarged so the lines stay thin
    tile = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    tile = cv2.resize(tile, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) if zoom > 1 else tile
    scale = 16 * zoom  # cv2's fixed-point shift of 4 bits: sub-pixel lines
    for actor in range(2):
        points = joints_xy[actor]
        for a, b in BONES:
            if np.isfinite(points[[a, b]]).all():
                pa, pb = (points[a] * scale).astype(int), (points[b] * scale).astype(int)
                cv2.line(tile, tuple(pa), tuple(pb), ACTOR_COLOURS[actor], 1, cv2.LINE_AA, 4)
    cv2.rectangle(tile, (0, 0), (8 + 7 * len(caption), 19), (0, 0, 0), -1)
    cv2.putText(tile, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def preview_image(group: zarr.Group, name: str, columns: int = 8) -> np.ndarray:
    """The preview of sample `name` as a BGR image (the skeleton drawn where the store has one)."""
    if not 1 <= columns <= MAX_COLUMNS:
        raise ConfigError(f"--columns must be 1..{MAX_COLUMNS}, got {columns}")
    require_stages(group, ("rgb",), optional=("skeleton",))
    names = read_strings(group["samples/name"])
    if name not in names:
        raise NTUPrepError(f"{name}: no such sample in this store")
    index = names.index(name)
    status = Status(int(group["rgb/status"][index]))
    if status != Status.OK:
        reasons = {Status.ABSENT: "no video of it was in the --videos folder (rgb absent)",
                   Status.FAILED: f"its video failed: {group['rgb/error'][index]}"}
        raise NTUPrepError(f"{name}: no RGB frames stored: {reasons.get(status, f'rgb {status.label}')}")
    frame_index = group["rgb/frame_index"][index]
    kept = np.flatnonzero(frame_index >= 0)
    frames = group["rgb/frames"][index]
    size = frames.shape[1]
    color = skeleton_at_frames(group, index, frame_index[kept]) if has_stage(group, "skeleton") else \
        np.zeros((len(kept), 2, 25, 2), np.float32)
    xy = project_to_crop(color, group["rgb/crop_box"][index], tuple(group["rgb/video_size"][index]), size)
    tiles = [draw_frame(frames[k], xy[i], f"frame {frame_index[k]}") for i, k in enumerate(kept)]
    rows = -(-len(tiles) // columns)
    tiles += [np.zeros_like(tiles[0])] * (rows * columns - len(tiles))
    return np.vstack([np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(rows)])


def write_preview(group: zarr.Group, name: str, out: Path, columns: int = 8) -> None:
    """Write the preview of sample `name` whole, as an image of out's suffix (`images.write_image`)."""
    write_image(out, preview_image(group, name, columns))
