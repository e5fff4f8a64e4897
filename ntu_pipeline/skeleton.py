"""Parse NTU RGB+D `.skeleton` text files into a `SkeletonRecord` that keeps every field.

Usage:
    record = parse_skeleton("S001C001P001R001A001.skeleton")
    record.joints[record.frame == 0]    # (bodies in frame 0, 25, 12)

The format: line 1 the frame count; per frame a body count (may be 0); per body one line of 10
numbers (BODY_FIELDS, bodyID first), a line with the joint count (25), then 25 lines of 12 numbers
(JOINT_FIELDS). LF and CRLF line ends are both accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_JOINTS = 25
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
