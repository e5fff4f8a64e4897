"""From the bodies of a `SkeletonRecord` to (up to) two actors, and their motion.

Usage:
    actors = select_actors(parse_skeleton(path))
    actors.joints            # (T, 2, 25, 3) float32, camera coordinates in metres, T = frames kept
    motion(actors.joints, actors.present)   # (T, 2, 25, 3), M_t = S_{t+1} - S_t

The denoising and the choice of actors follow the field's de-facto standard, CTR-GCN's
`get_raw_denoised_data` (repeated by PYSKL), so that results stay comparable with published work:

1. A file with one body is not denoised.
2. Bodies tracked for <= 11 frames are dropped (if that would drop every body, the longest is kept and
   the decision is recorded in `ActorSequence.note`).
3. If two or more remain, a frame of a body is "wide" when the x-range of its 25 joints exceeds
   0.8 x their y-range. Bodies are visited in order of first appearance, and while more than one body
   is left: a body whose wide ratio is >= 0.69754 is dropped; otherwise, if it has any wide frame, its
   motion is lowered to min(motion, the motion over its non-wide frames only).
4. A body's motion is the sum over x, y, z of the variance over all its joints and frames.
5. Actor 1 is the body with the most motion; each further body, in decreasing motion (ties keep the
   order of first appearance), joins actor 1 if its [first, last] frame span does not overlap actor 1's
   span (min(end1, end) - max(start1, start) <= 0: spans that only touch do not overlap), extending
   that span; else actor 2 by the same test (actor 2's span starts as [0, 0], as in the reference);
   else it is discarded.
6. Frames where both actors are empty are dropped.

One deliberate difference: each body keeps its true frame indices. The reference scripts copy a body's
rows contiguously from its first frame, so a body that disappears and comes back is shifted to the
frames right after its last one; that flaw is not copied here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .parse import JOINT_FIELDS, NUM_JOINTS, SkeletonRecord

MAX_ACTORS = 2
MIN_TRACKED_FRAMES = 12  # bodies tracked for <= 11 frames are noise
WIDE_SPREAD = 0.8  # a frame is wide when x-range > 0.8 * y-range
MAX_WIDE_RATIO = 0.69754  # a body with this share of wide frames or more is noise

_XYZ = [JOINT_FIELDS.index(f) for f in ("x", "y", "z")]
_COLOR = [JOINT_FIELDS.index(f) for f in ("colorX", "colorY")]
_TRACKING = JOINT_FIELDS.index("trackingState")


@dataclass(frozen=True, eq=False)
class Body:
    """One tracked body: its rows of the record, in frame order."""

    body_id: int
    rows: np.ndarray  # (F_b,) its row indices in the record
    frames: np.ndarray  # (F_b,) int32, true frame indices
    xyz: np.ndarray  # (F_b, 25, 3) float32
    motion: float


@dataclass(frozen=True, eq=False)
class ActorSequence:
    """The two actor slots over the frames kept (T of them).

    joints:      (T, 2, 25, 3) float32, zero where a slot is empty
    color_xy:    (T, 2, 25, 2) float32 pixel coordinates in the 1920x1080 RGB frame
    tracking:    (T, 2, 25) int8 joint tracking state (0 not tracked, 1 inferred, 2 tracked)
    present:     (T, 2) bool, whether a body fills the slot in that frame
    frame_index: (T,) int32, the frame of the file each kept frame comes from
    actor_ids:   bodyIDs that fill slot 0 and slot 1 (a slot may be filled by several bodies in turn)
    num_bodies:  distinct bodyIDs in the file, before denoising
    note:        decisions a user may want to know about ('' when none)
    """

    joints: np.ndarray
    color_xy: np.ndarray
    tracking: np.ndarray
    present: np.ndarray
    frame_index: np.ndarray
    actor_ids: tuple[tuple[int, ...], tuple[int, ...]]
    num_bodies: int
    note: str

    @property
    def num_frames(self) -> int:
        return len(self.frame_index)


def body_motion(xyz: np.ndarray) -> float:
    """Sum over x, y, z of the variance over all joints and frames; xyz (F, 25, 3)."""
    return float(np.var(xyz.reshape(-1, 3), axis=0, dtype=np.float64).sum())


def wide_frames(xyz: np.ndarray) -> np.ndarray:
    """(F,) bool: frames whose x-range exceeds 0.8 x their y-range; xyz (F, 25, 3)."""
    spread = xyz.max(axis=1) - xyz.min(axis=1)  # (F, 3)
    return spread[:, 0] > WIDE_SPREAD * spread[:, 1]


def split_bodies(record: SkeletonRecord) -> list[Body]:
    """The record's rows grouped by bodyID, in order of first appearance."""
    ids, first_row, inverse = np.unique(record.body_id, return_index=True, return_inverse=True)
    bodies = []
    for k in np.argsort(first_row, kind="stable"):
        rows = np.flatnonzero(inverse == k)
        xyz = record.joints[rows][:, :, _XYZ]
        bodies.append(Body(int(ids[k]), rows, record.frame[rows], xyz, body_motion(xyz)))
    return bodies


def denoise(bodies: list[Body]) -> tuple[list[Body], str]:
    """Steps 1-4 of the module docstring: the bodies that survive, in order of first appearance."""
    if len(bodies) <= 1:
        return bodies, ""
    note = ""
    kept = [b for b in bodies if len(b.frames) >= MIN_TRACKED_FRAMES]
    if not kept:
        longest = max(bodies, key=lambda b: len(b.frames))  # first of the longest on ties
        kept = [longest]
        note = (f"every body was tracked for <= {MIN_TRACKED_FRAMES - 1} frames; "
                f"kept the longest ({longest.body_id}, {len(longest.frames)} frames)")
    if len(kept) == 1:
        return kept, note

    survivors = list(kept)
    for body in kept:
        if len(survivors) == 1:
            break
        wide = wide_frames(body.xyz)
        if not wide.any():
            continue
        if wide.mean() >= MAX_WIDE_RATIO:
            survivors.remove(body)
        else:
            lowered = min(body.motion, body_motion(body.xyz[~wide]))
            survivors[survivors.index(body)] = replace(body, motion=lowered)
    return survivors, note


def assign_slots(bodies: list[Body]) -> list[tuple[Body, int]]:
    """Step 5: (body, slot) pairs, slot 0 or 1; discarded bodies are left out."""
    ordered = sorted(bodies, key=lambda b: -b.motion)  # stable: ties keep first appearance
    if not ordered:
        return []
    actor1 = ordered[0]
    spans = [[int(actor1.frames[0]), int(actor1.frames[-1])], [0, 0]]
    assigned = [(actor1, 0)]
    for body in ordered[1:]:
        start, end = int(body.frames[0]), int(body.frames[-1])
        for slot, span in enumerate(spans):
            if min(span[1], end) - max(span[0], start) <= 0:
                span[0], span[1] = min(span[0], start), max(span[1], end)
                assigned.append((body, slot))
                break
    return assigned


def select_actors(record: SkeletonRecord) -> ActorSequence:
    """Denoise the record's bodies and lay them out as two actor slots over the frames kept."""
    bodies = split_bodies(record)
    survivors, note = denoise(bodies)
    assigned = assign_slots(survivors)

    F = record.num_frames
    joints = np.zeros((F, MAX_ACTORS, NUM_JOINTS, 3), np.float32)
    color = np.zeros((F, MAX_ACTORS, NUM_JOINTS, 2), np.float32)
    tracking = np.zeros((F, MAX_ACTORS, NUM_JOINTS), np.int8)
    present = np.zeros((F, MAX_ACTORS), bool)
    actor_ids: tuple[list[int], list[int]] = ([], [])
    for body, slot in assigned:
        rows = record.joints[body.rows]  # (F_b, 25, 12)
        joints[body.frames, slot] = body.xyz
        color[body.frames, slot] = rows[:, :, _COLOR]
        tracking[body.frames, slot] = rows[:, :, _TRACKING].astype(np.int8)
        present[body.frames, slot] = True
        actor_ids[slot].append(body.body_id)

    keep = present.any(axis=1)
    return ActorSequence(
        joints=joints[keep],
        color_xy=color[keep],
        tracking=tracking[keep],
        present=present[keep],
        frame_index=np.flatnonzero(keep).astype(np.int32),
        actor_ids=(tuple(actor_ids[0]), tuple(actor_ids[1])),
        num_bodies=len(bodies),
        note=note,
    )


def motion(joints: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per-actor motion M_t = S_{t+1} - S_t, zero where either frame is empty and at the last frame.

    joints: (T, M, V, 3); present: (T, M) bool. Returns (T, M, V, 3) of joints' dtype.
    """
    out = np.zeros_like(joints)
    both = present[1:] & present[:-1]  # (T-1, M)
    out[:-1] = np.where(both[:, :, None, None], joints[1:] - joints[:-1], 0)
    return out
