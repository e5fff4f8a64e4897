"""CTR-GCN (model/networks/ctrgcn.py) against numbers from its reference code, and its smoke test.

The oracle, tests/data/ctrgcn/reference.npz, was written by the reference implementation itself
(`model/ctrgcn.py`, `graph/ntu_rgb_d.py`, `graph/tools.py` of Uason-Chen/CTR-GCN at e13d758), run
outside this repository by tests/data/ctrgcn/make_reference.py: its state-dict keys and shapes, its NTU
adjacency, an input (2, 3, 15, 25, 2), and its eval-mode logits (and each block's mean |output|) for 60
classes under weights that `reference_weights` draws from a seed over those keys, once with the learned
topology (`PA`) and once with the fixed graph (`adaptive=False`, where the adjacency takes part in the
forward). The weights are drawn, not stored (1.45M parameters), at scales that keep every path in play
(BN scales U(-0.2, 0.6), alpha ~ N(0, 1)): the refinement term, the residuals, each branch of the temporal
module and the graph all move the logits, and a max-pool does not commute with a negative BN scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.networks.ctrgcn import CTRGCN, CTRGCNConfig, ctrgcn_key_map, load_ctrgcn_state, ntu_adjacency

REFERENCE = Path(__file__).parent / "data" / "ctrgcn" / "reference.npz"
SEED = 20211011
# Parameters of the reference's Model(graph=ntu_rgb_d.Graph), counted with torch (make_reference.py).
REFERENCE_PARAMETERS = {(60, True): 1_446_672, (120, True): 1_462_092, (60, False): 1_427_922}


def reference_weights(keys: list[str], shapes: list[tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """A state dict in the reference's names, drawn in key order from torch.Generator(seed): conv and
    linear weights (and PA) N(0, 1/fan_in), BN scales U(-0.2, 0.6), biases and running means 0.1 N(0, 1),
    running variances U(0.5, 1.5), alpha N(0, 1), counters 0. make_reference.py draws the
    reference's weights with this function, so the two sides share it."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in zip(keys, shapes, strict=True):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.int64)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) >= 2:
            state[key] = torch.randn(shape, generator=gen) / float(np.prod(shape[1:])) ** 0.5
        elif key.endswith(".weight"):
            state[key] = 0.8 * torch.rand(shape, generator=gen) - 0.2
        elif key.endswith(".bias"):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    with np.load(REFERENCE) as data:
        ref = {name: data[name] for name in data.files}
    ref["keys"] = str(ref["keys"]).split("\n")
    ref["shapes"] = [tuple(int(d) for d in row if d >= 0) for row in ref["shapes"]]
    state = reference_weights(ref["keys"], ref["shapes"], SEED)
    drawn = sum(v.double().abs().sum().item() for v in state.values())
    assert drawn == pytest.approx(float(ref["weights_abs_sum"]), rel=1e-9), (
        "torch's seeded generator no longer draws the weights the oracle was made with; rerun "
        "tests/data/ctrgcn/make_reference.py with the reference code")
    ref["state"] = state
    return ref


def relative_error(ours: torch.Tensor, theirs: np.ndarray) -> float:
    theirs = torch.from_numpy(theirs).double()
    return ((ours.double() - theirs).norm() / theirs.norm()).item()


def test_adjacency_is_the_references():
    assert torch.equal(ntu_adjacency(), torch.from_numpy(np.load(REFERENCE)["adjacency"]))


@pytest.mark.parametrize(("num_classes", "adaptive"), sorted(REFERENCE_PARAMETERS))
def test_parameter_count_is_the_references(num_classes, adaptive):
    net = CTRGCN(CTRGCNConfig(num_classes=num_classes, adaptive=adaptive))
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_PARAMETERS[num_classes, adaptive]


def test_key_map_is_one_to_one_onto_the_reference_keys(reference):
    net = CTRGCN(CTRGCNConfig(num_classes=60))
    mapping = ctrgcn_key_map(net)
    assert sorted(mapping.values()) == sorted(reference["keys"])
    shapes = dict(zip(reference["keys"], reference["shapes"], strict=True))
    ours = net.state_dict()
    assert all(tuple(ours[key].shape) == shapes[ref] for key, ref in mapping.items())
    fixed = ctrgcn_key_map(CTRGCN(CTRGCNConfig(num_classes=60, adaptive=False)))
    assert sorted(fixed.values()) == sorted(k for k in reference["keys"] if not k.endswith(".PA"))


@pytest.mark.parametrize("adaptive", [True, False])
def test_logits_equal_the_references(reference, adaptive):
    """Same weights, same input, eval mode: the reference's logits to 1e-4 (measured: equal bits)."""
    state = {"module." + k: v for k, v in reference["state"].items() if adaptive or not k.endswith(".PA")}
    net = CTRGCN(CTRGCNConfig(num_classes=60, adaptive=adaptive)).eval()
    load_ctrgcn_state(net, state)
    blocks = []
    for block in net.blocks:
        block.register_forward_hook(lambda module, inputs, output: blocks.append(output.abs().mean()))
    with torch.no_grad():
        logits = net(skeleton=torch.from_numpy(reference["skeleton"]))["logits"]
    suffix = "" if adaptive else "_fixed"
    means = torch.stack(blocks).double()
    expected = torch.from_numpy(reference["block_abs_mean" + suffix])
    off = [i + 1 for i in range(len(means)) if not torch.isclose(means[i], expected[i], rtol=1e-4)]
    assert not off, f"blocks {off} differ: mean |output| {means.tolist()}, reference {expected.tolist()}"
    assert logits.shape == (2, 60)
    assert relative_error(logits, reference["logits" + suffix]) <= 1e-4


def test_logits_move_with_the_topology_refinement(reference):
    """The oracle would notice the refinement term: alpha = 0 changes the logits far beyond 1e-4."""
    net = CTRGCN(CTRGCNConfig(num_classes=60)).eval()
    load_ctrgcn_state(net, reference["state"])
    for block in net.blocks:
        block.gcn.alpha.data.zero_()
    with torch.no_grad():
        logits = net(skeleton=torch.from_numpy(reference["skeleton"]))["logits"]
    assert relative_error(logits, reference["logits"]) > 0.05


def test_load_refuses_a_state_dict_that_does_not_fit(reference):
    net = CTRGCN(CTRGCNConfig(num_classes=60))
    state = dict(reference["state"])
    del state["l3.tcn1.branches.2.4.running_var"]
    with pytest.raises(ValueError, match=r"1 missing, e\.g\. \['l3\.tcn1\.branches\.2\.4\.running_var'\]"):
        load_ctrgcn_state(net, state)
    with pytest.raises(ValueError, match=r"with no place in CTRGCN, e\.g\. \['l11\.gcn1\.alpha'\]"):
        load_ctrgcn_state(net, {**reference["state"], "l11.gcn1.alpha": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"wrong shape, e\.g\. \['fc\.weight \(120, 256\) \(expected \(60"):
        load_ctrgcn_state(net, {**reference["state"], "fc.weight": torch.zeros(120, 256)})
    fixed = CTRGCN(CTRGCNConfig(num_classes=60, adaptive=False))
    with pytest.raises(ValueError, match=r"10 with no place in CTRGCN, e\.g\. \['l1\.gcn1\.PA'"):
        load_ctrgcn_state(fixed, reference["state"])


def test_load_leaves_absent_counters_and_reads_a_file(reference, tmp_path):
    state = {k: v for k, v in reference["state"].items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "release.pt")
    net = CTRGCN(CTRGCNConfig(num_classes=60))
    load_ctrgcn_state(net, tmp_path / "release.pt")
    assert torch.equal(net.blocks[4].gcn.convs[1].query.weight, state["l5.gcn1.convs.1.conv1.weight"])
    assert torch.equal(net.blocks[0].gcn.adjacency, state["l1.gcn1.PA"])


def test_forward_backward_smoke():
    torch.manual_seed(0)
    net = CTRGCN(CTRGCNConfig(num_classes=5, base_channels=8, dropout=0.1))
    skeleton = torch.randn(2, 3, 7, 25, 2)
    out = net(skeleton=skeleton, rgb=None, motion=None)
    assert out["logits"].shape == (2, 5) and out["skeleton"] is out["logits"]
    assert torch.isfinite(out["logits"]).all()
    out["logits"].square().mean().backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["blocks.9.gcn.alpha"].abs().item() > 0  # the refinement learns from its first step
    assert net.forward_features(skeleton).shape == (2, net.num_features) == (2, 32)


def test_fixed_graph_stays_out_of_the_parameters():
    net = CTRGCN(CTRGCNConfig(num_classes=5, base_channels=8, adaptive=False))
    assert "blocks.0.gcn.adjacency" not in dict(net.named_parameters())
    assert "blocks.0.gcn.adjacency" not in net.state_dict()
    assert torch.equal(net.blocks[0].gcn.adjacency, ntu_adjacency())


@pytest.mark.parametrize("skeleton", [None, torch.zeros(2, 3, 8, 25), torch.zeros(2, 3, 8, 25, 1),
                                      torch.zeros(2, 2, 8, 25, 2), torch.zeros(2, 3, 8, 25, 2).double()])
def test_skeleton_of_the_wrong_kind_is_refused(skeleton):
    net = CTRGCN(CTRGCNConfig(num_classes=5, base_channels=8))
    with pytest.raises(ValueError, match="skeleton"):
        net(rgb=torch.zeros(2, 3, 8, 224, 224), skeleton=skeleton)


@pytest.mark.parametrize("options", [dict(num_classes=0), dict(num_persons=0), dict(num_joints=20),
                                     dict(in_channels=6), dict(base_channels=60), dict(dropout=1.0)])
def test_config_is_validated(options):
    with pytest.raises(ValueError):
        CTRGCNConfig(**{"num_classes": 60, **options})
