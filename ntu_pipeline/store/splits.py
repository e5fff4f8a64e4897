"""Official evaluation protocols applied to a store: `splits/<protocol>/{train,test}`.

Usage:
    result = make_split(open_store("ntu60.zarr", mode="r+"), "xsub", keep_missing=False)
    result.train, result.test          # int64 indices into samples/, sorted
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from ..errors import StoreFormatError
from ..manifests import get_protocol
from .schema import STATUS_CODES, write_split


@dataclass(frozen=True, eq=False)
class SplitResult:
    protocol: str
    train: np.ndarray
    test: np.ndarray
    excluded_missing: int
    excluded_failed: int

    def describe(self) -> str:
        return (f"{self.protocol}: train {len(self.train)}, test {len(self.test)} "
                f"(excluded: {self.excluded_missing} missing_skeleton, {self.excluded_failed} failed)")


def compute_split(group: zarr.Group, protocol_name: str, keep_missing: bool = False) -> SplitResult:
    """Train/test indices of a store's samples. Failed samples (no data) are always left out;
    samples on the official missing-skeleton list are left out unless keep_missing."""
    protocol = get_protocol(protocol_name)
    dataset = group.attrs.get("dataset")
    if protocol.dataset != dataset:
        raise StoreFormatError(f"protocol {protocol_name} is defined on {protocol.dataset}; "
                               f"this store holds {dataset}")
    status = group["samples/status"][:]
    values = group["samples"][protocol.field][:]
    missing = status == STATUS_CODES["missing_skeleton"]
    failed = status == STATUS_CODES["failed"]
    usable = ~failed & (keep_missing | ~missing)
    is_train = protocol.is_train(values)
    return SplitResult(
        protocol=protocol_name,
        train=np.flatnonzero(usable & is_train).astype(np.int64),
        test=np.flatnonzero(usable & ~is_train).astype(np.int64),
        excluded_missing=0 if keep_missing else int((missing & ~failed).sum()),
        excluded_failed=int(failed.sum()),
    )


def make_split(group: zarr.Group, protocol_name: str, keep_missing: bool = False) -> SplitResult:
    """Compute and write splits/<protocol>/{train,test}."""
    result = compute_split(group, protocol_name, keep_missing)
    write_split(group, protocol_name, result.train, result.test, {
        "keep_missing": keep_missing, "excluded_missing": result.excluded_missing,
        "excluded_failed": result.excluded_failed,
    })
    return result
