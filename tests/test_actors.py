"""Denoising and actor selection, rule by rule, on records built in the test."""

from __future__ import annotations

import numpy as np
import pytest

from ntu_pipeline.skeleton.actors import (
    MAX_WIDE_RATIO,
    body_motion,
    denoise,
    motion,
    select_actors,
    split_bodies,
    wide_frames,
)
from ntu_pipeline.skeleton.parse import SkeletonRecord

BIG_ID = 72057594037931101  # > 2**53: a float would merge it with its neighbours


def tall_pose(rng, amplitude=0.1, n=1):
    """(n, 25, 3) joints 0.4 m wide and 1.6 m tall (never "wide"), jittered by `amplitude`."""
    base = np.zeros((25, 3))
    base[:, 0] = np.linspace(-0.2, 0.2, 25)
    base[:, 1] = np.linspace(-0.8, 0.8, 25)
    base[:, 2] = 3.0
    return base + amplitude * rng.standard_normal((n, 25, 3))


def wide_pose(rng, n=1):
    """(n, 25, 3) joints 1.6 m wide and 0.4 m tall: a "wide" frame."""
    pose = tall_pose(rng, 0.0, n)
    pose[..., [0, 1]] = pose[..., [1, 0]]
    return pose + 0.01 * rng.standard_normal(pose.shape)


def make_record(bodies, num_frames):
    """bodies: list of (body_id, frames, xyz (len(frames), 25, 3)). Rows sorted by frame, as in a file."""
    rows = [(f, k, bid, xyz[i]) for k, (bid, frames, xyz) in enumerate(bodies) for i, f in enumerate(frames)]
    rows.sort(key=lambda r: (r[0], r[1]))
    joints = np.zeros((len(rows), 25, 12), np.float32)
    for r, (_, _, _, xyz) in enumerate(rows):
        joints[r, :, :3] = xyz
        joints[r, :, 5:7] = xyz[:, :2] * 100 + 960  # colorX, colorY: any distinct values
        joints[r, :, 11] = 2
    frame = np.array([r[0] for r in rows], np.int32)
    return SkeletonRecord(
        source="test", num_frames=num_frames,
        bodies_per_frame=np.bincount(frame, minlength=num_frames).astype(np.int32),
        frame=frame, body_id=np.array([r[2] for r in rows], np.uint64),
        body_info=np.zeros((len(rows), 9), np.float32), joints=joints,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_motion_is_sum_of_per_axis_variance_over_joints_and_frames(rng):
    xyz = rng.standard_normal((7, 25, 3))
    expected = sum(np.var(xyz[..., a].ravel()) for a in range(3))
    assert body_motion(xyz) == pytest.approx(expected)


def test_wide_frame_is_x_range_over_point_eight_y_range():
    xyz = np.zeros((2, 25, 3))
    xyz[:, :, 1] = np.linspace(0, 1, 25)
    xyz[0, :, 0] = np.linspace(0, 0.8, 25)  # exactly 0.8: not wide
    xyz[1, :, 0] = np.linspace(0, 0.81, 25)
    assert wide_frames(xyz).tolist() == [False, True]


def test_single_body_file_is_not_denoised(rng):
    # 5 frames (<= 11) and every frame wide: both rules would drop it, but a lone body is kept as is
    record = make_record([(BIG_ID, range(5), wide_pose(rng, 5))], 5)
    actors = select_actors(record)
    assert actors.num_frames == 5 and actors.present[:, 0].all() and not actors.present[:, 1].any()
    assert actors.note == ""


def test_bodies_tracked_for_eleven_frames_or_fewer_are_dropped(rng):
    long_body = (BIG_ID, range(40), tall_pose(rng, 0.01, 40))
    eleven = (BIG_ID + 1, range(11), tall_pose(rng, 0.5, 11))  # much more motion, but noise by length
    twelve = (BIG_ID + 2, range(20, 32), tall_pose(rng, 0.5, 12))
    kept, _ = denoise(split_bodies(make_record([long_body, eleven, twelve], 40)))
    assert [b.body_id for b in kept] == [BIG_ID, BIG_ID + 2]


def test_when_every_body_is_short_the_longest_is_kept_and_recorded(rng):
    record = make_record([(BIG_ID, range(6), tall_pose(rng, 0.1, 6)),
                          (BIG_ID + 1, range(9), tall_pose(rng, 0.1, 9))], 9)
    actors = select_actors(record)
    assert actors.actor_ids == ((BIG_ID + 1,), ())
    assert "kept the longest" in actors.note and str(BIG_ID + 1) in actors.note


def test_mostly_wide_body_is_dropped(rng):
    n = 40
    n_wide = int(np.ceil(MAX_WIDE_RATIO * n))  # ratio >= 0.69754
    noisy = np.concatenate([wide_pose(rng, n_wide), tall_pose(rng, 0.3, n - n_wide)])
    record = make_record([(BIG_ID, range(n), noisy), (BIG_ID + 1, range(n), tall_pose(rng, 0.01, n))], n)
    kept, _ = denoise(split_bodies(record))
    assert [b.body_id for b in kept] == [BIG_ID + 1]


def test_partly_wide_body_has_its_motion_lowered_to_its_non_wide_frames(rng):
    n = 40
    n_wide = int(np.floor(MAX_WIDE_RATIO * n)) - 1  # below the ratio: kept
    xyz = np.concatenate([wide_pose(rng, n_wide) + [1.0, 0, 0], tall_pose(rng, 0.02, n - n_wide)])
    record = make_record([(BIG_ID, range(n), xyz), (BIG_ID + 1, range(n), tall_pose(rng, 0.05, n))], n)
    before = split_bodies(record)
    kept, _ = denoise(before)
    assert [b.body_id for b in kept] == [BIG_ID, BIG_ID + 1]
    expected = min(before[0].motion, body_motion(xyz[n_wide:]))
    assert kept[0].motion == pytest.approx(expected) and kept[0].motion < before[0].motion
    assert kept[1].motion == before[1].motion  # no wide frame: untouched


def test_spread_rule_never_drops_the_last_body(rng):
    n = 30
    bodies = [(BIG_ID, range(n), wide_pose(rng, n)), (BIG_ID + 1, range(n), wide_pose(rng, n))]
    record = make_record(bodies, n)
    kept, _ = denoise(split_bodies(record))
    assert [b.body_id for b in kept] == [BIG_ID + 1]  # visited in order of appearance; stops at one


def test_actor_one_is_the_body_with_most_motion(rng):
    calm = (BIG_ID, range(30), tall_pose(rng, 0.01, 30))
    lively = (BIG_ID + 7, range(30), tall_pose(rng, 0.2, 30))
    actors = select_actors(make_record([calm, lively], 30))
    assert actors.actor_ids == ((BIG_ID + 7,), (BIG_ID,))
    np.testing.assert_allclose(actors.joints[:, 0], lively[2].astype(np.float32), atol=1e-6)
    assert isinstance(actors.actor_ids[0][0], int) and actors.actor_ids[0][0] == BIG_ID + 7


def test_touching_spans_do_not_overlap_and_join_actor_one(rng):
    first = (BIG_ID, range(0, 20), tall_pose(rng, 0.3, 20))  # most motion: actor 1, span [0, 19]
    touching = (BIG_ID + 1, range(19, 40), tall_pose(rng, 0.1, 21))  # starts on actor 1's last frame
    actors = select_actors(make_record([first, touching], 40))
    assert actors.actor_ids == ((BIG_ID, BIG_ID + 1), ())


def test_overlapping_bodies_fill_actor_two_then_are_discarded(rng):
    a1 = (BIG_ID, range(14, 40), tall_pose(rng, 0.4, 26))  # most motion: actor 1, span [14, 39]
    b = (BIG_ID + 1, range(16, 28), tall_pose(rng, 0.3, 12))  # overlaps a1 -> actor 2, span [0, 27]
    c = (BIG_ID + 2, range(22, 34), tall_pose(rng, 0.2, 12))  # overlaps a1 and [0, 27] -> discarded
    d = (BIG_ID + 3, range(1, 13), tall_pose(rng, 0.1, 12))  # ends before a1 starts -> joins actor 1
    actors = select_actors(make_record([a1, b, c, d], 40))
    assert actors.actor_ids == ((BIG_ID, BIG_ID + 3), (BIG_ID + 1,))
    assert not actors.present[22:34, :].all(axis=1)[-6:].any()  # c's frames 28-33 are not filled by c


def test_actor_two_span_starts_at_zero_like_the_reference(rng):
    a1 = (BIG_ID, range(0, 20), tall_pose(rng, 0.4, 20))  # actor 1 [0, 19]
    b = (BIG_ID + 1, range(10, 25), tall_pose(rng, 0.3, 15))  # -> actor 2; its span becomes [0, 24]
    c = (BIG_ID + 2, range(26, 40), tall_pose(rng, 0.2, 14))  # no overlap with a1: joins actor 1
    d = (BIG_ID + 3, range(2, 15), tall_pose(rng, 0.1, 13))  # overlaps a1, and [0, 24]: discarded
    actors = select_actors(make_record([a1, b, c, d], 40))
    assert actors.actor_ids == ((BIG_ID, BIG_ID + 2), (BIG_ID + 1,))


def test_a_body_that_comes_back_keeps_its_true_frames(rng):
    frames = list(range(0, 10)) + list(range(20, 30))  # gone for frames 10-19
    xyz = tall_pose(rng, 0.2, 20)
    other = (BIG_ID + 1, range(0, 30), tall_pose(rng, 0.01, 30))
    actors = select_actors(make_record([(BIG_ID, frames, xyz), other], 30))
    assert actors.actor_ids[0] == (BIG_ID,)
    assert actors.present[:, 0].tolist() == [f in frames for f in range(30)]
    np.testing.assert_allclose(actors.joints[20, 0], xyz[10], atol=1e-6)  # not shifted to frame 10
    assert not actors.joints[10:20, 0].any()


def test_frames_where_both_actors_are_empty_are_dropped(rng):
    record = make_record([(BIG_ID, [0, 1, 2, 6, 7, 8], tall_pose(rng, 0.1, 6))], 10)
    actors = select_actors(record)
    assert actors.frame_index.tolist() == [0, 1, 2, 6, 7, 8]
    assert actors.joints.shape == (6, 2, 25, 3) and actors.tracking.shape == (6, 2, 25)
    assert (actors.tracking[:, 0] == 2).all() and (actors.tracking[:, 1] == 0).all()
    np.testing.assert_allclose(actors.color_xy[:, 0], record.joints[:, :, 5:7])


def test_motion_is_next_minus_current_and_zero_where_a_frame_is_empty():
    joints = np.arange(4 * 2 * 25 * 3, dtype=np.float32).reshape(4, 2, 25, 3) ** 1.5
    present = np.array([[1, 1], [1, 0], [1, 1], [1, 1]], bool)
    joints[~present] = 0
    m = motion(joints, present)
    np.testing.assert_allclose(m[0, 0], joints[1, 0] - joints[0, 0])
    np.testing.assert_allclose(m[2, 1], joints[3, 1] - joints[2, 1])
    assert not m[0, 1].any() and not m[1, 1].any()  # frame 1 of actor 2 is empty
    assert not m[3].any()  # the last frame
