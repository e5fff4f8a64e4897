"""Saved scores: what every evaluation writes beside metrics.json, so runs can be combined later.

    write_scores(Path("runs/hcn/scores.npz"), scores)
    scores = read_scores("runs/hcn")              # a scores.npz, or a run/eval directory holding one
    np.load("runs/hcn/scores.npz")["logits"]      # plain numpy reads it: name, label, logits, class_names

scores.npz: `name` (N,) the sample names, `label` (N,) int64 in [0, K), `logits` (N, K) float32 (the
clips' logits averaged, in split order), `class_names` (K,). A file that breaks any of this is a
ScoresError (ntu_pipeline/errors.py, re-exported here) naming it.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ntu_pipeline.atomic import atomic_write_bytes
from ntu_pipeline.errors import ScoresError

__all__ = ["KEYS", "SCORES_FILE", "Scores", "ScoresError", "read_scores", "write_scores"]

SCORES_FILE = "scores.npz"
KEYS = ("name", "label", "logits", "class_names")


@dataclass(frozen=True, eq=False)
class Scores:
    """names (N,) str, labels (N,) int64, logits (N, K) float32, class_names (K,) str; `source`: the
    file they were read from ('' when made in memory)."""

    names: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)


def write_scores(path: Path, scores: Scores) -> None:
    """scores.npz at `path`, written whole."""
    buffer = io.BytesIO()
    np.savez(buffer, name=np.asarray(scores.names, dtype=str), label=np.asarray(scores.labels, np.int64),
             logits=np.asarray(scores.logits, np.float32), class_names=np.asarray(scores.class_names, str))
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_scores(path: str | Path) -> Scores:
    """The scores of a scores.npz, or of the one in a run or eval directory; ScoresError, naming the file
    and what is wrong, for a missing file, a missing key, shapes that disagree, a label that is not one
    of its classes or non-finite logits."""
    path = Path(path)
    if path.is_dir():
        path = path / SCORES_FILE
    if not path.is_file():
        raise ScoresError(f"{path}: no such scores file (every evaluation writes one: fit, eval, ensemble)")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle and say so
        raise ScoresError(f"{path}: not a scores file (not an .npz archive; give a run or eval directory, "
                          "or its scores.npz)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in KEYS if key not in data.files]
            if missing:
                raise ScoresError(f"{path}: not a scores file (no {', '.join(missing)})")
            names, labels, logits = data["name"], data["label"], data["logits"]
            class_names = tuple(str(c) for c in data["class_names"])
    except ScoresError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ScoresError(f"{path}: not a readable scores file ({err})") from err
    n = len(names)
    if labels.shape != (n,) or logits.ndim != 2 or logits.shape != (n, len(class_names)):
        raise ScoresError(f"{path}: shapes disagree: name {names.shape}, label {labels.shape}, logits "
                          f"{logits.shape}, class_names ({len(class_names)},)")
    if labels.dtype.kind not in "iu":
        raise ScoresError(f"{path}: labels of dtype {labels.dtype}, not integers")
    outside = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if len(outside):
        raise ScoresError(f"{path}: label {labels[outside[0]]} of {names[outside[0]]} is not one of its "
                          f"{len(class_names)} classes (labels are 0..{len(class_names) - 1}; "
                          f"{len(outside)} such)")
    if not np.isfinite(logits).all():
        raise ScoresError(f"{path}: {int((~np.isfinite(logits)).sum())} logits are not finite")
    return Scores(names.astype(str), labels.astype(np.int64), logits.astype(np.float32), class_names,
                  str(path))
