"""What a store says of each sample and of each stage: `Status` per row, `State` per stage and store.

    Status.OK, Status(int(group["rgb/status"][i]))   # one sample's status in one stage
    counts = status_counts(group["samples/status"][:])   # {Status.PENDING: 0, Status.OK: 3000, ...}
    counts[Status.FAILED], labelled(counts)              # 2; {"pending": 0, "ok": 3000, ...} for JSON
    State.COMPLETE                                   # group.attrs["state"], attrs["stages"][name]["state"]

Every status column is created with the fill value `Status.PENDING`: a row no shard task has written
reads as pending, never as ok (a store interrupted part-way can then never pass unwritten rows off as
samples). The codes are stored in `attrs["status_codes"]` so a reader without this package can decode
them. A stage is `extracting` from the moment a run starts working on it until every one of its shards
is written, then `complete`; the store is `creating` while its sample table is made, `extracting` while
any stage runs or is unfinished, and `complete` when every stage is.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

import numpy as np


class Status(IntEnum):
    """A sample's status in one stage (its int8 status column)."""

    PENDING = -1  # not written yet: the fill value of every status column
    OK = 0
    MISSING_SKELETON = 1  # on the official missing-skeleton list (the skeleton stage only)
    FAILED = 2  # the input file is bad: the error column says why
    ABSENT = 3  # no input file for this modality

    @property
    def label(self) -> str:
        """The name users see and attrs store: "ok", "missing_skeleton", ..."""
        return self.name.lower()


STATUS_CODES = {status.label: int(status) for status in Status}


class State(StrEnum):
    """How far the store, or one of its stages, has got."""

    CREATING = "creating"
    EXTRACTING = "extracting"
    COMPLETE = "complete"


def status_counts(codes: np.ndarray) -> dict[Status, int]:
    """{status: count} of a status column's codes, every Status in order, zeros included (keyed by the
    enum, so a misspelt status is a KeyError, never a silent 0); unknown codes are not counted here
    (`verify` reports them)."""
    codes = np.asarray(codes)
    return {status: int((codes == status).sum()) for status in Status}


def labelled(counts: dict[Status, int]) -> dict[str, int]:
    """{"ok": 3000, ...}: the counts as attrs and JSON hold them."""
    return {Status(status).label: n for status, n in counts.items()}


def count_noted(status: np.ndarray, notes) -> int:
    """How many ok rows of a status column (N,) have a non-empty note (`notes`: the (N,) note column,
    a zarr array or anything indexable the same way)."""
    ok = np.flatnonzero(np.asarray(status) == Status.OK)
    if not len(ok):
        return 0
    column = np.asarray(notes[:], dtype=object)
    return int(sum(bool(column[i]) for i in ok))


def describe_counts(counts: dict[Status, int], noted: int = 0) -> str:
    """"ok 3000 (12 noted), failed 2": non-zero counts only, in Status order; `noted`, the ok samples
    whose note column says something (a replaced frame, a fallback crop, a short video), when any."""
    def count(status: Status, n: int) -> str:
        return f"{status.label} {n}" + (f" ({noted} noted)" if status == Status.OK and noted else "")
    return ", ".join(count(Status(s), n) for s, n in counts.items() if n) or "no samples"
