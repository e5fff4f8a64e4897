"""Loading pytorch-i3d checkpoints by key name, and the TensorFlow "SAME" padding they were trained with.

The fake checkpoint is built here from the public pytorch-i3d layout (piergiaj/pytorch-i3d,
`pytorch_i3d.py`): endpoints Conv3d_1a_7x7 .. Mixed_5c, each convolution a `Unit3D` holding `conv3d`
(no bias) and `bn`; Inception branches b0, b1a, b1b, b2a, b2b, b3b; the classifier `logits.conv3d`
with a bias. Old checkpoints predate BatchNorm's num_batches_tracked, so it is left out by default.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import model
from model.networks.i3d import I3D, ConvBN3d, I3DConfig, SamePadMaxPool3d, load_pytorch_i3d, same_padding

# (name, in, out, kernel) of the stem convolutions, and Mixed blocks as (name, in, widths).
PUBLIC_STEM = [("Conv3d_1a_7x7", 3, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
PUBLIC_MIXED = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
]


def public_state_dict(num_classes: int = 400, counters: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def unit(prefix: str, cin: int, cout: int, k: int) -> None:
        state[f"{prefix}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=gen)
        state[f"{prefix}.bn.weight"] = torch.rand(cout, generator=gen)
        state[f"{prefix}.bn.bias"] = torch.randn(cout, generator=gen)
        state[f"{prefix}.bn.running_mean"] = torch.randn(cout, generator=gen)
        state[f"{prefix}.bn.running_var"] = torch.rand(cout, generator=gen) + 0.1
        if counters:
            state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(7)

    for name, cin, cout, k in PUBLIC_STEM:
        unit(name, cin, cout, k)
    for name, cin, (b0, b1a, b1b, b2a, b2b, b3b) in PUBLIC_MIXED:
        unit(f"{name}.b0", cin, b0, 1)
        unit(f"{name}.b1a", cin, b1a, 1)
        unit(f"{name}.b1b", b1a, b1b, 3)
        unit(f"{name}.b2a", cin, b2a, 1)
        unit(f"{name}.b2b", b2a, b2b, 3)
        unit(f"{name}.b3b", cin, b3b, 1)
    state["logits.conv3d.weight"] = torch.randn(num_classes, 1024, 1, 1, 1, generator=gen)
    state["logits.conv3d.bias"] = torch.randn(num_classes, generator=gen)
    return state


def test_key_map_covers_every_public_key_one_to_one():
    net = I3D(I3DConfig(num_classes=60))
    mapping = model.pytorch_i3d_key_map(net)
    public = public_state_dict(counters=True)
    assert set(mapping.values()) == set(public)
    assert len(set(mapping.values())) == len(mapping) == len(net.state_dict())
    assert mapping["endpoints.conv1a.conv.weight"] == "Conv3d_1a_7x7.conv3d.weight"
    assert mapping["endpoints.mixed3b.branch1_reduce.bn.running_mean"] == "Mixed_3b.b1a.bn.running_mean"
    assert mapping["classifier.bias"] == "logits.conv3d.bias"


def test_public_checkpoint_loads_fully_and_classifier_is_reinitialised_for_new_classes():
    torch.manual_seed(0)
    net = I3D(I3DConfig(num_classes=60))
    before = net.classifier.weight.detach().clone()
    public = public_state_dict(num_classes=400)
    report = load_pytorch_i3d(net, public)
    assert set(report.reinitialised) == {"classifier.weight", "classifier.bias"}
    assert len(report.absent_counters) == 57  # one per BatchNorm: 3 stem units + 9 blocks x 6 branches
    assert len(report.loaded) == len(net.state_dict()) - 2 - 57
    ours = net.state_dict()
    for key in ("endpoints.mixed4c.branch2.conv.weight", "endpoints.mixed5c.branch3.bn.running_var",
                "endpoints.conv1a.bn.bias", "endpoints.mixed3b.branch1_reduce.conv.weight"):
        assert torch.equal(ours[key], public[model.pytorch_i3d_key_map(net)[key]]), key
    assert torch.equal(ours["endpoints.mixed4c.branch2.conv.weight"], public["Mixed_4c.b2b.conv3d.weight"])
    assert net.classifier.weight.shape == (60, 1024)
    assert not torch.equal(net.classifier.weight, before)  # drawn afresh, not left as it was
    assert net.classifier.weight.abs().max() <= 1 / math.sqrt(1024)  # nn.Linear's initial range


def test_same_class_count_loads_the_classifier_and_counters(tmp_path):
    net = model.build("i3d", 400)
    public = public_state_dict(num_classes=400, counters=True)
    path = tmp_path / "rgb_imagenet.pt"
    torch.save({f"module.{k}": v for k, v in public.items()}, path)  # a DataParallel-style file
    report = load_pytorch_i3d(net, path)
    assert report.reinitialised == () and report.absent_counters == ()
    assert torch.equal(net.classifier.weight, public["logits.conv3d.weight"].reshape(400, 1024))
    assert torch.equal(net.classifier.bias, public["logits.conv3d.bias"])
    assert int(net.endpoints["mixed3b"].branch0.bn.num_batches_tracked) == 7


def test_loads_into_the_rgb_stream_of_a_two_stream_network():
    net = model.build("ccdfarm", 60)
    report = load_pytorch_i3d(net, public_state_dict())
    assert report.reinitialised == ("classifier.weight", "classifier.bias")
    expected = public_state_dict()["Conv3d_2c_3x3.conv3d.weight"]
    assert torch.equal(net.rgb.endpoints["conv2c"].conv.weight, expected)


def test_bad_checkpoints_are_refused_by_key_name_without_loading_anything():
    net = I3D(I3DConfig(num_classes=60))
    before = net.endpoints["conv1a"].conv.weight.detach().clone()
    missing = public_state_dict()
    del missing["Mixed_4d.b2b.bn.running_mean"]
    with pytest.raises(ValueError, match="Mixed_4d.b2b.bn.running_mean"):
        load_pytorch_i3d(net, missing)
    extra = public_state_dict()
    extra["Mixed_6a.b0.conv3d.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="Mixed_6a"):
        load_pytorch_i3d(net, extra)
    flow = public_state_dict()
    flow["Conv3d_1a_7x7.conv3d.weight"] = torch.zeros(64, 2, 7, 7, 7)  # a 2-channel flow checkpoint
    with pytest.raises(ValueError, match="shape"):
        load_pytorch_i3d(net, flow)
    assert torch.equal(net.endpoints["conv1a"].conv.weight, before)


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (224, 7, 2, (2, 3)),  # Conv3d_1a on 224: the extra pixel goes after
    (225, 7, 2, (3, 3)),
    (32, 7, 2, (2, 3)),
    (112, 3, 2, (0, 1)),  # MaxPool3d_2a
    (8, 2, 2, (0, 0)),  # MaxPool3d_5a
    (7, 3, 1, (1, 1)),
])
def test_same_padding_follows_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    before, after = expected
    assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_strided_units_pad_asymmetrically_like_pytorch_i3d():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 6, 10, 9)
    unit = ConvBN3d(3, 4, kernel=7, stride=2).eval()
    # T = 6, H = 10 even: pad 2 before, 3 after; W = 9 odd: 3 and 3.
    reference = F.relu(unit.bn(F.conv3d(F.pad(x, (3, 3, 2, 3, 2, 3)), unit.conv.weight, stride=2)))
    torch.testing.assert_close(unit(x), reference)
    pool = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
    torch.testing.assert_close(pool(x), F.max_pool3d(F.pad(x, (1, 1, 0, 1, 0, 0)), (1, 3, 3), (1, 2, 2)))
