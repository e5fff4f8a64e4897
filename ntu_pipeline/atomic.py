"""Files that are whole or absent: written beside their target under a temporary name, then renamed.

    atomic_write_bytes(path, data)                # shard files, PNGs, JSON, checkpoints (via atomic_path)
    with atomic_path(target) as tmp:              # any writer that wants a path: h5py, zipfile, torch.save
        write_something(tmp)                      # on success os.replace(tmp, target); on error tmp removed
    remove_partials(folder)                       # what a kill -9 left: our partial files under it
    remove_partials(store, any_writer=True)       # in a store: zarr's own temporaries as well

One naming rule for every temporary file of the project: `.<target name>.<random>.partial` in the
target's own folder (the same file system, so `os.replace` is atomic; hidden and with a suffix no reader
looks for). A kill between the write and the rename leaves such a file and never a half-written
target; resuming runs `remove_partials` on what it owns (a store, a run directory). The file's bytes
are flushed to the disk (fsync) before the rename and the folder's entry after it, so a power cut too
leaves the old file or the new one, never an empty name. zarr's own writes
use `<name>.<uuid>.partial`; in a store, which holds nothing else of that suffix, those go too.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def partial_path(target: Path) -> Path:
    """A fresh temporary name beside `target` (unique per call: parallel writers never share one)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; when the block succeeds it replaces `target` in one rename,
    when it raises (Ctrl-C included) the temporary file is removed and `target` is untouched."""
    tmp = partial_path(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(tmp.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to the disk (a folder opens read-only, as POSIX allows)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write `data` as the whole of `target` (created with the usual mode, 0o666 less the umask)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode())


def remove_partials(folder: Path, any_writer: bool = False) -> int:
    """Remove every temporary file a killed write left under `folder` (recursively): ours, and with
    `any_writer` every `*.partial` file (zarr's too: only for folders no one else writes into, a store).
    Returns how many."""
    count = 0
    for path in Path(folder).rglob(f"*{PARTIAL_SUFFIX}"):
        if path.is_file() and (any_writer or path.name.startswith(".")):
            path.unlink(missing_ok=True)
            count += 1
    return count
