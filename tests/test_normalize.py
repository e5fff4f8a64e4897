"""The loader-side normalisations: centring on the spine and aligning the body axes."""

from __future__ import annotations

import numpy as np

from ntu_pipeline.skeleton.normalize import (
    LEFT_SHOULDER,
    RIGHT_SHOULDER,
    SPINE_BASE,
    SPINE_MID,
    align_to_axes,
    center_on_spine,
    rotation_between,
)


def random_sequence(seed=0, T=6):
    rng = np.random.default_rng(seed)
    joints = rng.standard_normal((T, 2, 25, 3)).astype(np.float32) + [0.3, 0.1, 3.0]
    present = np.ones((T, 2), bool)
    present[2, 1] = False
    joints[~present] = 0
    return joints, present


def test_center_puts_actor_one_spine_at_origin_and_keeps_empty_slots_zero():
    joints, present = random_sequence()
    out = center_on_spine(joints, present)
    np.testing.assert_allclose(out[:, 0, SPINE_MID], 0, atol=1e-6)
    shift = np.broadcast_to(-joints[3, 0, SPINE_MID], (25, 3))
    np.testing.assert_allclose(out[3, 1] - joints[3, 1], shift, atol=1e-6)
    assert not out[2, 1].any()


def test_center_uses_the_last_frame_actor_one_was_seen_in():
    joints, present = random_sequence()
    present[4, 0] = False
    joints[4, 0] = 0
    out = center_on_spine(joints, present)
    np.testing.assert_allclose(out[4, 1], joints[4, 1] - joints[3, 0, SPINE_MID], atol=1e-6)


def test_rotation_between_turns_a_into_b():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.standard_normal(3), rng.standard_normal(3)
        r = rotation_between(a, b)
        np.testing.assert_allclose(r @ (a / np.linalg.norm(a)), b / np.linalg.norm(b), atol=1e-9)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(rotation_between(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0])) @ [1, 0, 0],
                               [-1, 0, 0], atol=1e-9)


def test_align_puts_spine_on_z_and_shoulders_on_x_and_keeps_lengths():
    joints, present = random_sequence(seed=3)
    out = align_to_axes(joints, present)
    spine = out[0, 0, SPINE_MID] - out[0, 0, SPINE_BASE]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 0, 1], atol=1e-5)
    shoulders = out[0, 0, RIGHT_SHOULDER] - out[0, 0, LEFT_SHOULDER]
    assert abs(shoulders[1]) < 1e-5 and shoulders[0] > 0
    np.testing.assert_allclose(np.linalg.norm(out[5, 1, 7] - out[5, 1, 3]),
                               np.linalg.norm(joints[5, 1, 7] - joints[5, 1, 3]), rtol=1e-5)
    assert not out[2, 1].any()
