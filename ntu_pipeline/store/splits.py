"""Official evaluation protocols applied to a store, and which of a split's samples a consumer can use.

Usage:
    result = make_split(open_store("ntu60.zarr", mode="r+"), "xsub", keep_missing=False)
    result.train, result.test          # int64 indices into samples/, sorted
    kept, left_out = usable_samples(group, result.train, ("skeleton", "rgb"), keep_missing=False)
    usable_skeleton(status, num_frames, keep_missing)  # (n,) bool: the rule for one skeleton column
    describe_left_out(left_out)        # "skeleton absent 5, rgb failed 2"

A split is protocol membership: every sample of the store on the protocol's train or test side, less
those on the official missing-skeleton list unless `keep_missing` (the published protocol counts leave
them out). It depends on the sample names alone, so a store of videos only splits as well as one of
skeletons. Which samples a consumer takes is its own business: a skeleton model needs the skeleton, an
RGB model the video, a fused model both (`usable_samples`), and each says how many it left out and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from ..errors import StoreFormatError
from ..manifests import get_protocol, missing_samples
from .schema import read_strings, require_complete, stage_info, write_split
from .status import Status, describe_counts, status_counts


@dataclass(frozen=True, eq=False)
class SplitResult:
    protocol: str
    train: np.ndarray
    test: np.ndarray
    excluded_missing: int
    modalities: dict[str, dict[Status, int]]  # stage -> status counts over the split's samples

    def describe(self) -> str:
        missing = "kept" if self.excluded_missing < 0 else f"{self.excluded_missing} excluded"
        lines = [f"{self.protocol}: train {len(self.train)}, test {len(self.test)} (samples on the official "
                 f"missing-skeleton list: {missing})"]
        for stage, counts in self.modalities.items():
            lines.append(f"  {stage}: {describe_counts(counts)}")
        if any(counts[Status.OK] < sum(counts.values()) for counts in self.modalities.values()):
            lines.append("  (each model leaves out the samples whose modalities it needs are not ok, and "
                         "says so)")
        return "\n".join(lines)


def check_protocol(group: zarr.Group, protocol_name: str) -> None:
    """StoreFormatError unless the protocol is defined on the store's dataset."""
    protocol = get_protocol(protocol_name)
    dataset = group.attrs.get("dataset")
    if protocol.dataset != dataset:
        raise StoreFormatError(f"protocol {protocol_name} is defined on {protocol.dataset}; this store holds "
                               f"{dataset}")


def compute_split(group: zarr.Group, protocol_name: str, keep_missing: bool = False,
                  stages: tuple[str, ...] | None = None) -> SplitResult:
    """Train/test indices of a store's samples under a protocol (membership; see the module docstring).

    Refuses a store whose `stages` (None: every stage, and the store) are unfinished or damaged
    (`require_complete`); the modality counts are of those stages."""
    check_protocol(group, protocol_name)
    require_complete(group, stages)
    protocol = get_protocol(protocol_name)
    names = read_strings(group["samples/name"])
    listed = missing_samples(protocol.dataset)
    on_list = np.array([n in listed for n in names], dtype=bool)
    member = np.ones(len(names), bool) if keep_missing else ~on_list
    is_train = protocol.is_train(group["samples"][protocol.field][:])
    train = np.flatnonzero(member & is_train).astype(np.int64)
    test = np.flatnonzero(member & ~is_train).astype(np.int64)
    both = np.concatenate([train, test])
    modalities = {}
    for stage in dict(group.attrs.get("stages", {})):
        if stages is not None and stage not in stages:
            continue
        codes = group[stage_info(group, stage)["status"]][:][both]
        modalities[stage] = status_counts(codes)
    return SplitResult(protocol_name, train, test, -1 if keep_missing else int(on_list.sum()), modalities)


def make_split(group: zarr.Group, protocol_name: str, keep_missing: bool = False) -> SplitResult:
    """Compute and write splits/<protocol>/{train,test}."""
    result = compute_split(group, protocol_name, keep_missing)
    write_split(group, protocol_name, result.train, result.test, {
        "keep_missing": keep_missing, "excluded_missing": max(result.excluded_missing, 0),
    })
    return result


def usable_skeleton(status: np.ndarray, num_frames: np.ndarray, keep_missing: bool) -> np.ndarray:
    """(n,) bool: the skeletons a consumer can use, given their status codes and frames kept (n,) each:
    ok, or, where `keep_missing` (the split kept the samples of the official missing-skeleton list),
    missing_skeleton with frames kept from its file."""
    usable = status == Status.OK
    if keep_missing:
        usable |= (status == Status.MISSING_SKELETON) & (num_frames > 0)
    return usable


def usable_samples(group: zarr.Group, indices: np.ndarray, stages: tuple[str, ...],
                   keep_missing: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """The samples of `indices` whose every stage in `stages` is usable, and {"<stage> <status>": count}
    of those left out.

    A stage is usable where its status is ok; a skeleton by `usable_skeleton` (missing_skeleton too
    where `keep_missing` and frames were kept from its file). The stages must be in the store and
    complete (the caller checks: `require_stages`)."""
    indices = np.asarray(indices, dtype=np.int64)
    keep = np.ones(len(indices), bool)
    left_out: dict[str, int] = {}
    for stage in stages:
        info = stage_info(group, stage)
        if info is None:
            raise StoreFormatError(f"{group.store.root}: the store has no {stage} stage")
        codes = group[info["status"]][:][indices]
        if stage == "skeleton":
            ok = usable_skeleton(codes, group["samples/num_frames"][:][indices], keep_missing)
        else:
            ok = codes == Status.OK
        for status in Status:
            n = int(((codes == status) & ~ok & keep).sum())
            if n:
                left_out[f"{stage} {status.label}"] = n
        keep &= ok
    return indices[keep], left_out


def describe_left_out(left_out: dict[str, int]) -> str:
    """"skeleton absent 5, rgb failed 2" ("" when none)."""
    return ", ".join(f"{reason} {n}" for reason, n in left_out.items())
