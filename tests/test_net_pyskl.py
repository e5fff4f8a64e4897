"""PoseC3D, SlowOnly-R50 and RGBPoseConv3D against PYSKL's own forward, and loading PYSKL checkpoints.

The oracle comes from outside our code: `kennymckormick/pyskl` at commit 3f6795f, run with a small shim
for the mmcv 1.x pieces it imports (ConvModule = conv, BN, ReLU in that order; kaiming/constant/normal
init), built with the settings of `configs/posec3d/slowonly_r50_ntu60_xsub/joint.py` (25 heatmap
channels instead of 17), `configs/rgbpose_conv3d/rgb_only.py` and `rgbpose_conv3d.py` (25 channels),
60 classes. From it, `tests/data/pyskl/`:
  reference_keys.json   each network's state keys and shapes, in PYSKL's names and order;
  reference_logits.npz  its eval-mode logits for the seeded weights and inputs below (`seeded_state`,
                        `seeded_inputs`), with the inputs' sums to tell a changed generator apart.
The weights are drawn here from the key list, so the fixture stays small though the networks are full
width. A wrong stride, inflation or lateral connection changes the logits (or the weights no longer
fit), so `test_matches_pyskl_reference` fails; the parameter counts are the reference's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.networks.posec3d import PoseC3D, PoseC3DConfig, SlowOnly, SlowOnlyConfig
from model.networks.resnet3d import ResNet3dConfig, load_pyskl_state
from model.networks.rgbpose import RGBPoseConfig, RGBPoseConv3D

DATA = Path(__file__).parent / "data" / "pyskl"
K = 60

# Parameter counts of PYSKL's recognizers (backbone + cls_head) for 60 classes, measured on the reference.
REFERENCE_PARAMETERS = {
    ("posec3d", 17): 2_024_860,
    ("posec3d", 25): 2_037_404,
    ("slowonly", 3): 31_757_436,
    ("rgbpose", 17): 36_147_928,
    ("rgbpose", 25): 36_160_472,
}

# Reduced inputs of the equality cases: name -> {argument: (shape, distribution)}.
CASE_INPUTS = {
    "posec3d": {"heatmaps": ((2, 25, 8, 32, 32), "uniform")},
    "slowonly": {"rgb": ((2, 3, 4, 64, 64), "normal")},
    "rgbpose": {"rgb": ((2, 3, 4, 64, 64), "normal"), "heatmaps": ((2, 25, 16, 16, 16), "uniform")},
}


def build(name: str, in_channels: int | None = None, num_classes: int = K, **options) -> torch.nn.Module:
    if name == "posec3d":
        return PoseC3D(PoseC3DConfig(num_classes, in_channels=in_channels or 25, **options))
    if name == "slowonly":
        return SlowOnly(SlowOnlyConfig(num_classes, **options))
    if name == "rgbpose":
        return RGBPoseConv3D(RGBPoseConfig(num_classes, in_channels=in_channels or 25, **options))
    raise ValueError(name)


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    with open(DATA / "reference_keys.json") as f:
        return [(key, tuple(shape)) for key, shape in json.load(f)[name]]


def seeded_state(keys: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A PYSKL-named state dict drawn in `keys` order: He-scaled conv/linear weights, BN scales in
    [0.5, 1), small biases and means, variances in [0.5, 1.5), counters 3."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(3)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith(("running_mean", "bias")):
            state[key] = torch.randn(shape, generator=gen) * 0.1
        elif len(shape) == 1:  # BN weight
            state[key] = torch.rand(shape, generator=gen) * 0.5 + 0.5
        else:  # conv, transposed conv (its fan-in is dims 0, 2..) and linear weights
            fan_in = int(np.prod(shape[1:])) if "_lateral" not in key or "pose_path" not in key \
                else shape[0] * int(np.prod(shape[2:]))
            state[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return state


def seeded_inputs(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    draw = {"uniform": torch.rand, "normal": torch.randn}
    return {arg: draw[kind](shape, generator=gen) for arg, (shape, kind) in CASE_INPUTS[name].items()}


def relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    ref = torch.from_numpy(reference)
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(scope="module")
def reference_logits() -> dict[str, np.ndarray]:
    with np.load(DATA / "reference_logits.npz") as npz:
        return dict(npz)


@pytest.mark.parametrize("name", list(CASE_INPUTS))
def test_matches_pyskl_reference(name, reference_logits):
    torch.manual_seed(0)
    net = build(name).eval()
    report = load_pyskl_state(net, {"state_dict": seeded_state(reference_keys(name)), "meta": {}})
    assert len(report.loaded) == len(net.state_dict()) and not report.left_at_init
    inputs = seeded_inputs(name)
    for arg, x in inputs.items():  # the generator still draws what the reference saw
        drawn = float(reference_logits[f"{name}.{arg}_sum"])
        assert x.double().sum().item() == pytest.approx(drawn, rel=1e-9), f"torch draws another {arg}"
    with torch.no_grad():
        out = net(**inputs)
    if name == "rgbpose":
        assert relative_error(out["rgb"], reference_logits["rgbpose.rgb"]) <= 1e-4
        assert relative_error(out["skeleton"], reference_logits["rgbpose.pose"]) <= 1e-4
        mix = torch.from_numpy(reference_logits["rgbpose.rgb"]).softmax(1) \
            + torch.from_numpy(reference_logits["rgbpose.pose"]).softmax(1)
        torch.testing.assert_close(out["logits"].softmax(1), mix / 2, atol=1e-5, rtol=1e-4)
        assert torch.equal(out["logits"].argmax(1), mix.argmax(1))
    else:
        assert relative_error(out["logits"], reference_logits[name]) <= 1e-4


@pytest.mark.parametrize("name, in_channels", list(REFERENCE_PARAMETERS))
def test_parameter_count_is_pyskls(name, in_channels):
    net = build(name, in_channels if name != "slowonly" else None)
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_PARAMETERS[name, in_channels]


@pytest.mark.parametrize("name", list(CASE_INPUTS))
def test_key_map_is_one_to_one_onto_pyskl_keys(name):
    net = build(name)
    mapping = net.pyskl_key_map()
    keys = reference_keys(name)
    assert sorted(mapping.values()) == sorted(k for k, _ in keys)
    state = net.state_dict()
    theirs = dict(keys)
    for ours, key in mapping.items():
        assert tuple(state[ours].shape) == theirs[key], (ours, key)


def test_named_examples_of_the_key_map():
    pose = build("posec3d").pyskl_key_map()
    assert pose["backbone.stem.conv.weight"] == "backbone.conv1.conv.weight"
    assert pose["backbone.stages.0.0.conv1.bn.running_mean"] == "backbone.layer1.0.conv1.bn.running_mean"
    assert pose["backbone.stages.2.0.downsample.conv.weight"] == "backbone.layer3.0.downsample.conv.weight"
    assert pose["head.fc.weight"] == "cls_head.fc_cls.weight"
    both = build("rgbpose").pyskl_key_map()
    assert both["pose_to_rgb.0.conv.weight"] == "backbone.rgb_path.layer2_lateral.conv.weight"
    assert both["pose_to_rgb.1.conv.weight"] == "backbone.rgb_path.layer3_lateral.conv.weight"
    assert both["rgb_to_pose.0.bn.running_var"] == "backbone.pose_path.layer1_lateral.bn.running_var"
    assert both["rgb_to_pose.1.conv.weight"] == "backbone.pose_path.layer2_lateral.conv.weight"
    assert both["pose.stages.1.0.conv1.conv.weight"] == "backbone.pose_path.layer2.0.conv1.conv.weight"
    assert both["rgb_head.fc.bias"] == "cls_head.fc_rgb.bias"
    assert both["pose_head.fc.weight"] == "cls_head.fc_pose.weight"


def _stage_shapes(net, backbone, inputs) -> list[tuple[int, ...]]:
    shapes = []
    hooks = [s.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for s in backbone.stages]
    net(**inputs)
    for h in hooks:
        h.remove()
    return shapes


def test_feature_shapes_at_the_configs_sizes():
    """Strides and widths at PYSKL's input sizes, on the meta device (shapes only, no arithmetic)."""
    with torch.device("meta"):
        pose = build("posec3d").eval()
        assert _stage_shapes(pose, pose.backbone, {"heatmaps": torch.empty(1, 25, 48, 56, 56)}) == [
            (1, 128, 48, 28, 28), (1, 256, 48, 14, 14), (1, 512, 24, 7, 7)]
        rgb = build("slowonly").eval()
        assert _stage_shapes(rgb, rgb.backbone, {"rgb": torch.empty(1, 3, 8, 224, 224)}) == [
            (1, 256, 8, 56, 56), (1, 512, 8, 28, 28), (1, 1024, 8, 14, 14), (1, 2048, 8, 7, 7)]
        both = build("rgbpose").eval()
        r, p = both.forward_features(torch.empty(1, 3, 8, 224, 224), torch.empty(1, 25, 32, 56, 56))
        assert r.shape == (1, 2048, 8, 7, 7) and p.shape == (1, 512, 32, 7, 7)
        assert both.pose.stages[1][0].conv1.conv.in_channels == 128 + 32
        assert both.rgb.stages[3][0].conv1.conv.in_channels == 1024 + 256


def _tiny_inputs(name: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    rgb, heatmaps = torch.randn(2, 3, 4, 32, 32, generator=gen), torch.rand(2, 25, 16, 8, 8, generator=gen)
    return {"posec3d": {"heatmaps": heatmaps[:, :, :8]}, "slowonly": {"rgb": rgb},
            "rgbpose": {"rgb": rgb, "heatmaps": heatmaps}}[name]


@pytest.mark.parametrize("name, heads", [("posec3d", {"skeleton"}), ("slowonly", {"rgb"}),
                                         ("rgbpose", {"rgb", "skeleton"})])
def test_forward_backward_on_tiny_input(name, heads):
    torch.manual_seed(0)
    net = build(name, num_classes=7).train()
    out = net(**_tiny_inputs(name))
    assert set(out) == heads | {"logits"}
    for key, logits in out.items():
        assert logits.shape == (2, 7) and torch.isfinite(logits).all(), key
    loss = sum(F.cross_entropy(out[h], torch.tensor([1, 5])) for h in heads)
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # PYSKL zero-initialises each block's last BN, so at the first step only shortcuts, the stem, the
    # laterals and the heads move; the zeroed BN weights themselves learn.
    for pname, p in net.named_parameters():
        if pname.endswith(("fc.weight", "stem.conv.weight", "conv3.bn.weight", "downsample.conv.weight")) \
                or pname.startswith(("pose_to_rgb.", "rgb_to_pose.")):
            assert p.grad.abs().sum() > 0, pname


def test_missing_leftover_and_misshaped_keys_are_refused_together():
    net = build("posec3d")
    state = seeded_state(reference_keys("posec3d"))
    before = net.backbone.stem.conv.weight.detach().clone()
    state.pop("backbone.layer2.3.conv2.conv.weight")
    state["backbone.layer4.0.conv1.conv.weight"] = torch.zeros(1)
    state["cls_head.fc_cls.weight"] = torch.zeros(120, 512)
    with pytest.raises(ValueError) as err:
        load_pyskl_state(net, {"state_dict": state})
    message = str(err.value)
    assert "1 missing" in message and "backbone.layer2.3.conv2.conv.weight" in message
    assert "backbone.layer4.0.conv1.conv.weight" in message
    assert "cls_head.fc_cls.weight (120, 512) != (60, 512)" in message
    assert torch.equal(net.backbone.stem.conv.weight, before)  # nothing loaded


def test_counters_may_be_absent_and_partial_leaves_the_rest(tmp_path):
    net = build("rgbpose")
    state = seeded_state(reference_keys("rgbpose"))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "init.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, path)
    report = load_pyskl_state(net, path)
    assert report.absent_counters and all(k.endswith("num_batches_tracked") for k in report.absent_counters)
    torch.testing.assert_close(net.rgb_head.fc.weight, state["cls_head.fc_rgb.weight"])

    init = {k: v for k, v in state.items() if "_lateral" not in k}  # as rgbpose_conv3d_init.pth
    with pytest.raises(ValueError, match="missing"):
        load_pyskl_state(net, init)
    report = load_pyskl_state(net, init, partial=True)
    # pose -> RGB: a conv each; RGB -> pose: a conv and BN's weight, bias, mean, variance each
    assert sorted(report.left_at_init) == sorted(
        [f"pose_to_rgb.{k}.conv.weight" for k in (0, 1)]
        + [f"rgb_to_pose.{k}.{t}" for k in (0, 1) for t in ("conv.weight", "bn.weight", "bn.bias",
                                                               "bn.running_mean", "bn.running_var")])


def test_not_a_checkpoint_is_refused():
    with pytest.raises(ValueError, match="PYSKL checkpoint"):
        load_pyskl_state(build("posec3d"), {"state_dict": {"a": 1}})


@pytest.mark.parametrize("name", list(CASE_INPUTS))
def test_missing_input_is_named(name):
    arg = "heatmaps" if name == "posec3d" else "rgb"
    with pytest.raises(ValueError, match=f"needs {arg}"):
        build(name)(skeleton=torch.zeros(2, 3, 16, 25, 2), heatmaps=None if name == "posec3d" else
                    torch.zeros(2, 25, 16, 8, 8))


@pytest.mark.parametrize("name, inputs, arg", [
    ("posec3d", {"heatmaps": torch.zeros(2, 17, 8, 16, 16)}, "heatmaps"),
    ("posec3d", {"heatmaps": torch.zeros(2, 25, 16, 16)}, "heatmaps"),
    ("posec3d", {"heatmaps": torch.zeros(2, 25, 8, 16, 16, dtype=torch.float64)}, "heatmaps"),
    ("slowonly", {"rgb": torch.zeros(2, 4, 4, 32, 32)}, "rgb"),
    ("rgbpose", {"rgb": torch.zeros(2, 3, 4, 32, 32), "heatmaps": torch.zeros(2, 25, 8, 8, 8)}, "heatmaps"),
    ("rgbpose", {"rgb": torch.zeros(2, 3, 4, 32, 32), "heatmaps": torch.zeros(2, 25, 16, 16, 16)},
     "heatmaps"),
    ("rgbpose", {"rgb": torch.zeros(2, 3, 4, 32, 32, dtype=torch.uint8),
                 "heatmaps": torch.zeros(2, 25, 16, 8, 8)}, "rgb"),
])
def test_misshaped_input_is_named(name, inputs, arg):
    with pytest.raises(ValueError, match=f"^{arg} must be"):
        build(name)(**inputs)


@pytest.mark.parametrize("make", [
    lambda: PoseC3DConfig(0), lambda: PoseC3DConfig(60, dropout=1.0),
    lambda: PoseC3DConfig(60, in_channels=0),
    lambda: PoseC3DConfig(60, temporal_strides=(1, 2)), lambda: SlowOnlyConfig(60, dropout=-0.1),
    lambda: RGBPoseConfig(60, in_channels=-1), lambda: ResNet3dConfig(3, inflate=(0, 2, 1, 1)),
    lambda: ResNet3dConfig(3, conv1_kernel=(1, 6, 6)), lambda: ResNet3dConfig(3, stage_blocks=()),
    lambda: ResNet3dConfig(3, lateral_channels=(0, 1)),
])
def test_invalid_configs_are_refused(make):
    with pytest.raises(ValueError):
        make()
