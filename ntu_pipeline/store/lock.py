"""One writer per store: an exclusive OS file lock held for the whole of a write.

    with store_lock(Path("ntu60.zarr"), "extract"):
        ...  # create, extract, split: anything that writes

The lock is `flock` on a hidden file beside the store, `.<store name>.ntu-prep-lock`, so the operating
system releases it when the holder dies (kill -9 included) and no stale lock is ever left to clear by
hand. A second writer fails at once with StoreLockedError naming the store and the holder's pid. The
file sits beside the store, not in it, because zarr warns about every file in a group that is not
part of the hierarchy, and so that replacing the store's folder never unlinks a held lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreLockedError


def lock_path(store: Path) -> Path:
    store = Path(store).resolve()
    return store.parent / f".{store.name}.ntu-prep-lock"


@contextmanager
def store_lock(store: Path, purpose: str) -> Iterator[None]:
    """Hold the write lock of `store` (a folder, created if absent) for the `with` block."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(store), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise StoreLockedError(
                f"{store}: another ntu-prep is writing this store (pid and task: {holder}); "
                "wait for it to finish or stop it, then run this again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {purpose}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
