"""The skeleton stage: one `.skeleton` file -> its actors' joints, motion, pixel positions, tracking.

    stage = skeleton_stage(shard_size=128)      # what the runner needs: arrays, columns, prepare
    prepare_skeleton(entry, group)              # one sample, as a worker does it

Its table keeps the names of format ntu-prep/1 (`samples/status`, `error`, `note`, `num_frames`,
`num_bodies`); `skeleton/frame_index` gives each kept frame's frame in the file (-1 past the end), so a
loader can take the skeleton at the instants of the stored RGB frames.
"""

from __future__ import annotations

import numpy as np
import zarr

from ..errors import NTUPrepError
from ..skeleton.actors import MAX_WIDE_RATIO, MIN_TRACKED_FRAMES, WIDE_SPREAD, motion, select_actors
from ..skeleton.parse import check_camera_coordinates, parse_skeleton
from ..store.schema import CODEC, MAX_FRAMES, SKELETON_ARRAYS, ArraySpec, status_column
from .stage import Prepared, SampleEntry, Stage

COLUMNS = (
    ArraySpec("skeleton/frame_index", (MAX_FRAMES,), "int32", "table", fill=-1),
    ArraySpec("samples/num_frames", (), "int32", "table"),
    ArraySpec("samples/num_bodies", (), "int16", "table"),
    status_column("samples/status"),
    ArraySpec("samples/error", (), str, "table", fill=""),
    ArraySpec("samples/note", (), str, "table", fill=""),
)


def prepare_skeleton(entry: SampleEntry, group: zarr.Group | None = None) -> Prepared:
    """Parse, check the coordinates, select actors, compute motion. Raises NTUPrepError on bad input."""
    record = parse_skeleton(entry.path)
    check_camera_coordinates(record)
    actors = select_actors(record)
    n = actors.num_frames
    if n == 0:
        raise NTUPrepError(f"{entry.path}: no body in any of its {record.num_frames} frames")
    if n > MAX_FRAMES:
        raise NTUPrepError(f"{entry.path}: {n} frames kept; the store holds at most {MAX_FRAMES}")
    frame_index = np.full(MAX_FRAMES, -1, np.int32)
    frame_index[:n] = actors.frame_index
    return Prepared({
        "skeleton/joints": actors.joints,
        "skeleton/motion": motion(actors.joints, actors.present),
        "skeleton/color_xy": actors.color_xy,
        "skeleton/tracking": actors.tracking,
        "skeleton/frame_index": frame_index,
        "samples/num_frames": np.int32(n),
        "samples/num_bodies": np.int16(actors.num_bodies),
    }, actors.note)


def skeleton_stage(shard_size: int = 128) -> Stage:
    return Stage(
        name="skeleton", input_kind=".skeleton files", arrays=(*SKELETON_ARRAYS, *COLUMNS),
        status="samples/status", error="samples/error", note="samples/note",
        done="progress/shard_done", digest="progress/shard_digest", shard_size=shard_size,
        options={"max_frames": MAX_FRAMES, "codec": CODEC,
                 "denoise": {"min_tracked_frames": MIN_TRACKED_FRAMES, "wide_spread": WIDE_SPREAD,
                             "max_wide_ratio": MAX_WIDE_RATIO}},
        prepare=prepare_skeleton,
    )
