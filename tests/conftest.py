"""Shared fixtures. Real NTU files are read from ../shared/ntu_samples (NTU_SAMPLES overrides)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from exports import MISSING_NAME

from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus

REPO = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(os.environ.get("NTU_SAMPLES", REPO.parent / "shared" / "ntu_samples"))


@pytest.fixture(scope="session")
def ntu_samples() -> Path:
    """The folder of real NTU files; the test is skipped, saying why, where it is absent."""
    if not (SAMPLES_DIR / "skeletons").is_dir():
        pytest.skip(f"real NTU samples not found at {SAMPLES_DIR} (set NTU_SAMPLES to their folder)")
    return SAMPLES_DIR


# --- the stores of the export tests (test_export_*.py) ----------------------------------------------


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory) -> Path:
    """41 synthetic samples in shards of 8: one failed, one on the missing-skeleton list; xsub stored
    with keep_missing (so the missing sample is exported), xview left to be computed."""
    root = tmp_path_factory.mktemp("export_synth")
    raw = root / "raw"
    write_corpus(raw, 40, 6, seed=1)
    files = sorted(raw.rglob("*.skeleton"))
    shutil.copy(files[5], raw / f"{MISSING_NAME}.skeleton")
    lines = files[3].read_text().splitlines(keepends=True)
    files[3].write_text("".join(lines[: len(lines) // 2]))  # ends early: failed
    out = root / "s.zarr"
    extract(ExtractConfig(skeletons=raw, out=out, dataset="ntu60", shard_size=8, progress=False))
    make_split(open_store(out, mode="r+"), "xsub", keep_missing=True)
    return out


@pytest.fixture(scope="module")
def real_store(ntu_samples, tmp_path_factory) -> Path:
    """The 16 real samples as an ntu60 store (two shards), no split stored."""
    out = tmp_path_factory.mktemp("export_real") / "real.zarr"
    extract(ExtractConfig(skeletons=ntu_samples / "skeletons", out=out, dataset="ntu60", shard_size=8,
                          progress=False))
    return out


@pytest.fixture(params=["synth", "real"])
def store(request) -> Path:
    return request.getfixturevalue(f"{request.param}_store")


# --- the skeleton store and threads of the training tests (test_train_data.py, test_train_fit.py) ------
# torch and model are imported inside these fixtures: importing them takes seconds, and most test files
# never need them.


@pytest.fixture
def one_thread():
    """Torch on one thread (used by the training tests with `pytest.mark.usefixtures`): this machine's
    two cores are shared, and two threads fighting for one core made HCN's steps four times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_module():
    """`one_thread` for a whole module, its module-scoped runs included (a per-test fixture is set after
    the module's fixtures were made: on two threads those runs took three times as long)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="session")
def skeleton_store(train_root) -> Path:
    """240 samples of 6 classes (xsub: 119 train, 120 test; 20 per class in the test split)."""
    from training import build_store

    return build_store(train_root)
