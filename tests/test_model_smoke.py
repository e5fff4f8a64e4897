"""Every variant by name: forward and backward on tiny inputs, heads, motion, sizes, CPU/compile paths.

Tiny inputs: RGB 8 frames x 64^2 (I3D at 1/4 of the paper's length and 1/3.5 of its size), skeleton
16 frames (HCN's smallest length: four 2x poolings), batch 2 (DSFM's BatchNorm needs two in training).
"""

from __future__ import annotations

import re

import networks
import pytest
import torch

import model

K = 7
RGB_SHAPE = (2, 3, 8, 64, 64)
SKELETON_SHAPE = (2, 3, 16, 25, 2)
EXPECTED_HEADS = {
    "hcn": {"skeleton"}, "i3d": {"rgb"},
    "mmtm": {"rgb", "skeleton"}, "dsfm": {"rgb", "skeleton"}, "tiam_dsfm": {"rgb", "skeleton"},
    "dsfm_mffm": {"rgb", "skeleton", "fused"}, "ccdfarm": {"rgb", "skeleton", "fused"},
    "dsfm1_only": {"rgb", "skeleton", "fused"}, "dsfm2_only": {"rgb", "skeleton", "fused"},
    "ctrgcn": {"skeleton"}, "posec3d": {"skeleton"}, "slowonly": {"rgb"}, "rgbpose": {"rgb", "skeleton"},
}
# Parameters behind TIAM's zero-initialised last BNs: their gradient is exactly zero at the first step.
BOTTLENECK_INNER = re.compile(r"\.stages\.\d+\.\d+\.(conv1\.|conv2\.|conv3\.conv\.)")  # before its last BN
CTRGC_REFINEMENT = ("query", "key", "expand")  # CTR-GC's Q_c = expand(tanh(query - key)), times alpha = 0
TIAM_INNER = ("norm_a.", "norm_b.", "value.", "embed_a.", "embed_b.", "project_a.", "project_b.")


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*RGB_SHAPE, generator=gen), torch.randn(*SKELETON_SHAPE, generator=gen)


def _build(name: str, **options) -> torch.nn.Module:
    return model.build(name, K, **networks.options(name), **options)


def test_every_name_is_known_and_tested():
    assert set(model.MODEL_NAMES) == set(EXPECTED_HEADS)


@pytest.mark.parametrize("name", model.MODEL_NAMES)
def test_forward_backward_every_parameter_learns(name):
    torch.manual_seed(0)
    net = _build(name).train()
    rgb, skeleton = _inputs()
    out = networks.call(net, name, rgb, skeleton)
    assert set(out) == EXPECTED_HEADS[name] | {"logits"}
    for key, logits in out.items():
        assert logits.shape == (2, K), key
        assert torch.isfinite(logits).all(), key
    if "fused" in out:
        assert out["logits"] is out["fused"]
    elif name == "rgbpose":  # PYSKL's 1:1 mix of the two heads' probabilities
        mix = (out["rgb"].softmax(1) + out["skeleton"].softmax(1)) / 2
        torch.testing.assert_close(out["logits"].exp(), mix)
    elif len(EXPECTED_HEADS[name]) == 2:
        torch.testing.assert_close(out["logits"], out["rgb"] + out["skeleton"])
    model.heads_loss(out, torch.tensor([1, 5])).backward()
    zero = []
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        if p.grad.abs().sum() == 0:
            zero.append(pname)
    # Only what waits behind a zero start learns later: the inside of TIAM behind its last BN, CTR-GCN's
    # channel-wise refinement behind alpha (0 in the reference); everything else learns from step one.
    if name == "ctrgcn":
        assert zero and all(n.split(".")[-2] in CTRGC_REFINEMENT for n in zero), zero
        return
    if name in ("posec3d", "slowonly", "rgbpose"):  # PYSKL zero-initialises each bottleneck's last BN
        assert zero and all(BOTTLENECK_INNER.search(n) for n in zero), zero
        return
    assert all(".tiam." in n and n.split(".tiam.")[1].startswith(TIAM_INNER) for n in zero), zero
    if model.network_spec(name).variant.get("tiam"):
        assert zero, "TIAM's last BN should start at zero"


def test_single_streams_take_the_shared_call_convention():
    torch.manual_seed(0)
    rgb, skeleton = _inputs()
    hcn, i3d = _build("hcn").eval(), _build("i3d").eval()
    with torch.no_grad():
        torch.testing.assert_close(hcn(None, skeleton)["logits"], hcn(skeleton=skeleton)["logits"])
        torch.testing.assert_close(hcn(rgb, skeleton)["logits"], hcn(skeleton=skeleton)["logits"])
        torch.testing.assert_close(i3d(rgb)["logits"], i3d(rgb, skeleton)["rgb"])
    with pytest.raises(ValueError, match="skeleton"):
        hcn(rgb)
    with pytest.raises(ValueError, match="rgb"):
        i3d(skeleton=skeleton)


def test_motion_defaults_to_eq_2():
    skeleton = torch.randn(2, 3, 16, 25, 2)
    motion = model.skeleton_motion(skeleton)
    torch.testing.assert_close(motion[:, :, 3], skeleton[:, :, 4] - skeleton[:, :, 3])
    assert torch.equal(motion[:, :, -1], torch.zeros(2, 3, 25, 2))
    torch.manual_seed(0)
    net = _build("tiam_dsfm").eval()
    rgb, _ = _inputs()
    with torch.no_grad():
        implicit = net(rgb, skeleton)["skeleton"]
        torch.testing.assert_close(implicit, net(rgb, skeleton, motion)["skeleton"])
        assert not torch.allclose(implicit, net(rgb, skeleton, torch.zeros_like(motion))["skeleton"])


def test_build_refuses_unknown_names_and_options():
    with pytest.raises(ValueError, match="known models: hcn, i3d, mmtm, dsfm"):
        model.build("resnet", 60)
    with pytest.raises(ValueError, match="unknown options"):
        model.build("ccdfarm", 60, block_size=3)
    with pytest.raises(ValueError, match="multiple of 16"):
        model.build("hcn", 60, frames=20)
    with pytest.raises(ValueError, match="fusion"):
        model.TwoStreamConfig(num_classes=60, fusion="concat")


def test_variant_switches_build_the_modules_they_name():
    nets = {name: model.build(name, 60) for name in ("mmtm", "ccdfarm", "dsfm1_only", "dsfm2_only")}
    assert isinstance(nets["mmtm"].fuse_mid, model.MMTM) and nets["mmtm"].skeleton.tiam is None
    assert nets["mmtm"].fuse_mid.channels_b == 256  # the two persons stacked
    net = nets["ccdfarm"]
    assert isinstance(net.fuse_mid, model.DSFM) and net.fuse_mid.in_channels == (832, 128, 128)
    assert net.fuse_mid.block_channels == 64 and net.fuse_high.block_channels == 256
    assert net.fuse_high.in_channels == (1024, 512)
    assert isinstance(net.skeleton.tiam, model.TIAM) and isinstance(net.mffm, model.MFFM)
    assert nets["dsfm1_only"].fuse_high is None and nets["dsfm1_only"].fuse_mid is not None
    assert nets["dsfm2_only"].fuse_mid is None and nets["dsfm2_only"].fuse_high is not None


def test_heads_loss_weights_each_head():
    out = {"rgb": torch.randn(2, K), "skeleton": torch.randn(2, K), "logits": torch.randn(2, K)}
    target = torch.tensor([0, 3])
    ce = torch.nn.functional.cross_entropy
    expected = 0.5 * ce(out["rgb"], target) + ce(out["skeleton"], target)
    torch.testing.assert_close(model.heads_loss(out, target, {"rgb": 0.5}), expected)
    with pytest.raises(ValueError, match="unknown heads"):
        model.heads_loss(out, target, {"video": 1.0})


def test_parameter_counts_match_the_references():
    # I3D: pytorch-i3d's InceptionI3d has 12,697,264 parameters with 400 Kinetics classes; with a
    # 60-class classifier that is 12,697,264 - 340 * 1025 = 12,348,764, the "about 12.3M" of
    # MODEL_SPEC.md. HCN: about 1.06M (MODEL_SPEC.md); layer by layer at T = 32 and 60 classes:
    branch = (3 * 64 + 64) + (64 * 32 * 3 + 32) + (25 * 32 * 9 + 32) + (32 * 64 * 9 + 64)
    hcn = 2 * branch + (128 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + (1024 * 512 + 512) + (512 * 60 + 60)
    assert hcn == 1_062_652
    counts = {name: sum(p.numel() for p in model.build(name, 60).parameters()) for name in ("i3d", "hcn")}
    assert counts["i3d"] == 12_697_264 - 340 * 1025
    assert abs(counts["i3d"] - 12.3e6) / 12.3e6 < 0.01  # within 1% of the spec's figure
    assert counts["hcn"] == hcn
    assert abs(counts["hcn"] - 1.06e6) / 1.06e6 < 0.01


def test_feature_sizes_at_the_papers_input_size():
    # Shapes only, on the meta device: no memory and no arithmetic.
    with torch.device("meta"):
        i3d, hcn = model.build("i3d", 60).eval(), model.build("hcn", 60, tiam=True).eval()
        rgb, skeleton = torch.empty(1, 3, 32, 224, 224), torch.empty(1, 3, 32, 25, 2)
        r5b = i3d.forward_endpoints(rgb, "conv1a", "mixed5b")
        r5c = i3d.forward_endpoints(r5b, "mixed5c", "mixed5c")
        p, m = hcn.point_features(skeleton, model.skeleton_motion(skeleton))
        s5 = hcn.cooccurrence_features(p, m)
        s7 = hcn.global_features(s5)
    assert r5b.shape == (1, 832, 4, 7, 7) and r5c.shape == (1, 1024, 4, 7, 7)
    assert p.shape == m.shape == (2, 64, 8, 8)  # two persons folded into the batch axis
    assert s5.shape == (2, 128, 4, 4) and s7.shape == (1, 512)


def test_channels_last_3d_and_bf16_autocast_agree_with_fp32():
    torch.manual_seed(0)
    net = _build("ccdfarm").eval()
    rgb, skeleton = _inputs()
    with torch.no_grad():
        reference = net(rgb, skeleton)["logits"]
        model.to_channels_last_3d(net)
        assert net.rgb.endpoints["conv1a"].conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        rgb_cl = rgb.to(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(net(rgb_cl, skeleton)["logits"], reference, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(rgb_cl, skeleton)["logits"]
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, rtol=0.1, atol=0.02 * reference.abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ccdfarm", "mmtm"])
def test_compiles_as_one_graph(name):
    # fullgraph=True fails on any graph break (data-dependent Python control flow, .item(), ...).
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = _build(name).eval()
    rgb, skeleton = _inputs()
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(rgb, skeleton)["logits"], net(rgb, skeleton)["logits"])
