"""The numbers and pictures made of logits: top-1/top-5, per-class accuracy, the confusion matrix (PNG),
and an evaluation's files.

    report = classification_report(logits, labels, class_names)   # {"top1", "top5", "per_class", ...}
    check_result_folder(Path("runs/eval"))                        # before the work: ConfigError if not ours
    write_evaluation(Path("run/"), report, scores, title)         # metrics.json, confusion.png, scores.npz

`top1` and `top5` are fractions in [0, 1]; `per_class` maps each class name to its accuracy (None where
the split has no sample of it) and its sample count. The PNG is drawn with OpenCV: rows are the true
classes, columns the predicted ones, each row normalised by its sample count. Every file is written
whole (ntu_pipeline/atomic.py), metrics.json last: a folder whose metrics.json has numbers holds them all.

Where `eval --out` and `ensemble --out` may write (`check_result_folder`): a new or empty folder, or one
that holds nothing but an earlier result of theirs, recognised by the `kind` ("eval" or "ensemble") its
metrics.json records; never a training run (whose metrics.json, scores.npz and confusion.png are the
run's own: `summary` and later ensembles read them), a store, or a folder with anything else in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.results.scores import SCORES_FILE, Scores, write_scores
from ntu_pipeline.atomic import PARTIAL_SUFFIX, atomic_write_text, remove_partials
from ntu_pipeline.errors import ConfigError
from ntu_pipeline.images import write_image
from ntu_pipeline.store.schema import is_store

METRICS_FILE, CONFUSION_FILE = "metrics.json", "confusion.png"
RESULT_FILES = (METRICS_FILE, CONFUSION_FILE, SCORES_FILE)  # what an evaluation writes
RESULT_KINDS = ("eval", "ensemble")  # metrics.json's "kind" in a folder --out may replace
RUN_FILES = ("config.json", "last.pt", "best.pt", "metrics.jsonl")  # what marks a training run


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Share of samples whose label is among the k highest logits: logits (n, K), labels (n,)."""
    if len(labels) == 0:
        return float("nan")
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (n, k)
    return (top == labels[:, None]).any(dim=1).double().mean().item()


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows the true class, columns the predicted one; predicted, labels (n,)."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()


def classification_report(logits: Tensor, labels: Tensor, class_names: list[str] | tuple[str, ...]) -> dict:
    """{"top1", "top5" (fractions), "loss" (mean cross-entropy), "num_samples", "per_class": {name:
    {"accuracy": fraction or None, "samples": n}}} of logits (n, K) against labels (n,)."""
    conf = confusion_matrix(logits.argmax(dim=1), labels, len(class_names))
    per_class = {}
    for k, name in enumerate(class_names):
        total = int(conf[k].sum())
        per_class[name] = {"accuracy": float(conf[k, k] / total) if total else None, "samples": total}
    return {
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "loss": F.cross_entropy(logits.float(), labels.long()).item() if len(labels) else float("nan"),
        "num_samples": len(labels),
        "per_class": per_class,
    }


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]


def draw_confusion(conf: np.ndarray, class_names: list[str] | tuple[str, ...], title: str = "",
                   numbers: list[int] | None = None) -> np.ndarray:
    """A BGR image (H, W, 3) uint8 of the row-normalised confusion matrix `conf` (K, K): viridis
    cells, rows without samples grey, the diagonal outlined, a colour scale below; every class labelled
    (number and name, numbers over the columns) where the cells are large enough to read, else every
    tenth. numbers: the 1-based class number of each row (default 1..K)."""
    k = conf.shape[0]
    numbers = list(range(1, k + 1)) if numbers is None else list(numbers)
    cell = int(np.clip(1000 // max(k, 1), 4, 40))
    labelled = cell >= 12
    font, scale, small, black = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0.3, (0, 0, 0)
    rows_text = [f"{numbers[i]:3d} {name}" for i, name in enumerate(class_names)] if labelled else []
    left = max([_text_width(t, scale) for t in rows_text] + [_text_width("true class", scale)]) + 14 \
        if labelled else 40
    top, size, bottom = 84, cell * k, 56
    width = max(left + size + 20, _text_width(title, 0.5) + 20, left + 320)
    image = np.full((top + size + bottom, width, 3), 255, np.uint8)
    rows = conf.sum(axis=1, keepdims=True)
    share = np.divide(conf, rows, out=np.zeros(conf.shape, np.float64), where=rows > 0)
    colours = cv2.applyColorMap((share * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)  # (K, K, 3)
    colours[rows[:, 0] == 0] = 200
    image[top:top + size, left:left + size] = np.repeat(np.repeat(colours, cell, 0), cell, 1)
    if labelled:  # smaller cells would be all outline
        for i in range(k):
            cv2.rectangle(image, (left + i * cell, top + i * cell), (left + (i + 1) * cell - 1,
                          top + (i + 1) * cell - 1), (0, 0, 255), 1)
    cv2.putText(image, title, (10, 22), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(image, "predicted class ->", (left, 48), font, scale, black, 1, cv2.LINE_AA)
    cv2.putText(image, "true class" if labelled else "true", (4, top - 8), font, scale, black, 1, cv2.LINE_AA)
    for i in range(k):
        if not labelled and i % 10:
            continue
        label = str(numbers[i])
        middle = top + i * cell + cell // 2
        if labelled:  # numbers over the columns, alternately high and low where they would touch
            lift = 12 * (i % 2) if _text_width(label, small) > cell - 2 else 0
            cv2.putText(image, rows_text[i], (4, middle + 4), font, scale, black, 1, cv2.LINE_AA)
            x = left + i * cell + (cell - _text_width(label, small)) // 2
            cv2.putText(image, label, (x, top - 6 - lift), font, small, black, 1, cv2.LINE_AA)
        else:
            cv2.line(image, (left - 4, middle), (left - 1, middle), black, 1)
            x = left - 6 - _text_width(label, scale)
            cv2.putText(image, label, (x, middle + 4), font, scale, black, 1, cv2.LINE_AA)
            x = left + i * cell + cell // 2
            cv2.line(image, (x, top - 4), (x, top - 1), black, 1)
            cv2.putText(image, label, (x - _text_width(label, scale) // 2, top - 8), font, scale, black, 1,
                        cv2.LINE_AA)
    _colour_scale(image, left, top + size + 16)
    return image


def _colour_scale(image: np.ndarray, x: int, y: int, length: int = 160) -> None:
    """The viridis scale of the cells at (x, y): 0 to 1 of a true class's samples, and grey's meaning."""
    ramp = cv2.applyColorMap(np.linspace(0, 255, length).astype(np.uint8)[None, :], cv2.COLORMAP_VIRIDIS)
    image[y:y + 12, x:x + length] = np.repeat(ramp, 12, 0)
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    cv2.putText(image, "0", (x - 2, y + 26), font, 0.35, black, 1, cv2.LINE_AA)
    cv2.putText(image, "1", (x + length - 4, y + 26), font, 0.35, black, 1, cv2.LINE_AA)
    cv2.putText(image, "share of the row's samples", (x + length + 8, y + 10), font, 0.35, black, 1,
                cv2.LINE_AA)
    image[y + 18:y + 30, x + length + 8:x + length + 20] = 200
    cv2.putText(image, "no sample", (x + length + 24, y + 28), font, 0.35, black, 1, cv2.LINE_AA)


def write_report(report: dict, conf: np.ndarray, class_names: list[str] | tuple[str, ...], out_dir: Path,
                 title: str = "") -> tuple[Path, Path]:
    """Write out_dir/confusion.png, then out_dir/metrics.json, each whole; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, png = out_dir / METRICS_FILE, out_dir / CONFUSION_FILE
    shown = np.flatnonzero(conf.sum(axis=0) + conf.sum(axis=1))  # classes with a sample or a prediction
    names, numbers = list(class_names), None
    if 0 < len(shown) < len(class_names):  # e.g. a store of a few classes: leave out the empty rest
        conf, names, numbers = conf[np.ix_(shown, shown)], [names[i] for i in shown], (shown + 1).tolist()
    write_image(png, draw_confusion(conf, names, title, numbers))
    atomic_write_text(metrics, json.dumps(report, indent=1) + "\n")
    return metrics, png


def write_evaluation(out_dir: Path, report: dict, scores: Scores, title: str = "") -> None:
    """An evaluation's files in out_dir: scores.npz, confusion.png and, last, metrics.json (`report`).
    A metrics.json already there is first cut to its `kind` alone, so a write killed half-way leaves no
    numbers beside files they were not computed from (`summary` lists such a folder as unfinished)."""
    out_dir = Path(out_dir)
    if (out_dir / METRICS_FILE).is_file():
        atomic_write_text(out_dir / METRICS_FILE, json.dumps({"kind": report.get("kind")}) + "\n")
    labels = torch.from_numpy(scores.labels)
    conf = confusion_matrix(torch.from_numpy(scores.logits).argmax(1), labels, len(scores.class_names))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_scores(out_dir / SCORES_FILE, scores)
    write_report(report, conf, scores.class_names, out_dir, title)


def _result_kind(metrics: Path) -> str | None:
    try:
        kind = json.loads(metrics.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in RESULT_KINDS else None


def _ours(name: str) -> bool:
    """A result file, or the temporary one a killed write of it left (`.<name>.<hex>.partial`)."""
    return name in RESULT_FILES or (name.endswith(PARTIAL_SUFFIX)
                                    and any(name.startswith(f".{f}.") for f in RESULT_FILES))


def check_result_folder(out: Path) -> None:
    """ConfigError, one line naming `out` and what is there, unless `out` may take an evaluation's files:
    it does not exist, is empty, or holds only an earlier eval or ensemble result (RESULT_FILES, its
    metrics.json of a RESULT_KINDS kind); what a killed write left there is removed. Nothing else is
    touched."""
    out = Path(out)
    if not out.is_dir():
        if out.exists() or out.is_symlink():
            raise ConfigError(f"--out {out} is a file, not a folder")
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if is_store(out) or "zarr.json" in entries:
        what = "an ntu-prep store" if is_store(out) else "a zarr store (zarr.json)"
        raise ConfigError(f"--out {out} is {what}; write the result into a folder of its own (nothing was "
                          "changed)")
    run = [name for name in RUN_FILES if name in entries]
    if run:
        raise ConfigError(f"--out {out} holds a training run ({', '.join(run)}): its metrics.json, "
                          "scores.npz and confusion.png are the run's own; choose another folder, e.g. "
                          f"{out / 'eval'} (nothing was changed)")
    others = [name for name in entries if not _ours(name)]
    if others or _result_kind(out / METRICS_FILE) is None:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "") if others else \
            f"{METRICS_FILE} of no eval or ensemble"
        raise ConfigError(f"--out {out} holds files that are not an earlier eval or ensemble result "
                          f"({shown}); choose a new or empty folder (nothing was changed)")
    remove_partials(out)
