"""The prepared store: its format (`schema`), statuses (`status`), checks (`verify`, `files`), shard writer
(`shards`), lock (`lock`), splits (`splits`).

The public reader is re-exported here: `from ntu_pipeline.store import open_store, read_sample, Status`.
A consumer holds the store while it reads (`hold_store_for_reading`) and checks what it needs first
(`require_stages` / `require_complete`: finished, and every shard file there at its recorded size).
"""

from .files import check_shard_files
from .lock import StoreReadHold, hold_store_for_reading
from .schema import (
    FORMAT,
    MAX_FRAMES,
    META_FIELDS,
    SKELETON_ARRAYS,
    open_store,
    read_sample,
    read_strings,
    require_complete,
    require_stages,
    split_indices,
    store_size_bytes,
)
from .status import STATUS_CODES, State, Status, labelled, status_counts
from .verify import verify_store

__all__ = [
    "FORMAT", "MAX_FRAMES", "META_FIELDS", "SKELETON_ARRAYS", "STATUS_CODES", "State", "Status",
    "StoreReadHold", "check_shard_files", "hold_store_for_reading", "labelled", "open_store", "read_sample",
    "read_strings", "require_complete", "require_stages", "split_indices", "status_counts",
    "store_size_bytes", "verify_store",
]
