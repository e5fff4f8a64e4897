"""Wiring of the networks checked through properties, not by re-deriving the code.

Every variant, in eval mode, with every BatchNorm awake (non-trivial affine parameters, TIAM's
zero-initialised last BNs included, and running statistics taken from one batch so that no layer's
signal fades out):
- swapping the two persons (skeleton axis M) leaves the symmetric networks unchanged, and leaves the
  others unchanged once the person-specific weights of fusion point 1 are swapped too;
- permuting the batch permutes the outputs; one sample's outputs do not depend on the other samples.
And two hand-built cases through the composition: HCN with hand-set weights (max over persons, the
ReLU after conv5) and I3D filled from a pytorch-i3d-named checkpoint whose Inception branches each
output a constant of their own (the branch order of the concatenation).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from networks import call, options
from torch import nn

import model
from model.networks.fusion import DSFM, MMTM

K = 5
RGB_SHAPE = (3, 3, 8, 32, 32)  # I3D at 8 frames x 32^2: Mixed_5b/5c are 1 x 1 x 1 maps
SKELETON_SHAPE = (3, 3, 16, 25, 2)  # HCN's smallest clip (four 2x poolings)

# Person-symmetric by design: HCN runs both persons through the same weights and meets them in an
# element-wise max; "i3d" ignores the skeleton; "dsfm2_only" fuses only after that max (fc7).
# The others are not: at fusion point 1 DSFM gives person 1 and person 2 blocks of their own in eq. 11
# (separate weights W_m^i), and MMTM stacks the persons on channels into one 256-channel modality
# (separate columns of its squeeze and rows of its excitation). Swapping those weights along with the
# persons must give the same outputs back.
PERSON_SYMMETRIC = {"hcn", "i3d", "dsfm2_only"}
# CTR-GCN's data_bn normalises each person slot with statistics of its own (as the reference): the
# persons are not interchangeable there, and no weight swap makes them so.
PERSON_ORDERED = {"ctrgcn"}


def _inputs(seed: int, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, *RGB_SHAPE[1:], generator=gen),
            torch.randn(batch, *SKELETON_SHAPE[1:], generator=gen))


@functools.cache
def _awake(name: str) -> nn.Module:
    """The variant in eval mode, every BN with random affine parameters and the statistics of one batch
    of 16 (at 1 x 1 x 1 maps fewer samples give variances so small that later inputs blow up)."""
    torch.manual_seed(0)
    net = model.build(name, K, **options(name))
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, that batch's statistics
    net.train()
    with torch.no_grad():
        call(net, name, *_inputs(seed=2, batch=16))
    net.name = name
    return net.eval()


@pytest.fixture(scope="module", autouse=True)
def _release_networks():
    """Drop the cached networks (about 60 MB each) when this module's tests are done."""
    yield
    _awake.cache_clear()


def _outputs(net: nn.Module, rgb: torch.Tensor, skeleton: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return call(net, net.name, rgb, skeleton)


def _swap_person_weights(net: nn.Module) -> nn.Module:
    """A copy of `net` whose fusion point 1 treats person 1 as person 2 and vice versa."""
    net = copy.deepcopy(net)
    fuse, sk = net.fuse_mid, net.skeleton.cooccurrence_channels  # 128 channels per person
    with torch.no_grad():
        if isinstance(fuse, DSFM):  # modalities [rgb, person 1, person 2]; eq. 11 rows block by block
            c = fuse.block_channels
            start = fuse.num_blocks[0] * c
            one, two = slice(start, start + sk), slice(start + sk, start + 2 * sk)
            for p in (fuse.excite.weight, fuse.excite.bias):
                p[one], p[two] = p[two].clone(), p[one].clone()
        else:  # MMTM: modality b is [person 1, person 2] stacked on channels after the 832 RGB channels
            assert isinstance(fuse, MMTM)
            rgb = fuse.channels_a
            cols = fuse.squeeze.weight
            one, two = slice(rgb, rgb + sk), slice(rgb + sk, rgb + 2 * sk)
            cols[:, one], cols[:, two] = cols[:, two].clone(), cols[:, one].clone()
            for p in (fuse.excite_b.weight, fuse.excite_b.bias):
                p[:sk], p[sk:] = p[sk:].clone(), p[:sk].clone()
    return net


# On this CPU every comparison below is bit-for-bit equal; the tolerance only leaves room for a backend
# whose kernels round differently by batch position. Heads are >= 0.02 in size, the wiring mistakes
# these tests are for move them by 1e-5 or (much) more.
RTOL, ATOL = 1e-5, 1e-7


def _assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=RTOL, atol=ATOL, msg=key)


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(set(model.MODEL_NAMES) - PERSON_ORDERED))
def test_swapping_the_persons(name):
    net = _awake(name)
    rgb, skeleton = _inputs(seed=3)
    reference = _outputs(net, rgb, skeleton)
    swapped = skeleton.flip(-1)  # person 1 <-> person 2
    if name in PERSON_SYMMETRIC or not model.network_spec(name).takes("skeleton"):  # heatmaps sum persons
        _assert_same(_outputs(net, rgb, swapped), reference)
    else:
        assert _differs(_outputs(net, rgb, swapped)["logits"], reference["logits"]), \
            f"{name} should treat the persons differently at fusion point 1"
        _assert_same(_outputs(_swap_person_weights(net), rgb, swapped), reference)


@pytest.mark.parametrize("name", model.MODEL_NAMES)
def test_permuting_the_batch_permutes_the_outputs(name):
    net = _awake(name)
    rgb, skeleton = _inputs(seed=4)
    order = torch.tensor([2, 0, 1])
    reference = _outputs(net, rgb, skeleton)
    _assert_same(_outputs(net, rgb[order], skeleton[order]), {k: v[order] for k, v in reference.items()})


@pytest.mark.parametrize("name", model.MODEL_NAMES)
def test_a_sample_does_not_depend_on_the_rest_of_the_batch(name):
    net = _awake(name)
    rgb, skeleton = _inputs(seed=5)
    other_rgb, other_skeleton = _inputs(seed=6)
    reference = _outputs(net, rgb, skeleton)
    rgb[1:], skeleton[1:] = other_rgb[1:], other_skeleton[1:]  # samples 1 and 2 replaced
    changed = _outputs(net, rgb, skeleton)
    _assert_same({k: v[0] for k, v in changed.items()}, {k: v[0] for k, v in reference.items()})
    # The test has teeth: the new samples' own outputs did change.
    for key in reference:
        assert _differs(changed[key][1:], reference[key][1:]), key


def _hand_set_hcn() -> model.HCN:
    """HCN (T = 16, 2 classes) whose logits are [25 max(a_1, a_2), relu(-conv5 min)] for persons whose
    x coordinate is a constant a_m >= 0 (y = z = 0) everywhere.

    Only centre taps are non-zero, so no padding enters. Position branch: conv1 and conv2 pass x on in
    channel 0; after the transition layer conv3 sums the 25 joints (25 a at map column 0, zero
    elsewhere) and conv4 passes that on. Motion branch: zero. conv5 channel 0 = +position (25 a),
    channel 1 = -position - 1 (negative everywhere: the ReLU after conv5 must clip it to 0). conv6
    channel 0 = +conv5 channel 0, channel 1 = -conv5 channel 1 (so an unclipped -1 would come out as 1).
    fc7 takes each of those two channels at map position (0, 0); fc8 is the identity on them.
    """
    net = model.HCN(model.HCNConfig(num_classes=2, frames=16)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        pos = net.position
        pos.conv1.weight[0, 0] = 1.0  # (64, 3, 1, 1): channel 0 = x
        pos.conv2.weight[0, 0, 1, 0] = 1.0  # (32, 64, 3, 1): centre tap in time
        pos.conv3.weight[0, :, 1, 1] = 1.0  # (32, 25, 3, 3): sum over the 25 joints
        pos.conv4.weight[0, 0, 1, 1] = 1.0
        net.conv5.weight[0, 0, 1, 1] = 1.0  # (128, 128, 3, 3): input channels 0-63 position, 64-127 motion
        net.conv5.weight[1, 0, 1, 1] = -1.0
        net.conv5.bias[1] = -1.0
        net.conv6.weight[0, 0, 1, 1] = 1.0
        net.conv6.weight[1, 1, 1, 1] = -1.0
        # fc7 input: conv6 map (256, T/16 = 1, 2) flattened, channel c at position (0, 0) is entry 2 c.
        net.fc7.weight[0, 0] = 1.0
        net.fc7.weight[1, 2] = 1.0
        net.fc8.weight[0, 0] = net.fc8.weight[1, 1] = 1.0
    return net


def _hand_set_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """The hand-set HCN's logits (B = 3, 2) and the persons' constants a (B, M) that produced them."""
    a = torch.tensor([[0.2, 0.6], [0.5, 0.0], [0.0, 0.0]])  # person 2 absent in sample 1, both in sample 2
    skeleton = torch.zeros(3, 3, 16, 25, 2)
    skeleton[:, 0] = a[:, None, None, :]
    with torch.no_grad():
        return _hand_set_hcn()(skeleton=skeleton)["logits"], a


def test_hcn_hand_set_weights_take_the_max_over_persons():
    logits, a = _hand_set_logits()
    torch.testing.assert_close(logits[:, 0], 25 * a.amax(dim=1))  # a mean would give 25 (a_1 + a_2) / 2


def test_hcn_hand_set_weights_clip_the_negative_conv5_output():
    logits, _ = _hand_set_logits()
    # conv5 channel 1 is -25 a - 1 < 0 everywhere; the ReLU makes it 0, so conv6 channel 1 = relu(-0) = 0.
    # Without that ReLU the max pool keeps -1 and conv6 turns it into +1.
    torch.testing.assert_close(logits[:, 1], torch.zeros(3))


def test_inception_branches_concatenate_in_pytorch_i3d_order():
    # A pytorch-i3d-named checkpoint (built from our own weights through the key map) in which each
    # branch of Mixed_5c ends in a zero convolution and a BN with its own bias: that branch's channels
    # of the output are that constant. pytorch-i3d concatenates [b0, b1b, b2b, b3b].
    torch.manual_seed(0)
    net = model.I3D(model.I3DConfig(num_classes=K)).eval()
    mapping = model.pytorch_i3d_key_map(net)
    public = {mapping[k]: v.clone() for k, v in net.state_dict().items()}
    constants = {"b0": 1.0, "b1b": 2.0, "b2b": 3.0, "b3b": 4.0}
    for branch, value in constants.items():
        unit = f"Mixed_5c.{branch}"
        public[f"{unit}.conv3d.weight"].zero_()
        public[f"{unit}.bn.running_mean"].zero_()
        public[f"{unit}.bn.running_var"].fill_(1.0 - 1e-3)  # with eps = 1e-3: divide by exactly 1
        public[f"{unit}.bn.weight"].fill_(1.0)
        public[f"{unit}.bn.bias"].fill_(value)
    model.load_pytorch_i3d(net, public)
    with torch.no_grad():
        features = net.forward_features(torch.randn(1, 3, 8, 32, 32))  # (1, 1024, 1, 1, 1)
    widths = [384, 384, 128, 128]  # b0, b1b, b2b, b3b of Mixed_5c
    expected = torch.cat([torch.full((w,), v) for w, v in zip(widths, constants.values(), strict=True)])
    torch.testing.assert_close(features.flatten(), expected)
