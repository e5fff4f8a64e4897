"""The prepared store: its format (`schema`), shard writer (`shards`), lock (`lock`), splits (`splits`).

The public reader is re-exported here: `from ntu_pipeline.store import open_store, read_sample`.
"""

from .schema import (
    FORMAT,
    MAX_FRAMES,
    META_FIELDS,
    SKELETON_ARRAYS,
    STATUS_CODES,
    STATUS_NAMES,
    open_store,
    read_sample,
    read_strings,
    split_indices,
    status_counts,
    store_size_bytes,
    verify_store,
)

__all__ = [
    "FORMAT", "MAX_FRAMES", "META_FIELDS", "SKELETON_ARRAYS", "STATUS_CODES", "STATUS_NAMES", "open_store",
    "read_sample", "read_strings", "split_indices", "status_counts", "store_size_bytes", "verify_store",
]
