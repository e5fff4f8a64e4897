"""`TrainConfig` in its parts: what it composes, what it records, and the options that cannot work, each
refused in one line (exit 2) before anything is read or allocated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.train import main
from model.data.clip_spec import ClipSpec
from model.training.config import DataConfig, NetworkConfig, RunConfig, TrainConfig
from model.training.recipes import Recipe
from ntu_pipeline.errors import ConfigError

# What config.json held before the parts (format ntu-train/2): one flat dict, a CPU run saying bf16.
FLAT = {"store": "s.zarr", "protocol": "xsub", "model": "hcn", "out": "runs/hcn", "epochs": 2,
        "batch_size": 16, "lr": 0.016, "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0,
        "warmup_epochs": 1.0, "schedule": "exp", "lr_decay": 0.99, "clip_norm": 40.0, "seed": 0, "frames": 16,
        "crop": 224, "flip": 0.0, "normalize": "spine_axes", "dropout": 0.1, "bn_momentum": None,
        "i3d_checkpoint": None, "pretrained_lr": 0.1, "init_from": [], "device": "cpu", "workers": 0,
        "bf16": True, "compile": False, "sync_bn": False, "half_skeletons": False, "checkpoint_every": 0,
        "progress": False, "test_clips": 1, "recipe": "hcn"}


def test_the_parts_compose_and_round_trip():
    """Catches a flat name that lands in the wrong part, a part lost on the way to config.json and back,
    and a config.json written before the parts that no longer reads (or reads to other settings)."""
    config = TrainConfig.from_options(**{k: v for k, v in FLAT.items() if k != "recipe"})
    assert isinstance(config.data, DataConfig) and isinstance(config.data.clip, ClipSpec)
    assert isinstance(config.network, NetworkConfig) and isinstance(config.recipe, Recipe)
    assert isinstance(config.run, RunConfig)
    assert config.data.clip == ClipSpec(frames=16, skeleton=True, rgb=False, crop=224, flip=0.0)
    assert (config.network.model, config.network.dropout, config.recipe.lr, config.run.out) == \
        ("hcn", 0.1, 0.016, "runs/hcn")
    assert (config.epochs, config.frames, config.workers) == (2, 16, 0)  # the flat names read through
    assert config.model_options() == {"frames": 16, "dropout": 0.1}
    saved = config.to_dict()
    assert set(saved) == {"data", "network", "recipe", "run", "seed"}
    assert saved["data"]["clip"]["frames"] == 16
    assert TrainConfig.from_dict(saved) == config
    assert TrainConfig.from_dict(FLAT) == config  # a run written before the parts
    with pytest.raises(ConfigError, match="unknown settings"):
        TrainConfig.from_options(**{**FLAT, "lr_warmup": 3})


def test_an_i3d_run_names_its_recipe_by_its_source():
    """An i3d run printed "recipe ccdfarm": i3d is not CC-DFARM. The line names the models a recipe is
    for and the paper it comes from; hcn keeps its own."""
    i3d = TrainConfig.from_options(store="s", protocol="xsub", model="i3d", out="o", device="cpu")
    assert i3d.describe_recipe().startswith("recipe for i3d and the fused models (the CC-DFARM paper): SGD")
    assert "recipe ccdfarm" not in i3d.describe_recipe()
    hcn = TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", device="cpu")
    assert hcn.describe_recipe().startswith("recipe for hcn (the HCN paper (Li et al. 2018)): Adam")


def test_a_reference_model_takes_its_reference_clip_and_says_whose_recipe_it_has():
    """The options the CLI leaves unset take the model's reference clip (CTR-GCN's 64 frames, its crop
    and rotation), a given one overrides it; the recipe line names its own config (CTR-GCN's yaml)."""
    ctrgcn = TrainConfig.from_options(store="s", protocol="xsub", model="ctrgcn", out="o", device="cpu",
                                      frames=None, crop=None, flip=None, normalize=None)
    assert (ctrgcn.frames, ctrgcn.sampling, ctrgcn.rotation, ctrgcn.flip) == (64, "crop_resize", 0.3, 0.0)
    assert ctrgcn.describe_recipe().startswith("recipe for ctrgcn (CTR-GCN config/nturgbd-cross-subject/")
    mine = TrainConfig.from_options(store="s", protocol="xsub", model="ctrgcn", out="o", device="cpu",
                                    frames=32)
    assert mine.frames == 32 and mine.differences(ctrgcn) == ["frames"]
    assert TrainConfig.from_dict(mine.to_dict()) == mine


def test_bf16_is_recorded_as_it_runs():
    """config.json said "bf16": true for CPU runs, where autocast is off: it records what ran."""
    cpu = TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", device="cpu")
    assert cpu.network.bf16 is False and cpu.to_dict()["network"]["bf16"] is False
    cuda = TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", device="cuda")
    assert cuda.network.bf16 is True
    assert cuda.for_evaluation("cpu", 0).network.bf16 is False


def fit_args(store: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--frames", "16", "--device", "cpu", "--workers", "0",
            "--quiet", *extra]


REFUSED = [
    (["--dropout", "2"], "hcn: dropout must be in [0, 1), got 2.0"),
    (["--seed", "-5"], "seed must be in [0, 2**63), got -5"),
    (["--model", "i3d", "--bn-momentum", "5"], "i3d: bn_momentum must be in (0, 1], got 5.0"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
    (["--device", "meta"], "--device must be cpu, cuda or cuda:N, got 'meta'"),
    (["--frames", "100000"], "frames must be a multiple of 16 in 1..300"),
    (["--frames", "320"], "frames must be a multiple of 16 in 1..300"),
    (["--workers", "100000"], "--workers must be 0.."),
]


@pytest.mark.parametrize(("extra", "message"), REFUSED, ids=[" ".join(e) for e, _ in REFUSED])
def test_options_that_cannot_work_are_one_line(skeleton_store, tmp_path, extra, message):
    """Each was a traceback (or, for --frames 100000, a process grown to 22.8 GB until the kernel killed
    it, and for --workers 100000 a fork of that many decoders): now one line, exit 2, nothing written."""
    result = CliRunner().invoke(main, fit_args(skeleton_store, tmp_path / "run", *extra))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.output.strip().splitlines() == [f"Error: {result.output.strip()[7:]}"], result.output
    assert message in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this PyTorch has CUDA: --device cuda works here")
def test_cuda_on_a_build_without_it_is_one_line(skeleton_store, tmp_path):
    """`--device cuda` on a CPU-only PyTorch died in torch's lazy init (AssertionError, a traceback)."""
    result = CliRunner().invoke(main, fit_args(skeleton_store, tmp_path / "run", "--device", "cuda"))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --device cuda: this PyTorch cannot use CUDA")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
