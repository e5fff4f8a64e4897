"""What `extract` reads and where it writes: the input files, their identity, the dataset, the --out folder.

    files, ignored = discover(Path("nturgb+d_skeletons"), ".skeleton")   # name -> file; (path, why) left out
    infer_dataset(list(files))                                           # "ntu60" or "ntu120"
    input_digest(files, root)                                            # what a resumed run must match
    check_out(Path("ntu60.zarr"), [root])                                # refuses folders that are not ours

Discovery is recursive and follows symbolic links, to files and to folders alike (a linked folder of
videos is as much input as a real one); a link that leads back into a folder already being walked (a
loop) is not followed and is listed with the reason, as is every broken link (whatever its name: it
may have been a folder of samples), every file that is not an NTU sample name and every duplicate of a
name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import NTUPrepError, SampleNameError
from ..manifests import MAX_SETUP, NUM_CLASSES
from ..sample_id import SampleId
from ..store.schema import is_store


def walk_files(root: Path, suffix: str) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every file under `root` whose name ends with `suffix`, following linked folders, sorted; and what
    was not followed, with why: links back into a folder on the way down (a loop), broken links, folders
    that cannot be listed."""
    found, skipped = [], []

    def visit(folder: Path, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            skipped.append((str(folder), f"cannot be listed: {err.strerror or err}"))
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir():  # follows links
                st = entry.stat()
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    skipped.append((str(path), f"link to {os.path.realpath(path)}, a folder above it: not "
                                  "followed (a loop)"))
                    continue
                visit(path, ancestors | {key})
            elif entry.name.endswith(suffix) and entry.is_file():
                found.append(path)
            elif entry.is_symlink() and not os.path.exists(path):
                skipped.append((str(path), f"broken link to {os.readlink(path)}"))

    st = root.stat()
    visit(root, frozenset({(st.st_dev, st.st_ino)}))
    return sorted(found), skipped


def discover(root: Path, suffix: str) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Sample name -> absolute file for every `*<suffix>` under root, and the files left out with why."""
    found: dict[str, list[Path]] = {}
    paths, ignored = walk_files(root.absolute(), suffix)
    for path in paths:
        try:
            found.setdefault(SampleId.from_path(path).name, []).append(path)
        except SampleNameError as err:
            ignored.append((str(path), f"not an NTU sample name: {err}"))
    chosen = {}
    for name, candidates in found.items():
        chosen[name] = candidates[0]
        for extra in candidates[1:]:
            ignored.append((str(extra), f"duplicate of {candidates[0]} (the first in sorted order is used)"))
    return chosen, ignored


def infer_dataset(names: list[str]) -> str:
    ids = [SampleId.parse(n) for n in names]
    big = any(s.setup > MAX_SETUP["ntu60"] or s.action > NUM_CLASSES["ntu60"] for s in ids)
    return "ntu120" if big else "ntu60"


def outside_dataset(files: dict[str, Path], dataset: str) -> list[tuple[str, str]]:
    """Remove from `files` the samples that are not part of `dataset`; returns them as (path, why)."""
    out = []
    for name in sorted(files):
        sid = SampleId.parse(name)
        if sid.setup > MAX_SETUP[dataset] or sid.action > NUM_CLASSES[dataset]:
            out.append((str(files.pop(name)), f"not part of {dataset} (setups 1-{MAX_SETUP[dataset]}, "
                                              f"actions 1-{NUM_CLASSES[dataset]})"))
    return out


def input_digest(files: dict[str, Path], root: Path) -> str:
    """A digest of the input: names, paths relative to the input folder, sizes and modification times.

    So a file changed in place is new input, and a moved input folder is the same input."""
    h = hashlib.sha256()
    base = root.absolute()
    for name, path in sorted(files.items()):
        stat = path.stat()
        h.update(f"{name}\t{path.relative_to(base).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def check_out(out: Path, inputs: list[Path]) -> None:
    """Refuse an --out that is inside an input, or a folder that is not ours (whatever the flags)."""
    target = out.resolve()
    for folder in inputs:
        if target == folder.resolve() or target.is_relative_to(folder.resolve()):
            raise NTUPrepError(f"--out {out} is inside the input folder {folder}; choose a folder outside it")
    if target.exists() and not target.is_dir():
        raise NTUPrepError(f"--out {out} is a file, not a folder")
    contents = list(target.iterdir()) if target.is_dir() else []
    if contents and not is_store(target):
        raise NTUPrepError(f"--out {out} is a folder with other files in it, not an ntu-prep store; "
                           "choose a new or empty folder (nothing was changed)")
