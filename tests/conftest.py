"""Shared fixtures. Real NTU files are read from ../shared/ntu_samples (NTU_SAMPLES overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(os.environ.get("NTU_SAMPLES", REPO.parent / "shared" / "ntu_samples"))


@pytest.fixture(scope="session")
def ntu_samples() -> Path:
    """The folder of real NTU files; the test is skipped, saying why, where it is absent."""
    if not (SAMPLES_DIR / "skeletons").is_dir():
        pytest.skip(f"real NTU samples not found at {SAMPLES_DIR} (set NTU_SAMPLES to their folder)")
    return SAMPLES_DIR
