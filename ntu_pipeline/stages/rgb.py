"""The RGB stage: one `_rgb.avi` -> T person-centred square frames, aligned with the skeleton by index.

    stage = rgb_stage(RgbOptions(frames=32, size=256))   # or frames=None: every source frame, up to 300
    prepare_rgb(entry, group, frames=32, size=256)

The crop box comes from the sample's stored skeleton (`skeleton/color_xy` over its kept frames, all
actors, `video.crop.person_crop_box`): so with both inputs the skeleton stage runs first. A sample with
no usable skeleton (no file, the official missing list, a failed parse, no joint in the frame) is
cropped with `fallback_crop_box` (the centred square of the full frame height) and its note says so.
Decoding, cropping and the frame sampling are `video.decode.decode_clip`'s.

A video that holds fewer than MIN_HELD_SHARE (half) of the frames the recording has (the larger of its
container header's count and its skeleton file's span) is no longer the action: its T frames would be a
fraction of it repeated, so the sample fails (`short_video`), naming both counts. Shorter by less, it is
sampled over the frames it holds and its note says so (`rgb/note`; `info` counts noted samples).

Arrays: rgb/frames (N, T, S, S, 3) uint8, one JPEG (or lz4) chunk per frame, frames past the end of a
short video (with frames=None) left out and read as zeros; rgb/frame_index (N, T) int32, the source
frame of each stored frame, -1 where none; rgb/crop_box (N, 4) float32 (x0, y0, x1, y1) in the video's
own pixels; rgb/video_size (N, 2) int32 (width, height: with the box, what maps skeleton pixels into
the crop, `video.crop.project_to_crop`); rgb/num_source_frames (N,) int32; rgb/status, error, note.
"""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import zarr

from ..errors import VideoDecodeError
from ..store.schema import MAX_FRAMES, ArraySpec, has_stage, status_column
from ..store.status import Status
from ..video.crop import person_crop_box
from ..video.decode import decode_clip
from .rgb_options import RgbOptions
from .stage import Prepared, SampleEntry, Stage

# A video holding fewer than this share of its recording's frames fails: a video cut to a third shows a
# third of the action, and its stored frames would repeat each source frame 3 times or more. The
# recording's length is the larger of the container header's frame count and the skeleton file's span
# (both say how long the camera ran; a truncated file keeps its header).
MIN_HELD_SHARE = 0.5


def rgb_arrays(options: RgbOptions) -> tuple[ArraySpec, ...]:
    t = MAX_FRAMES if options.frames is None else options.frames
    return (
        ArraySpec("rgb/frames", (t, options.size, options.size, 3), "uint8", "frame",
                  "jpeg" if options.codec == "jpeg" else "blosc", quality=options.quality),
        ArraySpec("rgb/frame_index", (t,), "int32", "table", fill=-1),
        ArraySpec("rgb/crop_box", (4,), "float32", "table"),
        ArraySpec("rgb/video_size", (2,), "int32", "table"),
        ArraySpec("rgb/num_source_frames", (), "int32", "table"),
        status_column("rgb/status"),
        ArraySpec("rgb/error", (), str, "table", fill=""),
        ArraySpec("rgb/note", (), str, "table", fill=""),
    )


def skeleton_box(group: zarr.Group, index: int) -> tuple[np.ndarray | None, str]:
    """The person box of sample `index` from its stored skeleton, in colour-camera pixels, or None and
    why (decode_clip then crops the fallback box and says so)."""
    if not has_stage(group, "skeleton"):
        return None, "no skeleton input"
    status = Status(int(group["samples/status"][index]))
    if status not in (Status.OK, Status.MISSING_SKELETON):
        return None, f"skeleton {status.label}"
    n = int(group["samples/num_frames"][index])
    box = person_crop_box(group["skeleton/color_xy"][index, :n])
    return box, "" if box is not None else "no skeleton joint inside the frame"


def short_video(held: int, header_frames: int, skeleton_frames: int) -> str | None:
    """Why a video of `held` frames is too short to stand for its recording (None when it is not): the
    recording has max(header_frames, skeleton_frames) frames (0: unknown)."""
    expected = max(header_frames, skeleton_frames)
    if held >= MIN_HELD_SHARE * expected:
        return None
    source = "its container header" if header_frames >= skeleton_frames else "its skeleton file"
    return (f"holds {held} frames where {source} says the recording has {expected}: fewer than "
            f"{MIN_HELD_SHARE:.0%}, so its frames would not show the whole action (is it truncated?)")


def prepare_rgb(entry: SampleEntry, group: zarr.Group, frames: int | None, size: int) -> Prepared:
    """Decode, crop and sample one video. Raises VideoDecodeError (naming the file) on bad input."""
    cv2.setNumThreads(1)  # one worker process per core is the parallelism
    box, box_note = skeleton_box(group, entry.index)
    clip = decode_clip(entry.path, box, size=size, frames=frames)
    t = MAX_FRAMES if frames is None else frames
    frame_index = np.full(t, -1, np.int32)
    frame_index[: len(clip.frame_index)] = clip.frame_index
    notes = [note for note in (box_note, clip.note) if note]
    span = 0  # frames the skeleton file spans (its last kept frame + 1); 0 where no skeleton was kept
    if has_stage(group, "skeleton"):
        span = int(group["skeleton/frame_index"][entry.index].max()) + 1
        if span > 0 and span != clip.num_source_frames:
            notes.append(f"video has {clip.num_source_frames} frames, the skeleton file {span} or more")
    reason = short_video(clip.num_source_frames, clip.header_frames, span)
    if reason:
        raise VideoDecodeError(entry.path, None, reason)
    return Prepared({
        "rgb/frames": clip.frames,
        "rgb/frame_index": frame_index,
        "rgb/crop_box": clip.box.astype(np.float32),
        "rgb/video_size": np.asarray(clip.video_size, np.int32),
        "rgb/num_source_frames": np.int32(clip.num_source_frames),
    }, "; ".join(notes))


def rgb_stage(options: RgbOptions | None = None, shard_size: int = 16) -> Stage:
    options = options or RgbOptions()
    return Stage(
        name="rgb", input_kind="_rgb.avi videos", arrays=rgb_arrays(options),
        status="rgb/status", error="rgb/error", note="rgb/note", done="progress/rgb_shard_done",
        digest="progress/rgb_shard_digest", shard_size=shard_size, options=options.record(),
        prepare=partial(prepare_rgb, frames=options.frames, size=options.size),
    )
