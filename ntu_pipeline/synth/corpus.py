"""`ntu-prep synth`: a synthetic corpus written into a folder that is new, empty, or one synth wrote.

    write_synthetic_corpus(Path("demo_raw"), 240, 6, seed=0)   # .skeleton files and _rgb.avi videos

A folder with files synth did not write is refused (two corpora mixed in one folder would be extracted
as one); a folder synth wrote (it carries MARKER) is replaced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import NTUPrepError
from ..progress import ProgressBar
from .skeleton import write_corpus

MARKER = ".ntu-prep-synth.json"


def write_synthetic_corpus(out: Path, samples: int, classes: int, seed: int = 0, videos: bool = True,
                           progress: bool = True) -> int:
    """Write the corpus; returns the number of samples."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NTUPrepError(f"{out} is a file, not a folder")
    contents = list(out.iterdir()) if out.is_dir() else []
    if contents and not (out / MARKER).is_file():
        raise NTUPrepError(f"{out} has files that ntu-prep synth did not write; choose a new or empty "
                           "folder (nothing was changed)")
    for child in contents:  # a corpus synth wrote earlier: replaced whole
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"samples": samples, "classes": classes, "seed": seed,
                                          "videos": videos}))
    with ProgressBar(samples, "samples", "synth", enabled=progress) as bar:
        paths = write_corpus(out, samples, classes, seed, progress=bar.advance, videos=videos)
    return len(paths)
