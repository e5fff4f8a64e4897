"""Inputs the networks and the loss refuse, with a ValueError naming the argument and what was expected.

Without these checks the mistakes ran: rgb of batch 1 and skeleton of batch 2 broadcast to 2 outputs
inside the fusion modules; unbatched 4-D clips went through Conv3d's unbatched path; float64 inputs
failed deep inside the first convolution; labels out of range crash CUDA with a device-side assert.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch

import model

K = 7
RGB = (2, 3, 8, 32, 32)
SKELETON = (2, 3, 16, 25, 2)
RGB_EXPECTED = "(B, 3, T, H, W)"
SKELETON_EXPECTED = "(B, 3, 16, 25, 2)"  # T equals the config's frames (16 here)


@functools.cache
def _net(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return (model.build(name, K) if name == "i3d" else model.build(name, K, frames=16)).eval()


@pytest.fixture(scope="module", autouse=True)
def _release_networks():
    """Drop the cached networks (about 60 MB each) when this module's tests are done."""
    yield
    _net.cache_clear()


def _refused(call, *names: str, expected: str) -> None:
    """call() raises ValueError whose message names each argument in `names` and the expected shape."""
    with pytest.raises(ValueError) as info:
        with torch.no_grad():
            call()
    message = str(info.value)
    for name in names:
        assert re.search(rf"\b{name}\b", message), (name, message)
    assert expected in message, message


@pytest.mark.parametrize("name", ["ccdfarm", "mmtm"])
def test_two_stream_refuses_different_batch_sizes(name):
    net = _net(name)
    _refused(lambda: net(torch.randn(1, *RGB[1:]), torch.randn(*SKELETON)), "rgb", "skeleton",
             expected="(B, 3, T, H, W)")
    _refused(lambda: net(torch.randn(*RGB), torch.randn(3, *SKELETON[1:])), "rgb", "skeleton",
             expected="(B, 3, T_s, 25, 2)")


@pytest.mark.parametrize(("what", "rgb", "skeleton", "argument", "expected"), [
    ("4-D rgb", RGB[1:], SKELETON, "rgb", RGB_EXPECTED),
    ("4-D skeleton", RGB, SKELETON[1:], "skeleton", SKELETON_EXPECTED),
    ("1-channel rgb", (2, 1, 8, 32, 32), SKELETON, "rgb", RGB_EXPECTED),
    ("20 joints", RGB, (2, 3, 16, 20, 2), "skeleton", SKELETON_EXPECTED),
    ("1 person", RGB, (2, 3, 16, 25, 1), "skeleton", SKELETON_EXPECTED),
    ("32 frames for frames=16", RGB, (2, 3, 32, 25, 2), "skeleton", SKELETON_EXPECTED),
    ("joints and persons swapped", RGB, (2, 3, 16, 2, 25), "skeleton", SKELETON_EXPECTED),
])
def test_two_stream_refuses_wrong_shapes(what, rgb, skeleton, argument, expected):
    net = _net("ccdfarm")
    _refused(lambda: net(torch.randn(*rgb), torch.randn(*skeleton)), argument, expected=expected)


@pytest.mark.parametrize("argument", ["rgb", "skeleton", "motion"])
def test_two_stream_refuses_float64(argument):
    net = _net("dsfm")
    inputs = {"rgb": torch.randn(*RGB), "skeleton": torch.randn(*SKELETON), "motion": torch.randn(*SKELETON)}
    inputs[argument] = inputs[argument].double()
    expected = RGB_EXPECTED if argument == "rgb" else SKELETON_EXPECTED
    _refused(lambda: net(**inputs), argument, "float64", expected=expected)


def test_motion_must_match_the_skeleton():
    net = _net("dsfm")
    _refused(lambda: net(torch.randn(*RGB), torch.randn(*SKELETON), torch.randn(2, 3, 32, 25, 2)), "motion",
             expected=SKELETON_EXPECTED)
    _refused(lambda: net(torch.randn(*RGB), torch.randn(*SKELETON), torch.randn(1, *SKELETON[1:])), "motion",
             expected=str(SKELETON))


def test_single_streams_refuse_wrong_inputs():
    i3d, hcn = _net("i3d"), _net("hcn")
    _refused(lambda: i3d(torch.randn(*RGB[1:])), "rgb", expected=RGB_EXPECTED)
    _refused(lambda: i3d(torch.randn(2, 1, 8, 32, 32)), "rgb", expected=RGB_EXPECTED)
    _refused(lambda: i3d(torch.randn(*RGB, dtype=torch.float64)), "rgb", "float64", expected=RGB_EXPECTED)
    clip = torch.randint(0, 255, RGB, dtype=torch.uint8)  # as stored, not yet normalised
    _refused(lambda: i3d(clip), "rgb", "uint8", expected=RGB_EXPECTED)
    _refused(lambda: hcn(skeleton=torch.randn(*SKELETON[1:])), "skeleton", expected=SKELETON_EXPECTED)
    _refused(lambda: hcn(skeleton=torch.randn(2, 3, 32, 25, 2)), "skeleton", expected=SKELETON_EXPECTED)
    _refused(lambda: hcn(skeleton=torch.randn(*SKELETON, dtype=torch.float64)), "skeleton", "float64",
             expected=SKELETON_EXPECTED)
    # The stage methods the fusion networks use check too.
    _refused(lambda: hcn.point_features(torch.randn(2, 3, 16, 24, 2), torch.randn(2, 3, 16, 24, 2)),
             "skeleton", expected=SKELETON_EXPECTED)


def test_accepted_inputs_still_run_in_every_float_format():
    net = _net("ccdfarm")
    rgb, skeleton = torch.randn(*RGB), torch.randn(*SKELETON)
    with torch.no_grad():
        assert net(rgb, skeleton)["logits"].shape == (2, K)
        # Half-precision inputs pass the checks (for bf16/fp16 weights or autocast; slow to run on CPU).
        for dtype in (torch.bfloat16, torch.float16):
            net.rgb.check_rgb(rgb.to(dtype))
            net.skeleton.check_inputs(skeleton.to(dtype), skeleton.to(dtype))
        # Odd clip sizes are fine for I3D ("SAME" padding); only HCN's T is fixed.
        assert _net("i3d")(torch.randn(1, 3, 5, 33, 17))["logits"].shape == (1, K)


@pytest.mark.parametrize(("labels", "found"), [([0, 7], "7"), ([-1, 3], "-1"), ([-100, 3], "-100")])
def test_heads_loss_refuses_labels_out_of_range(labels, found):
    out = {"rgb": torch.randn(2, K), "skeleton": torch.randn(2, K), "logits": torch.randn(2, K)}
    with pytest.raises(ValueError, match=rf"target labels must be in \[0, {K}\).*{found}"):
        model.heads_loss(out, torch.tensor(labels))
    model.heads_loss(out, torch.tensor([0, K - 1]))  # the ends of the range are fine


@pytest.mark.parametrize("target", [
    torch.tensor([1, 2, 3]),  # batch 3 for 2 outputs
    torch.tensor([[1], [2]]),
    torch.tensor([1.0, 2.0]),
    torch.tensor([1, 2], dtype=torch.int32),  # cross-entropy wants int64
])
def test_heads_loss_refuses_targets_that_are_not_b_labels(target):
    out = {"rgb": torch.randn(2, K), "logits": torch.randn(2, K)}
    with pytest.raises(ValueError, match=re.escape("target must be int64 class labels (B,) = (2,)")):
        model.heads_loss(out, target)
