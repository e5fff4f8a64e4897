"""Motion, one definition (paper eq. 2, MODEL_SPEC.md): M_t = S_{t+1} - S_t on the frames given, zero where
the actor is absent (an all-zero (3, 25) slice) in either frame, and zero at the last frame."""

from __future__ import annotations

import torch

import model


def _reference_motion(skeleton: torch.Tensor) -> torch.Tensor:
    """The rule written out frame by frame, person by person: (B, C, T, V, M) -> same shape."""
    out = torch.zeros_like(skeleton)
    b, _, t, _, m = skeleton.shape
    for i in range(b):
        for p in range(m):
            for f in range(t - 1):
                now, after = skeleton[i, :, f, :, p], skeleton[i, :, f + 1, :, p]  # (C, V)
                if now.abs().sum() > 0 and after.abs().sum() > 0:
                    out[i, :, f, :, p] = after - now
    return out


def _enter_and_leave() -> torch.Tensor:
    """One sample, 10 frames, two actors about 2 m from the camera: actor 1 leaves after frame 6,
    actor 2 enters at frame 4."""
    gen = torch.Generator().manual_seed(0)
    skeleton = 2.0 + 0.05 * torch.randn(1, 3, 10, 25, 2, generator=gen)
    skeleton[:, :, 7:, :, 0] = 0  # actor 1 absent in frames 7-9
    skeleton[:, :, :4, :, 1] = 0  # actor 2 absent in frames 0-3
    return skeleton


def test_an_actor_entering_or_leaving_makes_no_spike():
    skeleton = _enter_and_leave()
    motion = model.skeleton_motion(skeleton)
    assert motion.shape == skeleton.shape
    # Unmasked, frame 6 of actor 1 and frame 3 of actor 2 would be -S_6 and +S_4, about 2 m in size.
    assert motion.abs().max() < 0.5
    assert torch.equal(motion[..., 6, :, 0], torch.zeros(1, 3, 25))  # leaving: S_7 is absent
    assert torch.equal(motion[..., 3, :, 1], torch.zeros(1, 3, 25))  # entering: S_3 is absent
    assert torch.equal(motion[..., 7:, :, 0], torch.zeros(1, 3, 3, 25))  # absent frames
    assert torch.equal(motion[..., :3, :, 1], torch.zeros(1, 3, 3, 25))
    assert torch.equal(motion[:, :, -1], torch.zeros(1, 3, 25, 2))  # the last frame
    # Inside each present span motion is the difference of consecutive frames.
    diff = skeleton[:, :, 1:] - skeleton[:, :, :-1]
    torch.testing.assert_close(motion[..., :6, :, 0], diff[..., :6, :, 0], rtol=0, atol=0)
    torch.testing.assert_close(motion[..., 4:9, :, 1], diff[..., 4:9, :, 1], rtol=0, atol=0)


def test_motion_follows_the_rule_frame_by_frame():
    gen = torch.Generator().manual_seed(1)
    skeleton = torch.randn(3, 3, 12, 25, 2, generator=gen)
    absent = torch.rand(3, 12, 2, generator=gen) < 0.3  # (B, T, M), a different pattern per sample
    absent[0, 4:7, 1] = False
    skeleton = skeleton * ~absent[:, None, :, None, :]
    # Presence is any non-zero coordinate: an actor with every coordinate but one at zero is present.
    skeleton[0, :, 5, :, 1] = 0
    skeleton[0, 2, 5, 7, 1] = 0.3
    motion = model.skeleton_motion(skeleton)
    torch.testing.assert_close(motion, _reference_motion(skeleton), rtol=0, atol=0)
    actor = skeleton[0, :, :, :, 1]  # (C, T, V)
    for t in (4, 5):
        torch.testing.assert_close(motion[0, :, t, :, 1], actor[:, t + 1] - actor[:, t])


def test_motion_keeps_the_dtype():
    skeleton = _enter_and_leave().bfloat16()
    motion = model.skeleton_motion(skeleton)
    assert motion.dtype == torch.bfloat16
    torch.testing.assert_close(motion.float(), _reference_motion(skeleton).float())


def test_networks_default_to_the_masked_motion():
    torch.manual_seed(0)
    net = model.build("hcn", 5, frames=16).eval()
    skeleton = torch.zeros(2, 3, 16, 25, 2)
    skeleton[:, :, :10] = _enter_and_leave()  # frames 10-15 empty for both actors
    unmasked = torch.cat([skeleton[:, :, 1:] - skeleton[:, :, :-1], torch.zeros(2, 3, 1, 25, 2)], dim=2)
    with torch.no_grad():
        implicit = net(skeleton=skeleton)["logits"]
        explicit = net(skeleton=skeleton, motion=model.skeleton_motion(skeleton))["logits"]
        torch.testing.assert_close(implicit, explicit)
        assert not torch.allclose(implicit, net(skeleton=skeleton, motion=unmasked)["logits"])
