"""The prepared store: its format (`schema`), statuses (`status`), checks (`verify`), shard writer
(`shards`), lock (`lock`), splits (`splits`).

The public reader is re-exported here: `from ntu_pipeline.store import open_store, read_sample, Status`.
"""

from .schema import (
    FORMAT,
    MAX_FRAMES,
    META_FIELDS,
    SKELETON_ARRAYS,
    open_store,
    read_sample,
    read_strings,
    require_complete,
    split_indices,
    store_size_bytes,
)
from .status import STATUS_CODES, State, Status, labelled, status_counts
from .verify import verify_store

__all__ = [
    "FORMAT", "MAX_FRAMES", "META_FIELDS", "SKELETON_ARRAYS", "STATUS_CODES", "State", "Status", "labelled",
    "open_store", "read_sample", "read_strings", "require_complete", "split_indices", "status_counts",
    "store_size_bytes", "verify_store",
]
