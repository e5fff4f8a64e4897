"""One writer per folder: an exclusive OS file lock held for the whole of a write, and a lease workers check;
readers of a store share the same lock, so that no writer replaces a store while it is read.

    with store_lock(Path("ntu60.zarr"), "extract") as lease:
        ...                       # create, extract, split: anything that writes the store
        lease.check()             # in a worker process, before it writes: raises once the holder is gone
    holder(lock_path(store))      # "1234 extract" while a writer holds it, else None

    with hold_store_for_reading("ntu60.zarr"):     # export, sheet, preview; training for its whole run
        ...                                        # no writer starts on this store meanwhile
    hold = hold_store_for_reading("ntu60.zarr")    # or kept for the process's life (released at exit)

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

Readers (`hold_store_for_reading`) take a shared flock on the same file: any number of readers at once,
never beside a writer. A reader is refused at once while a writer holds the store (one line naming its
pid), and a writer (`extract`, `--overwrite` included, `split`) is refused at once while readers hold it,
naming their pids and commands (read from /proc/locks on Linux; elsewhere "another process"): neither
waits, as two writers never do. The last reader to let go removes the file, as a writer does. A store in
a folder the reader may not create files in is read without a hold (no writer can lock it there either,
unless it runs as another user).
"""

from __future__ import annotations

import errno
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


def _command(pid: int) -> str:
    """A process's command line, shortened: "ntu-train fit --store ntu60.zarr ..." ("" when unknown)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return ""
    argv = [a for a in argv if a]
    if len(argv) > 1 and Path(argv[0]).name.startswith("python") and not argv[1].startswith("-"):
        argv = argv[1:]  # python .../ntu-train fit: the script is the command
    if argv:
        argv[0] = Path(argv[0]).name
    text = " ".join(" ".join(argv).split())  # one line, whatever the arguments hold
    return text if len(text) <= 80 else text[:77] + "..."


def readers(path: Path) -> list[str]:
    """"pid (command)" of each process holding a reader's (shared) flock on the lock file at `path`, from
    /proc/locks (Linux; [] elsewhere or when none). Lines read `1: FLOCK ADVISORY READ 1234 fe:00:567 0
    EOF` (major:minor in hex, then the inode); a process waiting for a lock has `->` and is left out."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1:4] != ["FLOCK", "ADVISORY", "READ"]:
            continue
        device, _, inode = fields[5].rpartition(":")
        major, _, minor = device.partition(":")
        try:
            same = int(inode) == st.st_ino and os.makedev(int(major, 16), int(minor, 16)) == st.st_dev
        except ValueError:
            continue
        if same and fields[4].isdigit():
            command = _command(int(fields[4]))
            found.append(f"pid {fields[4]}" + (f" ({command})" if command else ""))
    return list(dict.fromkeys(found))


def other_writer(store: Path) -> str | None:
    """"pid purpose" of another process writing `store` now (None when none, or when it is this one)."""
    found = holder(lock_path(store))
    return None if found is None or found.split(" ")[0] == str(os.getpid()) else found


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the file at `path` (a lock holder may remove it)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path) -> int:
    """An fd holding an exclusive flock on the file now at `path`; BlockingIOError when another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the previous holder removed this file after we opened it: lock the new one


@contextmanager
def hold_lock(path: Path, purpose: str, busy: str, error: type[LockedError] = LockedError,
              read_busy: str | None = None) -> Iterator[Lease]:
    """Hold the lock file at `path` for the `with` block; yields the Lease. `busy` starts the message
    of the LockedError raised when another writer holds it ("ntu60.zarr: another ntu-prep is ..."),
    `read_busy` the one raised when readers hold it ("ntu60.zarr: is being read")."""
    try:
        fd = _acquire(path)
    except BlockingIOError:
        found = holder(path)
        reading = readers(path) if found is None and read_busy else []
        if reading:
            raise error(f"{read_busy} by {', '.join(reading)}; wait for it to finish or stop it, then run "
                        "this again") from None
        raise error(f"{busy} (pid and task: {found or 'unknown'}); wait for it to finish or stop it, then "
                    "run this again") from None
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
    with hold_lock(lock_path(store), purpose, busy, StoreLockedError, f"{store}: is being read") as lease:
        remove_partials(store, any_writer=True)
        remove_stale_locks(lock_path(store).parent)
        yield lease


class StoreReadHold:
    """A reader's shared lock on a store (`hold_store_for_reading`): held until `release()`, the end of
    its `with` block, or the process's end, whether or not the object is kept (dropping it does not
    release it). Forked children (DataLoader workers) share it; only the process that took it releases
    it (a child's `release()` just closes its copy)."""

    def __init__(self, store: Path, fd: int | None, path: Path):
        self.store, self.path = store, path
        self._fd, self._pid = fd, os.getpid()

    @property
    def held(self) -> bool:
        """False once released, and for a store read without a hold (a folder the reader cannot write)."""
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.getpid() == self._pid:  # a child must not convert the lock it shares with its parent
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last reader removes the file
                except BlockingIOError:
                    pass  # other readers, or a writer already waiting: they own the file now
                else:
                    if _same_file(fd, self.path):
                        os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> StoreReadHold:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold_store_for_reading(store: str | Path) -> StoreReadHold:
    """Take a reader's shared lock on `store` and return it (a context manager; or call it once and the
    lock is held for the process's life). While any reader holds it, `extract` (`--overwrite` included)
    and `split` refuse at once naming the readers; StoreLockedError here, naming the writer's pid, while
    a writer holds it. Take it before reading the store's contents, never while this process writes it."""
    store = Path(store)
    path = lock_path(store)
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return StoreReadHold(store, None, path)  # nothing can lock it here: read without a hold
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            found = holder(path) or "unknown"
            raise StoreLockedError(f"{store}: another ntu-prep is writing this store (pid and task: "
                                   f"{found}); wait for it to finish, then run this again") from None
        if _same_file(fd, path):
            return StoreReadHold(store, fd, path)
        os.close(fd)  # the previous holder removed this file after we opened it: lock the new one
