"""Evaluation: predictions over a split, top-1/top-5 and per-class accuracy, a confusion-matrix PNG.

    logits, positions = predict(net, test_data, batch_size=32)         # this process's share
    logits, positions = gather_predictions(logits, positions)           # every process's, in order
    report = classification_report(logits, labels, class_names)         # {"top1", "top5", "per_class", ...}
    write_report(report, confusion_matrix(logits.argmax(1), labels, K), class_names, Path("run/"))
    # -> run/metrics.json and run/confusion.png

`top1` and `top5` are fractions in [0, 1]; `per_class` maps each class name to its accuracy (None where
the split has no sample of it) and its sample count. The PNG is drawn with OpenCV: rows are the true
classes, columns the predicted ones, each row normalised by its sample count.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from model.data import SplitData


@torch.no_grad()
def predict(net: nn.Module, data: SplitData, batch_size: int, bf16: bool = False) -> tuple[Tensor, Tensor]:
    """Logits (n_local, K) float32 on the CPU and split positions (n_local,) of this process's share
    of `data` (every sample once, centre crops, no flip), with `net` in eval mode (restored after)."""
    was_training = net.training
    net.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and data.device.type == "cuda" \
        else nullcontext()
    logits, positions = [], []
    try:
        for batch in data.batches(epoch=0, batch_size=batch_size, train=False):
            rgb = batch.rgb
            if rgb is not None and data.device.type == "cuda":
                rgb = rgb.contiguous(memory_format=torch.channels_last_3d)
            with autocast:
                out = net(rgb, batch.skeleton, batch.motion)
            logits.append(out["logits"].float().cpu())
            positions.append(batch.positions.cpu())
    finally:
        net.train(was_training)
    if not logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(logits), torch.cat(positions)


def gather_predictions(logits: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """Every process's (logits (n_r, K), positions (n_r,)) concatenated in rank order; unchanged
    without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return logits, positions
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (logits.numpy(), positions.numpy()))
    parts = [(torch.from_numpy(lg), torch.from_numpy(p)) for lg, p in parts if len(p)]
    return torch.cat([lg for lg, _ in parts]), torch.cat([p for _, p in parts])


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


def draw_confusion(conf: np.ndarray, class_names: list[str] | tuple[str, ...], title: str = "",
                   numbers: list[int] | None = None) -> np.ndarray:
    """A BGR image (H, W, 3) uint8 of the row-normalised confusion matrix `conf` (K, K): viridis
    cells, rows without samples grey, the diagonal outlined; class labels where the cells are large
    enough to read, else every tenth index. numbers: the 1-based class number of each row (default 1..K)."""
    k = conf.shape[0]
    numbers = list(range(1, k + 1)) if numbers is None else list(numbers)
    cell = int(np.clip(1000 // max(k, 1), 4, 40))
    labelled = cell >= 12
    left = 260 if labelled else 40
    top = 50
    size = cell * k
    image = np.full((top + size + 20, left + size + 20, 3), 255, np.uint8)
    rows = conf.sum(axis=1, keepdims=True)
    share = np.divide(conf, rows, out=np.zeros(conf.shape, np.float64), where=rows > 0)
    colours = cv2.applyColorMap((share * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)  # (K, K, 3)
    colours[rows[:, 0] == 0] = 200
    image[top:top + size, left:left + size] = np.repeat(np.repeat(colours, cell, 0), cell, 1)
    if cell >= 8:
        for i in range(k):
            cv2.rectangle(image, (left + i * cell, top + i * cell), (left + (i + 1) * cell - 1,
                          top + (i + 1) * cell - 1), (0, 0, 255), 1)
    font, scale, black = cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0)
    cv2.putText(image, title, (10, 20), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(image, "predicted ->", (left, top - 8), font, scale, black, 1, cv2.LINE_AA)
    for i, name in enumerate(class_names):
        if labelled:
            text = f"{numbers[i]:3d} {name}"[:38]
            cv2.putText(image, text, (4, top + i * cell + cell // 2 + 4), font, scale, black, 1, cv2.LINE_AA)
            cv2.putText(image, str(numbers[i]), (left + i * cell + 1, top - 22 - 10 * (i % 2)), font, 0.3,
                        black, 1, cv2.LINE_AA)
        elif i % 10 == 0:
            label = str(numbers[i])
            cv2.putText(image, label, (4, top + i * cell + cell), font, scale, black, 1, cv2.LINE_AA)
            cv2.putText(image, label, (left + i * cell, top - 22), font, scale, black, 1, cv2.LINE_AA)
    return image


def write_report(report: dict, conf: np.ndarray, class_names: list[str] | tuple[str, ...], out_dir: Path,
                 title: str = "") -> tuple[Path, Path]:
    """Write out_dir/metrics.json and out_dir/confusion.png, each through a temporary file and
    os.replace (a reader never sees half a file); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, png = out_dir / "metrics.json", out_dir / "confusion.png"
    tmp = metrics.with_name(metrics.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, metrics)
    tmp = png.with_name("confusion.tmp.png")
    shown = np.flatnonzero(conf.sum(axis=0) + conf.sum(axis=1))  # classes with a sample or a prediction
    names, numbers = list(class_names), None
    if 0 < len(shown) < len(class_names):  # e.g. a store of a few classes: leave out the empty rest
        conf, names, numbers = conf[np.ix_(shown, shown)], [names[i] for i in shown], (shown + 1).tolist()
    if not cv2.imwrite(str(tmp), draw_confusion(conf, names, title, numbers)):
        raise OSError(f"{tmp}: OpenCV could not write the confusion matrix")
    os.replace(tmp, png)
    return metrics, png
