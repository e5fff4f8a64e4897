"""Which frames of a video a clip keeps, and which good frame stands in for a bad one: pure functions of
frame numbers (no PyAV), used by `decode.py`.

    sample_indices(103, 32)              # (32,) the centres of 32 equal segments of 103 frames
    frames_wanted(103, None)             # every frame, up to MAX_FRAMES
    nearest_good(good, bad)              # for each bad frame number, the nearest good one (earlier on a tie)
    frame_ranges([1, 2, 3, 7])           # "1-3, 7", for notes and errors
"""

from __future__ import annotations

import numpy as np

MAX_FRAMES = 300  # the store's time axis: frames=None keeps at most this many (NTU videos have <= 300)
DEFAULT_FRAMES = 32  # frames a clip keeps unless told otherwise (I3D's input length)
DEFAULT_SIZE = 256  # side of the stored square crop unless told otherwise


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


def frame_ranges(numbers) -> str:
    """'1-3, 7, 9-11': frame numbers as sorted runs, for notes and errors."""
    n = np.unique(np.asarray(list(numbers), np.int64))
    runs = np.split(n, np.flatnonzero(np.diff(n) != 1) + 1)
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def frames_wanted(count: int, frames: int | None) -> np.ndarray:
    """(T,) int64: the frames a clip keeps of `count` (every one, up to MAX_FRAMES, for None)."""
    return np.arange(min(count, MAX_FRAMES)) if frames is None else sample_indices(count, frames)


def nearest_good(good: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """(B,) int64: for each frame number of `bad` (B,), the nearest of `good` (G,) sorted, non-empty; the
    earlier one on a tie."""
    at = np.searchsorted(good, bad)  # (B,): where each bad frame falls among the good ones
    below = np.where(at > 0, good[np.maximum(at - 1, 0)], -1)  # -1: none
    above = np.where(at < len(good), good[np.minimum(at, len(good) - 1)], -1)
    return np.where((below >= 0) & ((above < 0) | (bad - below <= above - bad)), below, above)
