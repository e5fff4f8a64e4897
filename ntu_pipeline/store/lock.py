"""One writer per folder: an exclusive OS file lock held for the whole of a write, and a lease workers check.

    with store_lock(Path("ntu60.zarr"), "extract") as lease:
        ...                       # create, extract, split: anything that writes the store
        lease.check()             # in a worker process, before it writes: raises once the holder is gone
    holder(lock_path(store))      # "1234 extract" while a writer holds it, else None

The lock is `flock` on a hidden file beside the store, `.<store name>.ntu-prep-lock` (a run directory's
is inside it, `.ntu-train-lock`), so the operating system releases it when the holder dies (kill -9
included) and no stale lock ever needs clearing by hand. A second writer fails at once with
LockedError naming the folder and the holder's pid. The holder removes the file when it is done, so no
lock files pile up beside deleted stores; a holder killed with -9 leaves its file (the lock itself is
released), and the next writer in that folder removes the files of stores that no longer exist. A writer
that took the lock checks that its file is still the
one at the path (a holder may remove it between another's open and flock), so two can never both hold it.
The store's file sits beside it, not in it, because zarr warns about every file in a group that is not
part of the hierarchy.

Worker processes do not hold the lock (loky and dask workers outlive a killed parent by seconds to
minutes). Each task carries the holder's `Lease`: the lock file's path and a token unique to this hold.
`Lease.check()` passes only while the lock is held and the file still names that token; a worker calls
it before writing anything, so once the holder is gone (Ctrl-C twice, kill -9, a crash) no worker writes
another file into the store.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..atomic import remove_partials
from ..errors import LeaseLostError, LockedError, StoreLockedError

LOCK_SUFFIX = ".ntu-prep-lock"


@dataclass(frozen=True)
class Lease:
    """What a worker needs to know that its writer still holds the lock (travels to other processes)."""

    path: str
    token: str

    def check(self) -> None:
        """Raise LeaseLostError unless the lock at `path` is held and names `token`."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise LeaseLostError(f"{self.path}: the writer's lock is gone; stopping without "
                                 "writing") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held, as it should be: by whom?
                if _read(fd).split(" ")[1:2] == [self.token]:
                    return
                raise LeaseLostError(f"{self.path}: another writer holds the lock now; stopping without "
                                     "writing") from None
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise LeaseLostError(f"{self.path}: nobody holds the writer's lock any more (it was stopped); "
                                 "stopping without writing")
        finally:
            os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip()


def lock_path(store: Path) -> Path:
    """The lock file of a store: `.<name>.ntu-prep-lock` beside it."""
    store = Path(store).resolve()
    return store.parent / f".{store.name}{LOCK_SUFFIX}"


def holder(path: Path) -> str | None:
    """"pid purpose" of the process holding the lock file at `path`, or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, _, purpose = (_read(fd).split(" ", 2) + ["", ""])[:3]
        return f"{pid or 'unknown'} {purpose}".strip()
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def other_writer(store: Path) -> str | None:
    """"pid purpose" of another process writing `store` now (None when none, or when it is this one)."""
    found = holder(lock_path(store))
    return None if found is None or found.split(" ")[0] == str(os.getpid()) else found


def _acquire(path: Path) -> int:
    """An fd holding an exclusive flock on the file now at `path`; BlockingIOError when another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed this file after we opened it: lock the new one


@contextmanager
def hold_lock(path: Path, purpose: str, busy: str, error: type[LockedError] = LockedError) -> Iterator[Lease]:
    """Hold the lock file at `path` for the `with` block; yields the Lease. `busy` starts the message
    of the LockedError raised when another process holds it ("ntu60.zarr: another ntu-prep is ...")."""
    try:
        fd = _acquire(path)
    except BlockingIOError:
        found = holder(path) or "unknown"
        raise error(f"{busy} (pid and task: {found}); wait for it to finish or stop it, then run this "
                    "again") from None
    token = secrets.token_hex(8)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {token} {purpose}".encode(), 0)
        yield Lease(str(path), token)
    finally:
        try:
            os.unlink(path)  # while still held: whoever opens it later locks a new file
        except FileNotFoundError:
            pass
        os.close(fd)  # closing releases the flock


def remove_stale_locks(folder: Path) -> int:
    """Remove the lock files in `folder` whose store is gone and that nobody holds (what a writer killed
    with -9 left beside a store deleted since); returns how many."""
    count = 0
    for path in Path(folder).glob(f".*{LOCK_SUFFIX}"):
        if (path.parent / path.name[1:-len(LOCK_SUFFIX)]).exists():
            continue  # the store's own writers reuse it
        try:
            fd = _acquire(path)
        except (BlockingIOError, FileNotFoundError):
            continue  # held: its writer is creating that store right now
        try:
            os.unlink(path)
            count += 1
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return count


@contextmanager
def store_lock(store: Path, purpose: str) -> Iterator[Lease]:
    """Hold the write lock of `store` (a folder, created if absent) for the `with` block. Holding it,
    remove what killed writers left: temporary files in the store, lock files of deleted stores beside it."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    busy = f"{store}: another ntu-prep is writing this store"
    with hold_lock(lock_path(store), purpose, busy, StoreLockedError) as lease:
        remove_partials(store, any_writer=True)
        remove_stale_locks(lock_path(store).parent)
        yield lease
