"""SampleDropout (model/networks/dropout.py): a sample's dropout mask depends on (seed, epoch, sample,
layer) only, not on the process or the batch it is in, so DDP's processes drop what one process drops."""

from __future__ import annotations

import pytest
import torch

import model
from model.networks.dropout import MASK32, SampleDropout, dropout_keys, mix32, sample_dropout, sample_keys

pytestmark = pytest.mark.usefixtures("one_thread")


def lowbias32(x: int) -> int:
    """The hash as published (C. Wellons' hash prospector), in plain modular arithmetic."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def test_the_hash_is_lowbias32_on_ints_and_tensors_alike():
    """Catches an int64 product that overflows (the tensor then differs from the int) or a wrong
    split of the multiplication."""
    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, MASK32, *torch.randint(0, 2**32, (200,)).tolist()]
    expected = [lowbias32(v) for v in values]
    assert [mix32(v) for v in values] == expected
    assert mix32(torch.tensor(values)).tolist() == expected


def test_a_samples_mask_is_the_same_in_any_batch_and_any_share_of_it():
    """What DDP needs: the batch cut into two processes' shares, or the samples in another order or
    beside other samples, gives each sample the mask it gets in the whole batch. Catches a mask drawn
    for the batch (torch's dropout) or indexed by the row in the batch."""
    positions = torch.tensor([7, 3, 118, 42, 0, 55])
    keys = sample_keys(0, 2, positions)
    x = torch.randn(6, 4, 5) + 3
    whole = sample_dropout(x, keys, 0.5)
    shares = torch.cat([sample_dropout(x[:3], keys[:3], 0.5), sample_dropout(x[3:], keys[3:], 0.5)])
    assert torch.equal(whole, shares)
    order = torch.tensor([4, 2, 5, 0])
    assert torch.equal(sample_dropout(x[order], keys[order], 0.5), whole[order])
    other_epoch = sample_dropout(x, sample_keys(0, 3, positions), 0.5)
    other_seed = sample_dropout(x, sample_keys(1, 2, positions), 0.5)
    assert not torch.equal(other_epoch != 0, whole != 0) and not torch.equal(other_seed != 0, whole != 0)


def test_rows_of_one_sample_and_whole_channels():
    """Persons folded into the batch axis (HCN: row b*M + m) share their sample's key but not a mask;
    `channels` drops whole channels (nn.Dropout2d)."""
    keys = sample_keys(0, 0, torch.arange(4))
    x = torch.ones(8, 16, 3, 3)  # 4 samples x 2 persons
    y = sample_dropout(x, keys, 0.5, channels=True)
    assert torch.equal(y, y[:, :, :1, :1].expand_as(y))  # a channel is kept or dropped whole
    assert not torch.equal(y[0], y[1])  # the two persons of sample 0
    assert torch.equal(sample_dropout(x[2:4], keys[1:2], 0.5, channels=True), y[2:4])
    with pytest.raises(ValueError, match="keys for 3 samples cannot cover a batch of 8 rows"):
        sample_dropout(x, keys[:3], 0.5)


def test_the_masks_keep_one_minus_p_and_keep_the_mean():
    """100 samples x 4096 elements at p 0.3: the kept share and the mean of the output match dropout's
    (scaled by 1 / (1 - p)); neighbouring samples' masks are uncorrelated."""
    keys = sample_keys(5, 1, torch.arange(100))
    y = sample_dropout(torch.ones(100, 4096), keys, 0.3)
    kept = (y != 0).float()
    assert kept.mean().item() == pytest.approx(0.7, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    correlation = torch.corrcoef(torch.stack([kept[:-1].flatten(), kept[1:].flatten()]))[0, 1]
    assert abs(correlation.item()) < 0.01


def test_every_layer_of_a_network_draws_its_own_mask():
    """dropout_keys gives each SampleDropout of HCN its own key (HCN had one Dropout2d for conv5 and
    conv6: with per-sample keys its two calls would have dropped the same channels), restores the
    layers after the block, and the same keys give the same forward."""
    net = model.build("hcn", 6, frames=16, dropout=0.5).train()
    layers = [m for m in net.modules() if isinstance(m, SampleDropout)]
    assert len(layers) == 5  # conv4 of each branch, conv5, conv6, fc7
    skeleton = torch.randn(4, 3, 16, 25, 2)
    keys = sample_keys(0, 0, torch.arange(4))
    with dropout_keys(net, keys):
        seen = [layer.keys for layer in layers]
        first = net(skeleton=skeleton)["logits"]
    assert len({tuple(k[0].tolist()) for k in seen}) == 5
    assert all(layer.keys is None for layer in layers)
    with dropout_keys(net, keys):
        again = net(skeleton=skeleton)["logits"]
    assert torch.equal(first, again)
    assert not torch.equal(first, net.eval()(skeleton=skeleton)["logits"])  # eval: no dropout


def test_outside_dropout_keys_torch_seeds_the_masks():
    """A network used on its own still drops (keys from torch's generator), reproducibly per seed."""
    layer = SampleDropout(0.5).train()
    x = torch.ones(8, 64)
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), a)
    assert 0 < (a == 0).float().mean() < 1
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        SampleDropout(1.0)


@pytest.mark.slow
def test_compiled_masks_and_gradients_equal_eager():
    """torch.compile (inductor on the CPU) draws the same masks from the keys, in the forward and in the
    gradient (a counter-based hash: a backward that recomputes the mask gets the same one)."""
    keys = sample_keys(0, 0, torch.arange(6))
    x = torch.randn(6, 32, requires_grad=True)
    compiled = torch.compile(lambda x, k: sample_dropout(x, k, 0.4).square().sum())
    value = sample_dropout(x, keys, 0.4).square().sum()
    (grad,) = torch.autograd.grad(value, x)
    compiled_value = compiled(x, keys)
    (compiled_grad,) = torch.autograd.grad(compiled_value, x)
    torch.testing.assert_close(compiled_value, value)
    assert torch.equal(compiled_grad, grad)
