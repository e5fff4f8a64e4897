"""The synthetic skeleton stores and the small HCN config of the ntu-train tests (`from training import ...`).

The stores are synthetic (`write_corpus` -> `extract` -> `make_split`), built once per test process for
each set of arguments: conftest.py's `skeleton_store` is the default one; test_train_runs.py and
test_train_ddp.py build theirs here too.
"""

from __future__ import annotations

from pathlib import Path

from model.training.config import TrainConfig
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus

_STORES: dict[tuple, Path] = {}


def build_store(root: Path, samples: int = 240, classes: int = 6, seed: int = 0) -> Path:
    """A synthetic skeleton store with the xsub split, made once per process for each arguments."""
    key = (samples, classes, seed)
    if key not in _STORES:
        raw, store = root / f"raw{samples}_{classes}_{seed}", root / f"s{samples}_{classes}_{seed}.zarr"
        write_corpus(raw, samples, classes, seed=seed, videos=False)
        extract(ExtractConfig(skeletons=raw, out=store, dataset="ntu60", shard_size=32, progress=False))
        make_split(open_store(store, mode="r+"), "xsub")
        _STORES[key] = store
    return _STORES[key]


def hcn_config(store: Path, out: Path, **changes) -> TrainConfig:
    """A small, fast HCN run: 16 frames, batch 16, Adam (what makes HCN learn in a few epochs)."""
    options = dict(store=str(store), protocol="xsub", model="hcn", out=str(out), epochs=2, batch_size=16,
                   optimizer="adam", lr=0.016, weight_decay=0.0, warmup_epochs=1, frames=16, flip=0.0,
                   dropout=0.1, device="cpu", workers=0, progress=False)
    return TrainConfig.from_options(**{**options, **changes})

