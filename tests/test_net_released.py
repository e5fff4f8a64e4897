"""model.load_released: each reference network takes its own release format through the one call."""

from __future__ import annotations

import pytest
import torch

import model
from model.networks.ctrgcn import ctrgcn_key_map


def _released(net: torch.nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """net's weights, renamed to the reference's keys (what its release would hold)."""
    return {names[key]: value.clone() for key, value in net.state_dict().items()}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key


def test_ctrgcn_release_module_prefixed(tmp_path):
    torch.manual_seed(0)
    source = model.build("ctrgcn", 60)
    state = {f"module.{k}": v for k, v in _released(source, ctrgcn_key_map(source)).items()}
    torch.save(state, tmp_path / "ntu60_xsub_joint.pt")
    torch.manual_seed(1)
    target = model.build("ctrgcn", 60)
    model.load_released(target, tmp_path / "ntu60_xsub_joint.pt")
    _assert_same_weights(source, target)
    with pytest.raises(ValueError, match="partial"):
        model.load_released(target, state, partial=True)


def test_pyskl_release_state_dict_and_partial():
    torch.manual_seed(0)
    source = model.build("posec3d", 60)
    release = {"meta": {}, "state_dict": _released(source, source.pyskl_key_map())}
    torch.manual_seed(1)
    target = model.build("posec3d", 60)
    model.load_released(target, release)
    _assert_same_weights(source, target)
    head = [k for k in release["state_dict"] if k.startswith("cls_head.")]
    without_head = {"state_dict": {k: v for k, v in release["state_dict"].items() if k not in head}}
    with pytest.raises(ValueError, match="cls_head"):
        model.load_released(model.build("posec3d", 60), without_head)
    model.load_released(model.build("posec3d", 60), without_head, partial=True)
