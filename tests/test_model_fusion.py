"""DSFM, MMTM and MFFM checked against their equations, computed by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from model.networks.fusion import DSFM, MFFM, MMTM


def _randomise_bn(bn: torch.nn.BatchNorm1d, gen: torch.Generator) -> None:
    """Non-trivial affine parameters and running statistics, so eval-mode BN is not the identity."""
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)


def _dsfm_inputs(gen: torch.Generator) -> list[torch.Tensor]:
    # 3 and 5 channels with blocks of 2: both last blocks are padded; different non-channel axes.
    return [torch.randn(2, 3, 4, generator=gen), torch.randn(2, 5, 2, 3, generator=gen)]


def test_dsfm_matches_eqs_9_to_14_by_hand():
    gen = torch.Generator().manual_seed(0)
    lam, c = 0.3, 2
    dsfm = DSFM([3, 5], block_channels=c, reduction=2, lowest_attention=lam).eval()
    _randomise_bn(dsfm.squeeze_bn, gen)
    xs = _dsfm_inputs(gen)
    out = dsfm(xs)

    # eq. 9: per modality, the sum of its blocks (zero channels pad the last block), then the mean.
    descriptors = []
    for x in xs:
        channels = x.shape[1]
        padded = torch.cat([x, x.new_zeros(x.shape[0], -channels % c, *x.shape[2:])], dim=1)
        blocks = [padded[:, i * c:(i + 1) * c] for i in range(padded.shape[1] // c)]
        s_m = sum(blocks)
        descriptors.append(s_m.reshape(2, c, -1).mean(-1))
    g = descriptors[0] + descriptors[1]
    bn = dsfm.squeeze_bn
    pre = g @ dsfm.squeeze.weight.T
    # eq. 10, BN in eval mode
    z = torch.relu((pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
    # eq. 11: one (C x C') matrix per block k of all modalities (2 + 3 = 5 blocks).
    u = [z @ dsfm.excite.weight[k * c:(k + 1) * c].T + dsfm.excite.bias[k * c:(k + 1) * c] for k in range(5)]
    denom = sum(torch.exp(u_k) for u_k in u)
    a = [torch.exp(u_k) / denom for u_k in u]  # eq. 12
    offsets = [0, 2]
    for m, x in enumerate(xs):
        expected = torch.empty_like(x)
        for ch in range(x.shape[1]):
            k, j = offsets[m] + ch // c, ch % c
            gate = lam + (1 - lam) * a[k][:, j]  # eq. 13
            expected[:, ch] = x[:, ch] * gate.reshape(2, *([1] * (x.ndim - 2)))
        torch.testing.assert_close(out[m], expected, rtol=1e-5, atol=1e-6)  # eq. 14: channel order kept


def test_dsfm_softmax_is_over_all_blocks_of_all_modalities():
    gen = torch.Generator().manual_seed(1)
    dsfm = DSFM([3, 5], block_channels=2, reduction=2)
    a = dsfm.attention(_dsfm_inputs(gen))
    assert a.shape == (2, 5, 2)  # (B, blocks of both modalities, C)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 2))
    # Not normalised within each modality alone: the first modality's two blocks do not sum to one.
    assert not torch.allclose(a[:, :2].sum(dim=1), torch.ones(2, 2))


def test_dsfm_lambda_one_is_identity_and_lambda_zero_is_pure_attention():
    gen = torch.Generator().manual_seed(2)
    xs = _dsfm_inputs(gen)
    for x, y in zip(xs, DSFM([3, 5], 2, reduction=2, lowest_attention=1.0)(xs), strict=True):
        assert torch.equal(x, y)
    dsfm = DSFM([3, 5], 2, reduction=2, lowest_attention=0.0)
    a = dsfm.attention(xs)
    out = dsfm(xs)
    torch.testing.assert_close(out[0][:, 0], xs[0][:, 0] * a[:, 0, 0, None])


def test_dsfm_fuses_i3d_and_hcn_shaped_features_and_keeps_channels_last():
    rgb = torch.randn(2, 832, 2, 3, 3).to(memory_format=torch.channels_last_3d)
    p1, p2 = torch.randn(2, 128, 4, 4), torch.randn(2, 128, 4, 4)
    out = DSFM([832, 128, 128], block_channels=64)([rgb, p1, p2])
    assert [tuple(o.shape) for o in out] == [(2, 832, 2, 3, 3), (2, 128, 4, 4), (2, 128, 4, 4)]
    assert out[0].is_contiguous(memory_format=torch.channels_last_3d)
    with pytest.raises(ValueError, match="channels"):
        DSFM([832, 128], block_channels=64)([rgb, torch.randn(2, 64, 4, 4)])


def test_mmtm_matches_eqs_3_to_8_by_hand():
    torch.manual_seed(3)
    mmtm = MMTM(3, 2, ratio=2)
    assert mmtm.squeeze.out_features == 2 * (3 + 2) // 2  # |Z| = 2 (C_A + C_B) / ratio
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 2, 6)
    out_a, out_b = mmtm(a, b)
    s = torch.cat([a.mean(dim=(2, 3)), b.mean(dim=2)], dim=1)  # eqs. 3-4
    z = torch.relu(s @ mmtm.squeeze.weight.T + mmtm.squeeze.bias)  # eq. 7
    e_a = z @ mmtm.excite_a.weight.T + mmtm.excite_a.bias  # eq. 8
    e_b = z @ mmtm.excite_b.weight.T + mmtm.excite_b.bias
    torch.testing.assert_close(out_a, 2 * torch.sigmoid(e_a)[:, :, None, None] * a)  # eq. 5
    torch.testing.assert_close(out_b, 2 * torch.sigmoid(e_b)[:, :, None] * b)  # eq. 6


def test_mmtm_zero_excitation_is_identity():
    mmtm = MMTM(3, 2)
    with torch.no_grad():
        for layer in (mmtm.excite_a, mmtm.excite_b):
            layer.weight.zero_()
            layer.bias.zero_()
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 2, 6)
    out_a, out_b = mmtm(a, b)
    assert torch.equal(out_a, a) and torch.equal(out_b, b)  # 2 sigma(0) = 1


def _conv1x1(conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    y = torch.einsum("oc,bcthw->bothw", conv.weight[:, :, 0, 0, 0], x)
    return y + conv.bias[None, :, None, None, None]


def test_mffm_matches_eqs_19_to_23_by_hand():
    torch.manual_seed(4)
    mffm = MFFM(3)
    f1, f2 = torch.randn(2, 3, 2, 3, 2), torch.randn(2, 3, 2, 3, 2)
    f = torch.cat([f1, f2], dim=1)  # eq. 19
    pooled = f.mean(dim=(2, 3, 4))  # (B, 6)
    gate = mffm.channel_gate
    w_ch = torch.sigmoid(pooled @ gate.weight[:, :, 0, 0, 0].T + gate.bias)  # eq. 20
    f_ch = _conv1x1(mffm.reduce, w_ch[:, :, None, None, None] * f)  # eq. 21
    w_sp = torch.sigmoid(_conv1x1(mffm.spatial_1, f1) + _conv1x1(mffm.spatial_2, f2))  # eq. 22
    expected = w_sp * f_ch  # eq. 23
    torch.testing.assert_close(mffm(f1, f2), expected, rtol=1e-5, atol=1e-6)


def test_mffm_broadcast_vector_and_other_ranks():
    torch.manual_seed(5)
    mffm = MFFM(4)
    f1, v = torch.randn(2, 4, 2, 3, 3), torch.randn(2, 4)
    spread = v[:, :, None, None, None].expand(2, 4, 2, 3, 3).contiguous()
    torch.testing.assert_close(mffm(f1, v[:, :, None, None, None]), mffm(f1, spread))
    # 4-D maps give what the same values laid out as 5-D maps give.
    g1, g2 = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    as5d = mffm(g1.reshape(2, 4, 15, 1, 1), g2.reshape(2, 4, 15, 1, 1)).reshape(2, 4, 3, 5)
    torch.testing.assert_close(mffm(g1, g2), as5d)


def test_module_constructors_reject_bad_sizes():
    with pytest.raises(ValueError):
        DSFM([832, 128], block_channels=64, lowest_attention=1.5)
    with pytest.raises(ValueError):
        DSFM([], block_channels=64)
    with pytest.raises(ValueError):
        MMTM(0, 4)
    with pytest.raises(ValueError):
        MFFM(0)
    assert math.isclose(DSFM([10], 4).lowest_attention, 0.5)
