"""The official facts in `data_manifests/`: sample lists, missing skeletons, class names, protocols.

Usage:
    missing_samples("ntu60")             # frozenset of 302 names
    class_names("ntu120")[0]             # 'drink water'
    assign_split("xsub", setup, camera, performer)  # bool array: True = train
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from .sample_id import NAME_PATTERN, SampleId

# `data_manifests/` at the top of the repository, shipped in the wheel as the package
# `ntu_pipeline.data_manifests` (pyproject.toml maps it), so both installs find it the same way.
MANIFEST_PACKAGE = "ntu_pipeline.data_manifests"
DATASETS = ("ntu60", "ntu120")
MAX_SETUP = {"ntu60": 17, "ntu120": 32}
NUM_CLASSES = {"ntu60": 60, "ntu120": 120}
_FILES = {
    "ntu60": ("ntu60_available_samples.txt", "NTU_RGBD_samples_with_missing_skeletons.txt",
              "ntu60_action_classes.txt"),
    "ntu120": ("ntu120_available_samples.txt", "NTU_RGBD120_samples_with_missing_skeletons.txt",
               "ntu120_action_classes.txt"),
}


@dataclass(frozen=True)
class Protocol:
    name: str
    dataset: str
    field: str  # "performer", "camera" or "setup"
    train: tuple[int, ...] | str  # the train values, or "even"

    def is_train(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if self.train == "even":
            return values % 2 == 0
        return np.isin(values, np.asarray(self.train))


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")


def read_manifest(filename: str) -> str:
    """The text of one file of `data_manifests/`, wherever the package is installed."""
    return resources.files(MANIFEST_PACKAGE).joinpath(filename).read_text(encoding="utf-8")


def _read_names(filename: str) -> list[str]:
    names = [line.strip() for line in read_manifest(filename).splitlines()]
    return [n for n in names if NAME_PATTERN.match(n)]  # skips the missing lists' header lines


@cache
def available_samples(dataset: str) -> tuple[str, ...]:
    """Names with complete skeletons, sorted (NTU60: 56,578; NTU120: 113,945)."""
    _check_dataset(dataset)
    return tuple(sorted(_read_names(_FILES[dataset][0])))


@cache
def missing_samples(dataset: str) -> frozenset[str]:
    """The official missing-skeleton list (NTU60: 302; NTU120: 535)."""
    _check_dataset(dataset)
    return frozenset(_read_names(_FILES[dataset][1]))


def all_samples(dataset: str) -> tuple[str, ...]:
    """The full dataset: available plus missing, sorted (56,880; 114,480)."""
    return tuple(sorted(set(available_samples(dataset)) | missing_samples(dataset)))


@cache
def class_names(dataset: str) -> tuple[str, ...]:
    """Class names in label order (index 0 is A001)."""
    _check_dataset(dataset)
    names = []
    for line in read_manifest(_FILES[dataset][2]).splitlines():
        match = re.match(r"^\*\s*A(\d+)\.\s*(.*?)\.?\s*$", line)
        if match:
            names.append((int(match.group(1)), match.group(2)))
    names.sort()
    assert [k for k, _ in names] == list(range(1, len(names) + 1)), "class list has gaps"
    return tuple(n for _, n in names)


@cache
def protocols() -> dict[str, Protocol]:
    raw = tomllib.loads(read_manifest("protocols.toml"))
    out = {}
    for name, spec in raw.items():
        train = spec["train"] if isinstance(spec["train"], str) else tuple(spec["train"])
        out[name] = Protocol(name, spec["dataset"], spec["field"], train)
    return out


def get_protocol(name: str) -> Protocol:
    known = protocols()
    if name not in known:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(known)}")
    return known[name]


def protocol_counts(name: str, keep_missing: bool) -> tuple[int, int]:
    """(train, test) sample counts of a protocol over its full dataset, from the manifests alone."""
    protocol = get_protocol(name)
    names = all_samples(protocol.dataset) if keep_missing else available_samples(protocol.dataset)
    values = np.array([getattr(SampleId.parse(n), protocol.field) for n in names])
    train = int(protocol.is_train(values).sum())
    return train, len(names) - train
