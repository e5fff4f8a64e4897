"""Parse NTU RGB+D `.skeleton` text files into a `SkeletonRecord` that keeps every field.

Usage:
    record = parse_skeleton("S001C001P001R001A001.skeleton")
    record.joints[record.frame == 0]    # (bodies in frame 0, 25, 12)
    parse_skeleton_bytes(data, source="upload 3")    # the same from bytes; `source` names it in errors
    check_camera_coordinates(record)    # SkeletonFormatError for a joint no Kinect can have measured

The format: line 1 the frame count; per frame a body count (may be 0); per body one line of 10
numbers (BODY_FIELDS, bodyID first), a line with the joint count (25), then 25 lines of 12 numbers
(JOINT_FIELDS). LF and CRLF line ends are both accepted, with or without a final one, and blank lines
after the last frame. Anything else raises SkeletonFormatError with the file, line, what was expected
and what was found.

Every number equals Python's `float(token)` rounded to float32, and bodyID is the exact uint64 (the
real IDs are above 2**53, and two performers' IDs can differ in the last digits only). The parse is a
compiled numba kernel (`_tokenize.py`), ~25x faster than a plain line-by-line Python reader; the
first process ever to use it compiles it (~10 s, then cached in __pycache__).

The parse keeps what the file says; whether the numbers are a Kinect's is `check_camera_coordinates`'s
to say (the skeleton stage calls it), on the record, so the compiled path and Python's `float` fallback
are judged alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SkeletonFormatError
from ._tokenize import (
    BAD_TOKEN,
    BODY_COUNT_LINE,
    BODY_LINE,
    END_OF_FILE,
    FIELD_COUNT,
    FRAME_COUNT_LINE,
    JOINT_COUNT,
    JOINT_COUNT_LINE,
    JOINT_LINE,
    OK,
    TO_BODY_INFO,
    padded_size,
    scan_skeleton,
)

NUM_JOINTS = 25
# Kinect v2 measures depth over 0.5-4.5 m (about 8 m at most, past its specification), in a 70 x 60
# degree field of view: no joint it tracks lies behind the camera or farther than 10 m along any axis.
# The bound is generous so that no real recording is refused (NTU's real samples here: x -1.0..1.9,
# y -0.7..1.3, z 3.0..5.2 m) while a corrupt number (1e30 m) is.
MAX_CAMERA_METRES = 10.0
BODY_FIELDS = (
    "bodyID", "clippedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
    "handRightState", "isRestricted", "leanX", "leanY", "trackingState",
)
JOINT_FIELDS = (
    "x", "y", "z", "depthX", "depthY", "colorX", "colorY",
    "orientationW", "orientationX", "orientationY", "orientationZ", "trackingState",
)


@dataclass(frozen=True, eq=False)
class SkeletonRecord:
    """Every body of every frame of one file, as rows (R = total bodies over all frames).

    source:            the file (or label) it was parsed from, for error messages
    num_frames:        F, the frame count on line 1
    bodies_per_frame:  (F,) int32
    frame:             (R,) int32 frame index of each body row, non-decreasing
    body_id:           (R,) uint64 bodyID, exact (parsed as an integer, never through a float)
    body_info:         (R, 9) float32, BODY_FIELDS[1:] in order
    joints:            (R, 25, 12) float32, JOINT_FIELDS in order
    """

    source: str
    num_frames: int
    bodies_per_frame: np.ndarray
    frame: np.ndarray
    body_id: np.ndarray
    body_info: np.ndarray
    joints: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.frame)


def parser_is_compiled() -> bool:
    """Whether the kernel's machine code is in numba's on-disk cache (else the first call compiles)."""
    try:
        return Path(scan_skeleton._cache._cache_file._index_path).exists()
    except AttributeError:  # numba's cache internals moved: assume compiled rather than say wrongly
        return True


def parse_skeleton(path: str | Path) -> SkeletonRecord:
    """Read and parse one `.skeleton` file; see `parse_skeleton_bytes`."""
    with open(path, "rb", buffering=0) as f:
        # read straight into the kernel's padded buffer: no copy of the text on the way
        size = os.fstat(f.fileno()).st_size
        text = np.empty(padded_size(size), np.uint8)
        view = memoryview(text)
        n = 0
        while n < size and (got := f.readinto(view[n:size])):
            n += got
        more = f.read()
    if more:  # the file grew while it was read
        return parse_skeleton_bytes(text[:n].tobytes() + more, str(path))
    return _parse(text, n, str(path))


def parse_skeleton_bytes(data: bytes, source: str) -> SkeletonRecord:
    """Parse the text of a `.skeleton` file, keeping every field (shapes in `SkeletonRecord`).

    Raises SkeletonFormatError, naming `source` and the 1-based line, for an empty file, a file that
    ends early, a line with the wrong number of fields, a token that is not a number (nan and inf
    included: the Kinect SDK never writes them), a count that is not a non-negative integer, a joint
    count other than 25, and anything but blanks after the last frame. Takes about 0.5 ms for a
    typical 270 kB file (`bench/skeleton_stage.py`); the work is done by `_tokenize.scan_skeleton`.
    """
    text = np.empty(padded_size(len(data)), np.uint8)
    text[: len(data)] = np.frombuffer(data, np.uint8)
    return _parse(text, len(data), source)


def check_camera_coordinates(record: SkeletonRecord) -> None:
    """SkeletonFormatError, naming the file, the line, the frame, body and joint, for the first joint
    whose camera coordinates no Kinect v2 produces: |x| or |y| > MAX_CAMERA_METRES, z < 0 or z >
    MAX_CAMERA_METRES, or not finite (the parser already refuses nan, inf and numbers past float32)."""
    xyz = record.joints[..., :3]  # (R, 25, 3)
    with np.errstate(invalid="ignore"):
        bad = ((np.abs(xyz[..., :2]) > MAX_CAMERA_METRES).any(axis=-1) | (xyz[..., 2] < 0)
               | (xyz[..., 2] > MAX_CAMERA_METRES) | ~np.isfinite(xyz).all(axis=-1))  # (R, 25)
    if not bad.any():
        return
    row, joint = (int(i) for i in np.argwhere(bad)[0])
    frame = int(record.frame[row])
    body = row - int(np.searchsorted(record.frame, frame))  # 0-based, within its frame
    # lines: the frame count, a body-count line per frame up to this one, 27 per earlier body, then
    # this body's line and joint count
    line = 1 + (frame + 1) + 27 * row + 2 + joint + 1
    x, y, z = (float(v) for v in xyz[row, joint])
    m = MAX_CAMERA_METRES
    raise SkeletonFormatError(
        record.source, line,
        f"camera coordinates a Kinect v2 can measure (|x|, |y| <= {m:g} m, 0 <= z <= {m:g} m; its depth "
        "range is 0.5-8 m)",
        f"x, y, z = {x:.6g}, {y:.6g}, {z:.6g} (frame {frame + 1}, body {body + 1}, joint {joint + 1})")


def _parse(text: np.ndarray, n: int, source: str) -> SkeletonRecord:
    """The record of the file in text[:n], text as `_tokenize.scan_skeleton` wants it."""
    scan = scan_skeleton(text, n)
    fixups = scan.fixups.tolist()  # the rare tokens past the kernel's exact paths, in file order
    values = [_float32(text, start, end, line, source) for _, _, start, end, line in fixups]
    if scan.error[0] != OK:  # after the fixups: any one of them comes before the kernel's error
        raise _format_error(text, source, scan)
    rows = scan.num_rows
    info_width, joint_width = len(BODY_FIELDS) - 1, len(JOINT_FIELDS)
    body_info = scan.body_info[: rows * info_width].reshape(rows, info_width)  # (R, 9)
    joints = scan.joints[: rows * NUM_JOINTS * joint_width]
    joints = joints.reshape(rows, NUM_JOINTS, joint_width)  # (R, 25, 12)
    for (which, index, *_), value in zip(fixups, values, strict=True):
        (body_info if which == TO_BODY_INFO else joints).reshape(-1)[index] = value
    return SkeletonRecord(
        source=source,
        num_frames=int(scan.num_frames),
        bodies_per_frame=scan.bodies_per_frame[: scan.num_frames],
        frame=scan.frame[:rows],
        body_id=scan.body_id[:rows],
        body_info=body_info,
        joints=joints,
    )


def _float32(text: np.ndarray, start: int, end: int, line: int, source: str) -> np.float32:
    """float(token) as float32, for a token the kernel left to Python (exponents past +-22, ...)."""
    token = text[start:end].tobytes()
    with np.errstate(over="ignore"):
        value = np.float32(float(token))
    if not np.isfinite(value):
        raise SkeletonFormatError(source, line, "a number within float32 range", repr(token.decode()))
    return value


_LINES = {  # what each kind of line is called, and its fields
    FRAME_COUNT_LINE: ("the frame-count line", ("frame count",)),
    BODY_COUNT_LINE: ("a body-count line", ("body count",)),
    BODY_LINE: ("a body line", BODY_FIELDS),
    JOINT_COUNT_LINE: ("a joint-count line", ("joint count",)),
    JOINT_LINE: ("a joint line", JOINT_FIELDS),
}


def _format_error(text: np.ndarray, source: str, scan) -> SkeletonFormatError:
    """The SkeletonFormatError for the kernel's error record (see `_tokenize`)."""
    code, line, context, found, start, end = scan.error.tolist()
    name, fields = _LINES[context]
    token = text[start:end].tobytes().decode("utf-8", "backslashreplace").rstrip("\r")
    token = repr(token if len(token) <= 40 else token[:40] + "...")
    if code == END_OF_FILE:
        if context == FRAME_COUNT_LINE:
            return SkeletonFormatError(source, line, "the frame count", "an empty file")
        return SkeletonFormatError(source, line, name, "the end of the file")
    if code == FIELD_COUNT:
        want = len(fields)
        return SkeletonFormatError(
            source, line, f"{want} field{'s' * (want > 1)} in {name}",
            "an empty line" if found == 0 else f"{found} field{'s' * (found > 1)}",
        )
    if code == BAD_TOKEN:
        if context in (FRAME_COUNT_LINE, BODY_COUNT_LINE, JOINT_COUNT_LINE):
            return SkeletonFormatError(source, line, f"a non-negative integer {fields[0]}", token)
        kind = "an unsigned 64-bit integer" if context == BODY_LINE and found == 0 else "a number"
        return SkeletonFormatError(
            source, line, f"{kind} for {fields[found]} (field {found + 1} of {name})", token
        )
    if code == JOINT_COUNT:
        return SkeletonFormatError(source, line, f"joint count {NUM_JOINTS}", str(found))
    return SkeletonFormatError(
        source, line, f"the end of the file after its {scan.num_frames} frames", f"more data: {token}"
    )
