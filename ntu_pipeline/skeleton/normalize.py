"""The standard skeleton normalisations, applied by a loader (the store keeps camera coordinates).

Usage:
    joints = store["skeleton/joints"][i, :n]                 # (T, M, V, 3)
    present = np.abs(joints).sum(axis=(2, 3)) > 0             # (T, M)
    joints = center_on_spine(joints, present)
    joints = align_to_axes(joints, present)

These follow the convention of ST-GCN/PYSKL `pre_normalization`: centre on the spine joint of actor 1,
then rotate so that actor 1's hip -> spine bone (first frame) points along +z and its left -> right
shoulder bone along +x. Joint indices are NTU's, 0-based.
"""

from __future__ import annotations

import numpy as np

SPINE_BASE, SPINE_MID, LEFT_SHOULDER, RIGHT_SHOULDER = 0, 1, 4, 8


def center_on_spine(joints: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Subtract actor 1's spine-middle joint, frame by frame; empty slots stay zero.

    joints: (T, M, V, 3); present: (T, M) bool. Frames where actor 1 is absent use the nearest earlier
    frame where it is present (or the first one), so actor 2 alone is still centred sensibly.
    """
    if not present[:, 0].any():
        return joints.copy()
    centre = joints[:, 0, SPINE_MID].copy()  # (T, 3)
    seen = np.where(present[:, 0], np.arange(len(joints)), -1)
    last_seen = np.maximum.accumulate(seen)
    last_seen[last_seen < 0] = np.flatnonzero(present[:, 0])[0]
    centre = centre[last_seen]
    out = joints - centre[:, None, None, :]
    return np.where(present[:, :, None, None], out, 0).astype(joints.dtype)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) rotation that turns direction a into direction b (Rodrigues' formula)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(np.dot(a, b))
    if sin < 1e-8:
        if cos > 0:
            return np.eye(3)
        # opposite directions: turn by pi about any axis orthogonal to a
        ortho = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        ortho /= np.linalg.norm(ortho)
        return 2 * np.outer(ortho, ortho) - np.eye(3)
    k = axis / sin
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * K + (1 - cos) * K @ K


def align_to_axes(joints: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rotate so actor 1's first hip -> spine bone is +z, then its left -> right shoulders are +x.

    joints: (T, M, V, 3); present: (T, M) bool. Returns the rotated joints (empty slots stay zero).
    """
    frames = np.flatnonzero(present[:, 0])
    if len(frames) == 0:
        return joints.copy()
    first = joints[frames[0], 0].astype(np.float64)  # (V, 3)
    spine = first[SPINE_MID] - first[SPINE_BASE]
    r1 = rotation_between(spine, np.array([0.0, 0.0, 1.0]))
    shoulders = r1 @ (first[RIGHT_SHOULDER] - first[LEFT_SHOULDER])
    shoulders[2] = 0.0  # turn about z only, so the spine stays on +z
    r2 = np.eye(3) if np.linalg.norm(shoulders) < 1e-8 else rotation_between(shoulders, np.array([1.0, 0, 0]))
    out = joints.astype(np.float64) @ (r2 @ r1).T
    return np.where(present[:, :, None, None], out, 0).astype(joints.dtype)
