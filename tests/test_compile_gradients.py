"""`--compile` trains as eager does: the gradients of a compiled network (`compile_network`, what `fit`
uses) against eager ones, where torch 2.13's inductor computed wrong ones on the CPU (README, "--compile").
Compiling takes seconds to a minute on this CPU, hence slow."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import model
from model.networks.i3d import BranchPool3d, Inception3d
from model.training.runtime import compile_network

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def test_a_compiled_hcn_has_eager_gradients():
    """One training step of HCN (dropout 0): every parameter's gradient within 1e-4 of eager's, relative
    (measured 1.6e-6). Catches inductor's peak-memory reordering, which ran the kernel reading
    max_pool2d's input gradient before the scatter writing it: 20 of HCN's 24 gradients, all below its
    max over persons, were the zeros of a fresh buffer (after an epoch, loss 4.0255 against eager's
    3.8341, weights 3.5e-3 apart)."""
    torch.manual_seed(0)
    net = model.build("hcn", 6, frames=16, dropout=0.0).train()
    twin = copy.deepcopy(net)
    skeleton, labels = torch.randn(4, 3, 16, 25, 2), torch.tensor([0, 1, 2, 3])
    for call in (net, compile_network(twin)):
        model.heads_loss(call(skeleton=skeleton), labels).backward()
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        assert q.grad.norm() > 0, name
        assert relative(q.grad, p.grad) < 1e-4, (name, relative(q.grad, p.grad))


def test_a_compiled_inception_block_on_one_pixel_maps_has_eager_gradients():
    """I3D's Mixed_5b/5c see 1 x 1 maps at 32 x 32 crops (the demo's): inductor's max_pool3d picked wrong
    argmax indices for a 3-wide window over a 1-wide axis, sending 0.24 of the input gradient's norm
    to the wrong frames. BranchPool3d pools such an axis with a window of 1: compiled gradients within
    1e-5 of eager's, and eager's the same as the 3 x 3 x 3 pool's, bit for bit."""
    torch.manual_seed(0)
    block = Inception3d(16, (4, 4, 4, 4, 4, 4)).train()
    twin = copy.deepcopy(block)
    x = torch.randn(4, 16, 2, 1, 1).relu()
    inputs = [x.clone().requires_grad_(True) for _ in range(2)]
    weight = torch.randn(4, 16, 2, 1, 1)
    for network, x_in in ((block, inputs[0]), (compile_network(twin), inputs[1])):
        (network(x_in) * weight).sum().backward()
    assert relative(inputs[1].grad, inputs[0].grad) < 1e-5

    for shape in [(2, 3, 2, 1, 1), (2, 3, 4, 5, 1), (2, 3, 3, 4, 5)]:
        x = torch.randn(*shape)
        ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y = BranchPool3d()(ours)
        assert torch.equal(y, nn.MaxPool3d(3, stride=1, padding=1)(theirs))
        weight = torch.randn_like(y)
        (y * weight).sum().backward()
        (nn.MaxPool3d(3, stride=1, padding=1)(theirs) * weight).sum().backward()
        assert torch.equal(ours.grad, theirs.grad), shape
