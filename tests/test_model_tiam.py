"""TIAM (eqs. 15-18): identity at initialisation, row-stochastic attention, a case computed by hand."""

from __future__ import annotations

import torch

from model.networks.tiam import TIAM


def _wake(tiam: TIAM, gen: torch.Generator) -> TIAM:
    """Random affine parameters and running statistics in every BN, so no part of TIAM is inert."""
    with torch.no_grad():
        for bn in (tiam.norm_a, tiam.norm_b, tiam.out_norm_a, tiam.out_norm_b):
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=gen))
            bn.running_mean.copy_(torch.randn(n, generator=gen))
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return tiam


def test_tiam_is_identity_at_initialisation_in_train_and_eval():
    torch.manual_seed(0)
    tiam = TIAM(8)
    p_a, p_b = torch.randn(2, 8, 6, 4), torch.randn(2, 8, 6, 4)
    for mode in (True, False):
        tiam.train(mode)
        out_a, out_b = tiam(p_a, p_b)
        assert torch.equal(out_a, p_a) and torch.equal(out_b, p_b)


def test_tiam_attention_rows_sum_to_one():
    torch.manual_seed(1)
    tiam = TIAM(8)
    y1, y2 = tiam.attention(torch.randn(2, 8, 6, 4), torch.randn(2, 8, 6, 4))
    assert y1.shape == (2, 6, 6) and y2.shape == (2, 4, 4)  # T x T and S x S with T = 6, S = 4
    torch.testing.assert_close(y1.sum(-1), torch.ones(2, 6))
    torch.testing.assert_close(y2.sum(-1), torch.ones(2, 4))
    assert (y1 > 0).all() and (y2 > 0).all()


def _bn(bn: torch.nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    y = torch.einsum("oc,bcts->bots", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


def test_tiam_matches_eqs_15_to_18_by_hand():
    gen = torch.Generator().manual_seed(2)
    tiam = _wake(TIAM(4), gen).eval()  # C = 4, C' = 2
    t, s = 3, 5
    p_a, p_b = torch.randn(2, 4, t, s, generator=gen), torch.randn(2, 4, t, s, generator=gen)
    out_a, out_b = tiam(p_a, p_b)

    x_a, x_b = _bn(tiam.norm_a, p_a), _bn(tiam.norm_b, p_b)
    r_a, r_b = _conv(tiam.value, x_a), _conv(tiam.value, x_b)  # shared Conv_R, eq. 15
    e_a, e_b = _conv(tiam.embed_a, x_a), _conv(tiam.embed_b, x_b)
    # eq. 16: Gram matrices over (channel, other axis), scaled, softmax over the last axis.
    y1 = torch.softmax(torch.einsum("bcts,bcus->btu", e_a, e_b) / (2 * s) ** 0.5, dim=-1)  # (B, T, T)
    y2 = torch.softmax(torch.einsum("bcts,bctr->bsr", e_b, e_a) / (2 * t) ** 0.5, dim=-1)  # (B, S, S)
    got_y1, got_y2 = tiam.attention(p_a, p_b)
    torch.testing.assert_close(got_y1, y1)
    torch.testing.assert_close(got_y2, y2)
    # eq. 17, per channel: Z_A = Y1^T R_A Y2, Z_B = Y1 R_B Y2^T.
    z_a = torch.einsum("but,bcus,bsr->bctr", y1, r_a, y2)
    z_b = torch.einsum("btu,bcus,brs->bctr", y1, r_b, y2)
    expected_a = _bn(tiam.out_norm_a, _conv(tiam.project_a, z_a)) + p_a  # eq. 18
    expected_b = _bn(tiam.out_norm_b, _conv(tiam.project_b, z_b)) + p_b
    torch.testing.assert_close(out_a, expected_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_b, expected_b, rtol=1e-5, atol=1e-5)


def test_tiam_all_parameters_learn_once_the_last_bn_moves_off_zero():
    gen = torch.Generator().manual_seed(3)
    tiam = _wake(TIAM(4), gen).train()
    out_a, out_b = tiam(torch.randn(2, 4, 3, 5, generator=gen), torch.randn(2, 4, 3, 5, generator=gen))
    (out_a.square().sum() + out_b.pow(3).sum()).backward()
    for name, p in tiam.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tiam_at_init_only_the_last_bns_get_nonzero_gradients():
    torch.manual_seed(4)
    tiam = TIAM(4).train()
    out_a, out_b = tiam(torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5))
    (out_a.square().sum() + out_b.pow(3).sum()).backward()
    moving = {n for n, p in tiam.named_parameters() if p.grad.abs().sum() > 0}
    assert moving == {"out_norm_a.weight", "out_norm_b.weight", "out_norm_a.bias", "out_norm_b.bias"}
