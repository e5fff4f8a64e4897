"""Decode an NTU `_rgb.avi` once, keeping a person-centred square crop of T evenly spaced frames.

Usage:
    clip = decode_clip("S001C001P001R001A001_rgb.avi", box, size=256, frames=32)
    clip.frames             # (32, 256, 256, 3) uint8 RGB, the crop of each sampled frame
    clip.frame_index        # (32,) int32, which source frame each one is (0-based, display order)
    clip.replaced           # (32,) bool, stand-ins for damaged frames (frame_index: the one stored)
    clip.num_source_frames  # frames the video holds; clip.header_frames what its container declared
    clip.box                # (4,) float32, the region cropped, in the video's own pixels
    decode_clip(path, box, frames=None)   # every frame, up to the first 300

The PyAV driver: which packets are which frames, which to decode, which came out damaged (a kept
frame's pixels are `pixels.py`'s). `box` is in colour-camera pixels (1920x1080, `skeleton/color_xy`;
`crop.py`), scaled to the video's size; None crops `fallback_crop_box`, with a note. The decoder is
single-threaded: one process per core is the parallelism (callers: `cv2.setNumThreads(1)` too).

1. Every packet is read first (~1% of the cost). Its frame number is its entry in the container's own
   index (AVI idx1, MP4 sample table; matched by byte position), else its place in the stream, never
   its timestamp: AVI pts count the chunks the demuxer found (one lost to damage shifts all later
   ones) and, with B-frames, follow decode order. The count is the index's length, else the packets'.
2. The frames kept are `sample_indices(count, T)`; feeding stops after the last one needed, and in
   MPEG-4 Part 2 (the NTU DIVX originals: I/P frames, a keyframe every 12) packets after the last
   needed frame of a GOP are not decoded (bit-identical; 6-35% less decoding for T = 32). A packet's
   place, set as its pts, comes back on its frame. An I/P frame is its packet's number; with B-frames
   (H.264 re-encodes) a frame is its rank in output (display) order plus the frames lost before the
   last keyframe out (what is decoded before a keyframe shows before it), and is not placed if a loss
   lies between that keyframe and the packet fed when it came out (nor if held at a truncation).
3. A frame is bad when missing (not in the stream, rejected by the decoder, never output), flagged
   corrupt (`frame.is_corrupt`: FFmpeg's concealment ran or a reference was missing), decoded after a
   bad frame before the next keyframe (prediction carries the damage; FFmpeg flags only the frame it
   hit), or not placed. More than MAX_BAD_SHARE (20%) of the frames needed bad fails the sample
   (VideoDecodeError: file, count, frames). Fewer are each replaced by the nearest good frame decoded
   (the earlier on a tie): `frame_index` records the frame stored (a skeleton taken there stays
   aligned), `replaced` and the note say which. frames=None: the same rule over every frame kept. 20%
   keeps a video with one damaged GOP of the originals (12 frames, 0.4 s: at most 6 of 32 in a video
   of 64 frames or more) and fails two, or a mostly unreadable video. A truncated file (no index of
   what is lost, no unreadable bytes where it was) and a video shorter than T are sampled over the
   frames they hold (repeating frames, `sample_indices`), with a note.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import VideoDecodeError
from .crop import COLOR_FRAME_SIZE, fallback_crop_box, scale_box
from .pixels import crop_frame, snap_box
from .timeline import DEFAULT_FRAMES, DEFAULT_SIZE, MAX_FRAMES, frame_ranges, frames_wanted, nearest_good

MAX_BAD_SHARE = 0.2  # a larger share of bad frames among those needed fails the sample (see 3.)

# Codecs whose keyframes are intra-coded and whose I/P streams can be resumed at any keyframe: the GOP
# skip is used only for these (and only while the decoder outputs one frame per packet, no B-frames).
_GOP_SKIP_CODECS = frozenset({"mpeg4"})
_PICT_B = 3  # AV_PICTURE_TYPE_B (PyAV 18 gives frame.pict_type as a plain int)


@dataclass(frozen=True, eq=False)
class Clip:
    """The stored crop of one video.

    frames:            (T, S, S, 3) uint8 RGB
    frame_index:       (T,) int32, the source frame (0-based, display order) of each stored frame
    num_source_frames: frames the video stream holds (damaged ones included)
    header_frames:     frames the container header declares (0 when it does not say)
    box:               (4,) float32 x0, y0, x1, y1 cropped, in the video's own pixels (`snap_box`:
                       on a 4-pixel grid; may extend past the image, where the crop is black)
    video_size:        (width, height) of the video
    note:              what a user may want to know ('' when nothing): repeated frames, fallback box,
                       header/content mismatch, truncation, damaged frames and their stand-ins
    replaced:          (T,) bool, stored frames standing in for a bad one (frame_index: the stand-in)
    """

    frames: np.ndarray
    frame_index: np.ndarray
    num_source_frames: int
    header_frames: int
    box: np.ndarray
    video_size: tuple[int, int]
    note: str
    replaced: np.ndarray


def _open(path: Path):
    """The container and its first video stream, set up for single-threaded decoding."""
    try:
        container = av.open(str(path)) if path.stat().st_size else None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoDecodeError(path, None, f"cannot be opened as a video: {e}") from e
    if container is None:
        raise VideoDecodeError(path, None, "empty file (0 bytes)")
    if not container.streams.video:
        kinds = [s.type for s in container.streams] or ["none"]
        container.close()
        raise VideoDecodeError(path, None, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    stream.codec_context.thread_type = "NONE"
    return container, stream


@dataclass(frozen=True, eq=False)
class _Stream:
    """The packets of the video stream and the frames they are (`_read_stream`).

    packets: P packets, in decode order; numbers: (P,) int64, their frame numbers (decode order,
    increasing; a gap is a lost frame); count: frames in the stream, lost ones included; cut: the
    stream ends early (truncated) with no index of what is lost; notes: what reading found.
    """

    packets: list
    numbers: np.ndarray
    count: int
    cut: bool
    notes: tuple[str, ...]


def _read_stream(path: Path, container, stream, header: int) -> _Stream:
    """Every non-empty packet of the stream, numbered by the container's index where it has one."""
    # The index as the file declares it, before demuxing adds what it reads; AVI's idx1 points at a
    # chunk's 8-byte header, MP4's at the sample itself.
    entries = {e.pos: r for r, e in enumerate(stream.index_entries)}
    declared = len(stream.index_entries)
    packets, notes = [], []
    try:
        for packet in container.demux(stream):
            if packet.size:  # the demuxer's final empty packet means end of stream, not a frame
                packets.append(packet)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, len(packets), f"demuxing failed: {e}") from e
    numbers = np.array([entries.get(p.pos, entries.get(p.pos - 8, -1)) for p in packets], np.int64)
    found = numbers[numbers >= 0]  # the index is the file's own if it covers the stream, in order
    by_index = declared >= len(packets) and 2 * len(found) >= len(packets) and np.all(np.diff(found) > 0)
    numbers, count = (numbers, declared) if by_index else (np.arange(len(packets)), len(packets))
    truncated = bool(packets) and packets[-1].is_corrupt
    if truncated:  # the file ends inside this packet: no frame from here on
        packets.pop()
        count, numbers = (int(numbers[-1]) if numbers[-1] >= 0 else count), numbers[:-1]
        notes.append(f"last packet (frame {count}) truncated, dropped")
    if (numbers < 0).any():  # chunks the demuxer found in damaged data, where the index has none
        notes.append(f"{int((numbers < 0).sum())} packets not in the container's index, ignored")
        packets = [p for p, n in zip(packets, numbers, strict=True) if n >= 0]
        numbers = numbers[numbers >= 0]
    if not packets:
        raise VideoDecodeError(path, 0, "no video packets (empty or truncated stream)")
    if header > count and packets[-1].pos > 0:
        # A truncated file lacks the bytes of its lost frames; a damaged one holds them, unreadable.
        unread = path.stat().st_size - packets[-1].pos - packets[-1].size
        if 2 * unread * len(packets) >= (header - count) * sum(p.size for p in packets):
            count = header  # the frames past the last packet read are lost
    missing = np.setdiff1d(np.arange(count), numbers)
    if len(missing):
        notes.append(f"{len(missing)} of {count} frames not in the stream (decode order "
                     f"{frame_ranges(missing)})")
    return _Stream(packets, numbers, count, header > count or truncated, tuple(notes))


def _gop_needed(packets: list[av.Packet], wanted: np.ndarray) -> np.ndarray:
    """(P,) bool: packets that must be decoded for the wanted packets if each GOP restarts at its keyframe."""
    key = np.array([p.is_keyframe for p in packets], bool)
    key[0] = True
    gop_start = np.maximum.accumulate(np.where(key, np.arange(len(packets)), 0))  # (P,)
    needed = np.zeros(len(packets), bool)
    for j in wanted:
        needed[gop_start[j]: j + 1] = True
    return needed


class _SkipMismatch(Exception):
    """A GOP skip landed on a stream where packets and frames do not pair up; decode without skipping."""


@dataclass(frozen=True, eq=False)
class _Pass:
    """What one decoding pass kept (`_decode_pass`).

    frames: (T, S, S, 3) uint8 crops of `index` (T,) int64; a slot is valid only where its frame is
    in `cropped`; good: (G,) int64, sorted, every good frame decoded; end: 1 + the last frame placed
    (0: none); fed_all: every packet was fed (else feeding stopped after the last frame needed);
    damaged: the bad frames seen (needed or not); error: the first decoder error ('' if none).
    """

    frames: np.ndarray
    index: np.ndarray
    good: np.ndarray
    cropped: frozenset[int]
    end: int
    fed_all: bool
    damaged: tuple[int, ...]
    error: str


class _Outputs:
    """The frames out of the decoder, in order: each one placed, the wanted ones cropped (see 2.) into
    `stack` (T, S, S, 3) at `first` (frame -> its first slot). rows: a row per frame out: decode number
    (-1: untagged), display number, the packet being fed when it came out (P: the final flush, P + 1:
    drained after feeding stopped), corrupt, keyframe, and in a reordering stream the decode number of
    the last keyframe out (else None)."""

    def __init__(self, cc, numbers: np.ndarray, first: dict[int, int], box, stack: np.ndarray):
        self.cc, self.numbers, self.first, self.box, self.stack = cc, numbers, first, box, stack
        self.rows: list[tuple[int, int, int, bool, bool, int | None]] = []
        self.writer: dict[int, int] = {}  # display number -> the row whose crop is in its slot
        self.reorder, self.offset, self.last_key = False, 0, -1  # B-frames: number = rank + offset

    def next_number(self) -> int:  # the display number of the next frame out
        return len(self.rows) + self.offset if self.reorder else self.rows[-1][1] + 1 if self.rows else 0

    def take(self, frames, fed_at: int, after_skip: bool) -> None:
        """Place the frames out while packet `fed_at` was fed (_SkipMismatch: a non-key after a skip)."""
        rows, cc, n_packets = self.rows, self.cc, len(self.numbers)
        for frame in frames:
            if after_skip and not frame.key_frame:
                raise _SkipMismatch
            d = int(self.numbers[frame.pts]) if frame.pts is not None and 0 <= frame.pts < n_packets else -1
            if not self.reorder and (cc.has_b_frames or frame.pict_type == _PICT_B
                                     or rows and d < rows[-1][0]):
                self.reorder, self.offset = True, rows[-1][1] + 1 - len(rows) if rows else 0
            if self.reorder and frame.key_frame and d >= 0:
                self.last_key, self.offset = d, d - sum(1 for row in rows if 0 <= row[0] < d)
            n = len(rows) + self.offset if self.reorder else d
            if n in self.first and n not in self.writer:
                crop_frame(frame, self.box, self.stack.shape[1], self.stack[self.first[n]])
                self.writer[n] = len(rows)
            rows.append((d, n, fed_at, frame.is_corrupt, frame.key_frame,
                         self.last_key if self.reorder else None))


def _decode_pass(stream, st: _Stream, index: np.ndarray, box, size: int, skip_gops: bool) -> _Pass:
    """Decode the packets in order, cropping the frames of `index` as they come out (see 2. and 3.);
    _SkipMismatch where a GOP skip met a stream that is not one packet = one frame."""
    cc = stream.codec_context
    cc.flush_buffers()
    stack = np.empty((len(index), size, size, 3), np.uint8)  # (T, S, S, 3)
    first = {int(j): t for t, j in reversed(list(enumerate(index)))}  # frame -> its first slot
    last, n_packets, numbers = max(first), len(st.packets), st.numbers
    at = {int(n): k for k, n in enumerate(numbers)}
    needed = _gop_needed(st.packets, [at[j] for j in sorted(first) if j in at]) if skip_gops else None
    out = _Outputs(cc, numbers, first, box, stack)
    fed = np.zeros(n_packets, bool)
    error, fed_all, skipped_since_decode, one_to_one = "", True, False, True  # one_to_one: 1 frame/packet
    for k, packet in enumerate(st.packets):
        if out.next_number() > last:  # every frame needed is out
            fed_all = False
            break
        if needed is not None and one_to_one and k > 0 and not needed[k]:
            skipped_since_decode = True
            continue
        packet.pts, fed[k] = k, True  # the tag its frame carries out, through any reordering
        try:
            frames = cc.decode(packet)
        except av.error.FFmpegError as e:
            error = error or f"decoder error ({cc.name}) at frame {numbers[k]}: {e}"
            continue
        one_to_one = one_to_one and len(frames) == 1 and frames[0].pict_type != _PICT_B
        if skipped_since_decode and not one_to_one:
            raise _SkipMismatch
        out.take(frames, k, skipped_since_decode)
        skipped_since_decode = False
    try:
        out.take(cc.decode(None), n_packets if fed_all else n_packets + 1, skipped_since_decode)
    except av.error.FFmpegError as e:
        error = error or f"decoder error while flushing ({cc.name}): {e}"
    good, damaged, end = _judge(st, fed, out.rows)
    cropped = frozenset(n for n, i in out.writer.items() if i in good)
    for t, j in enumerate(index):
        if first[int(j)] != t and int(j) in cropped:  # a repeated frame of a short video
            stack[t] = stack[first[int(j)]]
    good_frames = np.array(sorted({out.rows[i][1] for i in good}), np.int64)
    return _Pass(stack, index, good_frames, cropped, end, fed_all, damaged, error)


def _judge(st: _Stream, fed: np.ndarray, outs: list) -> tuple[set[int], tuple[int, ...], int]:
    """(the rows of `outs` that are good, the bad frames, 1 + the last frame placed) (see 3.)."""
    out_of = {row[0]: i for i, row in reversed(list(enumerate(outs)))}  # decode number -> its first row
    lost = set(range(st.count)).difference(st.numbers.tolist())
    lost |= {n for n in st.numbers[fed].tolist() if n not in out_of}
    spoiled, bad = False, np.zeros(st.count, bool)  # (count,) by decode number
    for d in range(st.count):
        i = out_of.get(d)
        if i is not None and outs[i][4]:  # a keyframe: what follows is predicted from it, not before
            spoiled = False
        spoiled = bad[d] = spoiled or d in lost or (i is not None and outs[i][3])
    open_ends = sorted(lost | ({st.count} if st.cut else set()))  # where a frame may be missing
    placed = []
    for d, _, fed_at, _, _, anchor in outs:
        if anchor is None:  # no reordering: the packet's number is the frame's
            placed.append(0 <= d < st.count)
            continue
        upto = st.numbers[fed_at] if fed_at < len(st.numbers) else np.inf
        j = bisect_left(open_ends, anchor)
        placed.append(fed_at <= len(st.numbers) and d >= 0 and (j == len(open_ends) or open_ends[j] > upto))
    good = {i for i, (d, n, *_) in enumerate(outs) if placed[i] and 0 <= n < st.count and not bad[d]}
    damaged = {n for i, (d, n, *_) in enumerate(outs) if placed[i] and bad[d]} | lost
    end = 1 + max((row[1] for i, row in enumerate(outs) if placed[i]), default=-1)
    return good, tuple(sorted(damaged)), end


def _sample_pass(stream, st: _Stream, index: np.ndarray, box, size: int) -> _Pass:
    """`_decode_pass` with the GOP skip where the codec allows it and it fits the stream."""
    try:
        return _decode_pass(stream, st, index, box, size, stream.codec_context.name in _GOP_SKIP_CODECS)
    except _SkipMismatch:
        return _decode_pass(stream, st, index, box, size, False)


def _replace_bad(path: Path, stream, st: _Stream, run: _Pass, box, size: int):
    """(frames, frame_index, replaced, note): the pass's crops, each bad one replaced by the nearest good
    frame decoded; VideoDecodeError where none is good or more than MAX_BAD_SHARE are bad."""
    index, frames, replaced = run.index.copy(), run.frames, np.zeros(len(run.index), bool)
    bad = [t for t, j in enumerate(index) if int(j) not in run.cropped]
    if not bad:
        return frames, index, replaced, ""
    why = f" ({run.error})" if run.error else ""
    if not len(run.good):
        raise VideoDecodeError(path, int(index[bad[0]]), f"no frame of {st.count} decoded cleanly{why}")
    if len(bad) > MAX_BAD_SHARE * len(index):
        raise VideoDecodeError(path, int(index[bad[0]]), (
            f"{len(bad)} of the {len(index)} frames needed are corrupt or missing (more than "
            f"{MAX_BAD_SHARE:.0%}): frames {frame_ranges(index[bad])}{why}"))
    js = index[bad]
    source = nearest_good(run.good, js)  # (B,)
    slot = {int(j): t for t, j in reversed(list(enumerate(run.index))) if int(j) in run.cropped}
    extra = np.array(sorted(set(source.tolist()) - set(slot)), np.int64)  # stand-ins not yet cropped
    more = _sample_pass(stream, st, extra, box, size) if len(extra) else None
    if more is not None and len(more.cropped) < len(extra):
        raise VideoDecodeError(path, int(extra[0]), "a good frame decoded differently in a second pass")
    pairs = [f"{j}->{r}" for j, r in zip(js.tolist(), source.tolist(), strict=True)]
    for t, r in zip(bad, source.tolist(), strict=True):
        frames[t] = frames[slot[r]] if r in slot else more.frames[int(np.searchsorted(extra, r))]
        index[t], replaced[t] = r, True
    shown = ", ".join(pairs[:12]) + (", ..." if len(pairs) > 12 else "")
    return frames, index, replaced, (f"replaced {len(bad)} of the {len(index)} frames needed, corrupt or "
                                     f"missing, by the nearest good frame: {shown}")


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
    for a file that is empty, not a video, without a video stream or good frame, or too damaged (3.).
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
        st = _read_stream(path, container, stream, header)
        notes.extend(st.notes)
        count = st.count
        run = _sample_pass(stream, st, frames_wanted(count, frames), video_box, size)
        if st.cut and run.fed_all and 0 < run.end < count:  # B-frames held at the cut have no place
            notes.append(f"truncated stream: its last {count - run.end} frames cannot be placed, "
                         f"sampled the first {run.end}")
            count = run.end
            run = _sample_pass(stream, st, frames_wanted(count, frames), video_box, size)
        stack, index, replaced, note = _replace_bad(path, stream, st, run, video_box, size)
        if note or run.damaged:
            notes.append(note or f"damaged frames {frame_ranges(run.damaged)}, none of them needed")

    if header and header != count:
        notes.append(f"container header declares {header} frames, the stream holds {count}")
    if frames is not None and count < frames:
        notes.append(f"only {count} frames: repeated to fill {frames}")
    if frames is None and count > MAX_FRAMES:
        notes.append(f"{count} frames: kept the first {MAX_FRAMES}")
    return Clip(frames=stack, frame_index=index.astype(np.int32), num_source_frames=count,
                header_frames=header, box=np.array(video_box, np.float32), video_size=video_size,
                note="; ".join(notes), replaced=replaced)
