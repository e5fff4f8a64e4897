"""Decode an NTU `_rgb.avi` once, keeping a person-centred square crop of T evenly spaced frames.

Usage:
    clip = decode_clip("S001C001P001R001A001_rgb.avi", box, size=256, frames=32)
    clip.frames             # (32, 256, 256, 3) uint8 RGB, the crop of each sampled frame
    clip.frame_index        # (32,) int32, which source frame each one is (0-based, display order)
    clip.num_source_frames  # frames the video holds; clip.header_frames what its container declared
    clip.box                # (4,) float32, the region cropped, in the video's own pixels
    decode_clip(path, box, frames=None)   # every frame, up to the first 300

`box` is in colour-camera pixels (1920x1080, what `skeleton/color_xy` holds; see `crop.py`) and is
scaled to the video's actual size, so resized mirrors crop the same part of the scene. box=None crops
`fallback_crop_box` and says so in the note.

How a clip is made (one process per core is the parallelism: the decoder runs single-threaded; a
caller that runs several processes should also call `cv2.setNumThreads(1)` once per process):

1. Every packet of the video stream is read first (demuxing costs ~1% of decoding; the packets of one
   NTU video are 1-15 MB). Their count is the frame count: the container header's `frames` is recorded
   (`header_frames`) but not trusted (a truncated file keeps its header; some containers have none).
   A truncated last packet (flagged corrupt by the demuxer) is dropped, with a note.
2. The T frame numbers are `sample_indices(count, T)`. Packets are decoded in order and feeding stops
   after the last frame needed (for T = 32 that saves the last 1-4 frames; the count is then the
   packet count). For MPEG-4 Part 2 (the original NTU DIVX files: I and P frames, a keyframe every 12
   frames), packets after the last needed frame of a GOP are not decoded at all: decoding resumes at
   the next keyframe, which gives bit-identical frames and skips 6-35% of the decoding for T = 32
   (more for longer videos). Streams with B-frames (H.264 re-encodes) are decoded throughout.
3. Only the sampled frames are converted: the box (`snap_box`: grown to a 4-pixel grid) is cut from
   the Y, U and V planes of the decoded YUV 4:2:0 frame (no copy), each plane resized with INTER_AREA
   (`area_resize`), and only then converted to RGB (BT.601 limited range, what swscale and OpenCV use
   for these files). Pixels of the box outside the image are black. Other pixel formats (full-range
   or BT.709 YUV, 4:2:2...) go through FFmpeg's full RGB conversion first, which is slower.
4. Where the decoder's frames and the packets disagree (a damaged stream: fewer frames came out), the
   frames are re-sampled from the frames it did yield, in a second decoding pass, with a note. In a
   truncated stream with B-frames the few frames still held for reordering at the cut are dropped
   (the cut can remove B-frames shown before them, and an AVI has no timestamps that place them).

A video with fewer than T frames repeats frames (see `sample_indices`) and says so in the note; that is
not an error. Files that cannot be opened, hold no video stream or no decodable frame, or on which the
decoder fails, raise `VideoDecodeError` naming the file (and the frame, where one is known).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import VideoDecodeError
from .crop import COLOR_FRAME_SIZE, fallback_crop_box, scale_box

MAX_FRAMES = 300  # the store's time axis: frames=None keeps at most this many (NTU videos have <= 300)
DEFAULT_FRAMES = 32
DEFAULT_SIZE = 256

# Codecs whose keyframes are intra-coded and whose I/P streams can be resumed at any keyframe: the GOP
# skip is used only for these (and only while the decoder outputs one frame per packet, no B-frames).
_GOP_SKIP_CODECS = frozenset({"mpeg4"})
_BLACK_YUV = (16, 128, 128)  # limited-range black in Y, U, V
_PICT_B = 3  # AV_PICTURE_TYPE_B (PyAV 18 gives frame.pict_type as a plain int)


@dataclass(frozen=True, eq=False)
class Clip:
    """The stored crop of one video.

    frames:            (T, S, S, 3) uint8 RGB
    frame_index:       (T,) int32, the source frame (0-based, display order) of each stored frame
    num_source_frames: frames the video stream holds
    header_frames:     frames the container header declares (0 when it does not say)
    box:               (4,) float32 x0, y0, x1, y1 cropped, in the video's own pixels (`snap_box`:
                       on a 4-pixel grid; may extend past the image, where the crop is black)
    video_size:        (width, height) of the video
    note:              what a user may want to know ('' when nothing): repeated frames, fallback box,
                       header/content mismatch, truncation
    """

    frames: np.ndarray
    frame_index: np.ndarray
    num_source_frames: int
    header_frames: int
    box: np.ndarray
    video_size: tuple[int, int]
    note: str


def sample_indices(num_frames: int, t: int) -> np.ndarray:
    """(t,) int64: t frame numbers spread evenly over num_frames, the centre of t equal segments.

    Frame i of the result is floor((i + 1/2) * num_frames / t). With num_frames >= t every index is
    distinct; a video shorter than t repeats frames in order, each source frame floor(t/num_frames) or
    ceil(t/num_frames) times (nearest-neighbour stretching of time); num_frames == t is every frame.
    "Every frame" (t None) is the caller's: `decode_clip(frames=None)`.
    """
    if num_frames < 1 or t < 1:
        raise ValueError(f"need num_frames >= 1 and t >= 1, got {num_frames} and {t}")
    i = np.arange(t, dtype=np.int64)
    return (2 * i + 1) * num_frames // (2 * t)


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
    """plane[y0:y1, x0:x1], a view where the box is inside the plane, else padded with `fill`."""
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
    pixels (`snap_box` gives multiples of 4), possibly past the image (padded black); size even.
    Each plane is resized (`area_resize`) before the BT.601 limited-range YUV->RGB conversion, about
    4x cheaper than converting the whole frame first. `out`, if given, is the (size, size, 3) uint8
    array written.
    """
    x0, y0, x1, y1 = box
    i420 = np.empty((size * 3 // 2, size), np.uint8)  # (3S/2, S): Y, then U and V as S/4 rows each
    i420[:size] = area_resize(_cut(y, x0, y0, x1, y1, _BLACK_YUV[0]), size)
    half, quarter = size // 2, size // 4
    for k, plane in enumerate((u, v)):
        c = area_resize(_cut(plane, x0 // 2, y0 // 2, x1 // 2, y1 // 2, _BLACK_YUV[1 + k]), half)
        i420[size + k * quarter: size + (k + 1) * quarter] = c.reshape(quarter, size)
    if out is None:
        return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420, dst=out)
    return out


def crop_resize_rgb(rgb: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """(size, size, 3) uint8: the box of an (H, W, 3) uint8 image, padded black past it, `area_resize`d."""
    x0, y0, x1, y1 = box
    return area_resize(_cut(rgb, x0, y0, x1, y1, (0, 0, 0)), size)


def _plane(frame: av.VideoFrame, k: int) -> np.ndarray:
    """(height, width) uint8 view of plane k of a decoded frame, no copy."""
    p = frame.planes[k]
    rows = np.frombuffer(p, np.uint8, count=p.line_size * p.height).reshape(p.height, p.line_size)
    return rows[:, : p.width]


def _fast_path(frame: av.VideoFrame) -> bool:
    """Whether the frame's YUV may be cropped as 4:2:0 limited-range BT.601 (all NTU files)."""
    return (
        frame.format.name == "yuv420p"
        and frame.color_range != 2  # 2 = full ("JPEG") range
        and frame.colorspace in (2, 5, 6)  # unspecified, BT.470BG, SMPTE 170M: BT.601 matrices
    )


def crop_frame(
    frame: av.VideoFrame, box: tuple[int, int, int, int], size: int, out: np.ndarray | None = None
) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the snapped box (`snap_box`, video pixels) of a decoded frame, resized.

    `out`, if given, is the (size, size, 3) uint8 array written (and returned).
    """
    if _fast_path(frame):
        return crop_resize_i420(_plane(frame, 0), _plane(frame, 1), _plane(frame, 2), box, size, out)
    crop = crop_resize_rgb(frame.to_ndarray(format="rgb24"), box, size)
    if out is None:
        return crop
    out[...] = crop
    return out


def _open(path: Path):
    """The container and its first video stream, set up for single-threaded decoding."""
    try:
        if path.stat().st_size == 0:
            raise VideoDecodeError(path, None, "empty file (0 bytes)")
        container = av.open(str(path))
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise VideoDecodeError(path, None, f"cannot be opened as a video: {e}") from e
    if not container.streams.video:
        kinds = [s.type for s in container.streams] or ["none"]
        container.close()
        raise VideoDecodeError(path, None, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    stream.codec_context.thread_type = "NONE"
    return container, stream


def _read_packets(path: Path, container, stream) -> tuple[list[av.Packet], str]:
    """Every non-empty packet of the stream in decode order, and a note ('' or why one was dropped)."""
    packets = []
    try:
        for packet in container.demux(stream):
            if packet.size:  # the demuxer's final empty packet means end of stream, not a frame
                packets.append(packet)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, len(packets), f"demuxing failed: {e}") from e
    if packets and packets[-1].is_corrupt:
        packets.pop()
        return packets, f"last packet (frame {len(packets)}) truncated, dropped"
    return packets, ""


def _gop_needed(packets: list[av.Packet], wanted: np.ndarray) -> np.ndarray:
    """(P,) bool: packets that must be decoded for the wanted frames if each GOP restarts at its keyframe."""
    key = np.array([p.is_keyframe for p in packets], bool)
    key[0] = True
    gop_start = np.maximum.accumulate(np.where(key, np.arange(len(packets)), 0))  # (P,)
    needed = np.zeros(len(packets), bool)
    for j in wanted:
        needed[gop_start[j]: j + 1] = True
    return needed


def _decode_into(
    path: Path, stream, packets: list[av.Packet], dest: dict[int, np.ndarray], box, size: int,
    skip_gops: bool, truncated: bool,
) -> tuple[int, int, bool, int]:
    """Decode `packets` in order, cropping frame j (display number) into dest[j], a (S, S, 3) array.

    Returns (frames of dest written, frames output, whether every packet was fed to the decoder,
    frames dropped at the end). Numbering is by output order, which is display order (AVI timestamps
    of B-frame streams are not). In a truncated stream with B-frames, the frames still held for
    reordering at the end are dropped: the cut may have removed B-frames shown before them, and
    nothing in an AVI tells where they belong. Raises _SkipMismatch where a GOP skip met a stream that
    is not one packet = one frame.
    """
    cc = stream.codec_context
    last = max(dest)
    needed = _gop_needed(packets, np.array(sorted(dest))) if skip_gops else None
    written = 0
    out = 0  # display number of the next frame out
    skipped_since_decode = False
    one_to_one = True  # every packet so far gave exactly one frame at once (no reordering delay)

    def take(frames) -> None:
        nonlocal out, written
        for frame in frames:
            if skipped_since_decode and not frame.key_frame:
                raise _SkipMismatch
            if out in dest:
                crop_frame(frame, box, size, dest[out])
                written += 1
            out += 1

    for k, packet in enumerate(packets):
        if out > last:
            return written, out, False, 0
        if needed is not None and one_to_one and k > 0 and not needed[k]:
            out += 1  # a packet of an I/P stream is one frame
            skipped_since_decode = True
            continue
        try:
            frames = cc.decode(packet)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(path, out, f"decoder error ({cc.name}): {e}") from e
        one_to_one = one_to_one and len(frames) == 1 and frames[0].pict_type != _PICT_B
        if skipped_since_decode and not one_to_one:
            raise _SkipMismatch
        take(frames)
        skipped_since_decode = False
    try:
        held = cc.decode(None)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, out, f"decoder error while flushing: {e}") from e
    if truncated and cc.has_b_frames:
        return written, out, True, len(held)
    take(held)
    return written, out, True, 0


class _SkipMismatch(Exception):
    """A GOP skip landed on a stream where packets and frames do not pair up; decode without skipping."""


def decode_clip(
    path: str | os.PathLike,
    box: np.ndarray | None,
    size: int = DEFAULT_SIZE,
    frames: int | None = DEFAULT_FRAMES,
    *,
    box_frame_size: tuple[int, int] = COLOR_FRAME_SIZE,
) -> Clip:
    """Decode one video and keep the box's crop of `frames` evenly spaced frames (or of every frame).

    path:           an `_rgb.avi` (any container/codec FFmpeg reads)
    box:            (4,) x0, y0, x1, y1 in `box_frame_size` pixels (`person_crop_box`), or None for
                    `fallback_crop_box` (the note says so)
    size:           side S of the stored square, even
    frames:         T, or None for every frame up to MAX_FRAMES (T = min(count, 300); the caller pads)
    box_frame_size: (width, height) the box is given in; scaled to the video's own size

    Returns a Clip with frames (T, S, S, 3) uint8 RGB. Raises VideoDecodeError (file, frame, reason)
    for a file that is empty, not a video, has no video stream, no decodable frame, or fails to decode.
    """
    path = Path(path)
    if size < 2 or size % 2:
        raise ValueError(f"size must be even and >= 2, got {size}")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be >= 1 or None, got {frames}")
    notes = []
    container, stream = _open(path)
    with container:
        video_size = (stream.codec_context.width, stream.codec_context.height)
        if box is None:
            box = fallback_crop_box(box_frame_size)
            notes.append("no person box: cropped the centred square of the frame (fallback_crop_box)")
        video_box = snap_box(scale_box(box, box_frame_size, video_size))
        header = max(int(stream.frames or 0), 0)
        packets, packet_note = _read_packets(path, container, stream)
        if packet_note:
            notes.append(packet_note)
        if not packets:
            raise VideoDecodeError(path, 0, "no video packets (empty or truncated stream)")

        truncated = bool(packet_note) or header > len(packets)

        def attempt(count: int, skip: bool) -> tuple[np.ndarray, np.ndarray, bool, int, bool]:
            index = np.arange(min(count, MAX_FRAMES)) if frames is None else sample_indices(count, frames)
            stack = np.empty((len(index), size, size, 3), np.uint8)  # (T, S, S, 3)
            first = {int(j): t for t, j in reversed(list(enumerate(index)))}
            dest = {j: stack[t] for j, t in first.items()}
            stream.codec_context.flush_buffers()
            written, out, fed_all, dropped = _decode_into(
                path, stream, packets, dest, video_box, size, skip, truncated
            )
            if dropped and not any(n.startswith("truncated stream") for n in notes):
                notes.append(f"truncated stream with B-frames: dropped the last {dropped} frames, "
                             "which it cannot place")
            complete = written == len(dest)
            if complete:
                for t, j in enumerate(index):
                    if first[int(j)] != t:  # a repeated frame of a short video
                        stack[t] = stack[first[int(j)]]
            return stack, index, complete, out, fed_all

        count = len(packets)
        skip = stream.codec_context.name in _GOP_SKIP_CODECS
        try:
            stack, index, complete, out, fed_all = attempt(count, skip)
        except _SkipMismatch:
            stack, index, complete, out, fed_all = attempt(count, False)
        if not complete or (fed_all and out != count):  # the decoder's frames and the packets differ
            if out == 0:
                raise VideoDecodeError(path, 0, f"no decodable frame in {count} packets")
            notes.append(f"{count} packets but {out} decoded frames: sampled the decoded frames")
            count = out
            stack, index, complete, out, fed_all = attempt(count, False)
            if not complete or (fed_all and out != count):
                raise VideoDecodeError(path, out, f"a second pass decoded {out} frames, the first {count}")

    if header and header != count:
        notes.append(f"container header declares {header} frames, the stream holds {count}")
    if frames is not None and count < frames:
        notes.append(f"only {count} frames: repeated to fill {frames}")
    if frames is None and count > MAX_FRAMES:
        notes.append(f"{count} frames: kept the first {MAX_FRAMES}")
    return Clip(
        frames=stack,
        frame_index=index.astype(np.int32),
        num_source_frames=count,
        header_frames=header,
        box=np.array(video_box, np.float32),
        video_size=video_size,
        note="; ".join(notes),
    )
