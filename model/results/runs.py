"""Runs read back: the table `ntu-train summary` prints and the training curves it draws.

    runs = [read_run(Path("runs/hcn"), lock=".ntu-train-lock"), read_run(Path("runs/ccdfarm"))]
    for line in format_table(runs): print(line)
    plot_curves(runs, Path("curves.png"))     # train and test loss and top-1 per epoch, one colour a run

A finished run directory holds config.json, metrics.jsonl (one line per epoch) and metrics.json (the
final evaluation); an eval or ensemble directory holds metrics.json alone and is listed without curves.
A run without its final metrics.json is unfinished: listed with its state ("running (pid 12), epoch 4/20"
while a fit holds its lock, else "stopped after epoch 3/20"), no numbers, and its curves so far; a
result whose write was cut short is "unfinished" too. Only files that exist are listed. The figure is
drawn with OpenCV (see the README's Dependencies for why not matplotlib): two panels, loss and top-1
against the epoch, train dashed with hollow markers and test solid with filled ones, a legend of the runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ntu_pipeline.errors import TrainingError
from ntu_pipeline.images import write_image
from ntu_pipeline.store.lock import holder

# BGR, distinguishable and readable on white (Tableau's first colours)
COLOURS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
           (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23))
PANEL_W, PANEL_H, MARGIN = 560, 380, 60


@dataclass(frozen=True)
class RunSummary:
    """One row: `top1`/`top5` None and `state` said ("running ...", "stopped ...") while unfinished;
    `confusion` the confusion.png where it exists."""

    run: Path
    model: str
    protocol: str
    epochs: int
    top1: float | None
    top5: float | None
    clips: int
    history: tuple[dict, ...]  # metrics.jsonl's lines, () for an eval or ensemble directory
    state: str = ""  # "" when finished
    confusion: Path | None = None

    @property
    def finished(self) -> bool:
        return self.top1 is not None


def _setting(config: dict, part: str, name: str, default=None):
    """A run's setting from its config.json: in its part (`TrainConfig.to_dict`: data, network, recipe,
    run), or flat as runs wrote it before the parts (ntu-train/2)."""
    if isinstance(config.get("network"), dict):
        return dict(config.get(part) or {}).get(name, default)
    return config.get(name, default)


def run_model(config: dict, report: dict) -> str:
    """What a run trained: its model, with its input stream where the model takes one of several
    (ctrgcn's four runs: "ctrgcn/bone"), from config.json (else the report's)."""
    model = str(_setting(config, "network", "model", report.get("model", "?")))
    stream = dict(_setting(config, "data", "clip", None) or {}).get("stream") or report.get("stream")
    return f"{model}/{stream}" if model == "ctrgcn" and stream else model


def _unfinished_state(run: Path, config: dict, history: tuple[dict, ...], lock: str | None) -> str:
    """What an unfinished run is doing: "running (pid N), epoch E/T" while a fit holds its lock, else
    "stopped after epoch E/T ..."; an eval or ensemble cut short (no config.json) is "unfinished"."""
    if not config:
        return "unfinished (its write was cut short: run it again)"
    done, total = len(history), int(_setting(config, "recipe", "epochs", 0) or 0)
    held = holder(run / lock) if lock else None
    if held:
        where = f"epoch {done + 1}/{total}" if done < total else "final evaluation"
        return f"running (pid {held.split()[0]}), {where}"
    where = f"after epoch {done}/{total}" if done < total else "before its final evaluation"
    return f"stopped {where} (fit --resume continues it)"


def read_run(run: Path, lock: str | None = None) -> RunSummary:
    """A run (or eval/ensemble) directory's summary, finished or not (`lock`: the name of fit's lock file
    in a run directory, to tell a running run from a stopped one); TrainingError in one line for a
    folder that is neither."""
    run = Path(run)
    metrics, config_file, log = run / "metrics.json", run / "config.json", run / "metrics.jsonl"
    if not metrics.is_file() and not config_file.is_file():
        raise TrainingError(f"{run}: no metrics.json or config.json (not a run, eval or ensemble)")
    try:
        report = json.loads(metrics.read_text()) if metrics.is_file() else {}
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        history = tuple(json.loads(line) for line in log.read_text().splitlines() if line.strip()) \
            if log.is_file() else ()
    except (OSError, ValueError) as err:
        raise TrainingError(f"{run}: unreadable run files ({err})") from err
    if not isinstance(report, dict) or not isinstance(config, dict):
        raise TrainingError(f"{run}: unreadable run files (metrics.json or config.json is not an object)")
    finished = isinstance(report.get("top1"), (int, float))
    confusion = run / "confusion.png"
    return RunSummary(run, run_model(config, report),
                      str(_setting(config, "data", "protocol", report.get("protocol", "?"))),
                      int(_setting(config, "recipe", "epochs", report.get("epoch", 0)) or 0),
                      float(report["top1"]) if finished else None,
                      float(report["top5"]) if finished else None,
                      int(report.get("clips", _setting(config, "run", "test_clips", 1)) or 1), history,
                      "" if finished else _unfinished_state(run, config, history, lock),
                      confusion if confusion.is_file() else None)


def format_table(runs: list[RunSummary]) -> list[str]:
    """A header and one line per run: run, model, protocol, epochs, clips, top-1, top-5, and its
    confusion.png (where it exists) or, unfinished, its state."""
    w = max([len(str(r.run)) for r in runs] + [3])
    m = max([len(r.model) for r in runs] + [10])  # ctrgcn's streams are longer: "ctrgcn/joint_motion"
    lines = [f"{'run':{w}s} {'model':{m}s} {'protocol':8s} {'epochs':>7s} {'clips':>5s} {'top1':>7s} "
             f"{'top5':>7s}  confusion / state"]
    for r in runs:
        epochs = str(r.epochs) if r.epochs else "-"  # an ensemble was not trained
        if r.finished:
            top, last = f"{r.top1:7.4f} {r.top5:7.4f}", str(r.confusion or "-")
        else:
            top, last = f"{'-':>7s} {'-':>7s}", r.state
        lines.append(f"{str(r.run):{w}s} {r.model:{m}s} {r.protocol:8s} {epochs:>7s} {r.clips:5d} {top}  "
                     f"{last}")
    return lines


def _curve(image: np.ndarray, points: list[tuple[int, int]], colour, dash: bool) -> None:
    """One run's curve through `points` (pixels): dashed with hollow markers (train) or solid with filled
    ones (test)."""
    for a, b in zip(points[:-1], points[1:], strict=True):
        if not dash:
            cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
            continue
        length = max(int(np.hypot(b[0] - a[0], b[1] - a[1])), 1)
        for start in range(0, length, 10):
            t0, t1 = start / length, min(start + 6, length) / length
            p0 = (int(a[0] + t0 * (b[0] - a[0])), int(a[1] + t0 * (b[1] - a[1])))
            p1 = (int(a[0] + t1 * (b[0] - a[0])), int(a[1] + t1 * (b[1] - a[1])))
            cv2.line(image, p0, p1, colour, 2, cv2.LINE_AA)
    for p in points:  # a marker at each epoch: a one-epoch run is a point, train hollow, test filled
        cv2.circle(image, p, 4, colour, 1 if dash else -1, cv2.LINE_AA)


def _drawn(line: dict, key: str) -> bool:
    """Whether a metrics.jsonl line has a finite `key` (a NaN loss is not drawn)."""
    return isinstance(line.get(key), (int, float)) and bool(np.isfinite(line[key]))


def _ticks(lo: float, hi: float) -> list[float]:
    """About five round values (steps of 1, 2 or 5 times a power of ten) from below lo to above hi."""
    raw = (hi - lo) / 5
    power = 10 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = np.floor(lo / step + 1e-9), np.ceil(hi / step - 1e-9)
    return [float(k * step) for k in np.arange(first, last + 1)]


def _panel(runs: list[RunSummary], keys: tuple[str, str], title: str, fixed: tuple[float, float] | None):
    image = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    values = [line[k] for r in runs for line in r.history for k in keys if _drawn(line, k)]
    epochs = [line["epoch"] for r in runs for line in r.history] or [1]
    lo, hi = fixed or (min(values, default=0.0), max(values, default=1.0))
    hi = hi if hi > lo else lo + 1
    margin = 0.0 if fixed else 0.03 * (hi - lo)  # no marker on the frame
    ticks = _ticks(max(lo - margin, 0.0) if lo >= 0 else lo - margin, hi + margin)  # a loss is never < 0
    lo, hi = ticks[0], ticks[-1]
    decimals = max(0, int(np.ceil(-np.log10(ticks[1] - ticks[0]) - 1e-9)))
    e_lo, e_hi = min(epochs), max(epochs)
    pad = 0.5 if e_hi == e_lo else 0.03 * (e_hi - e_lo)  # one epoch in the middle; no marker on the frame
    x0, y0, x1, y1 = MARGIN, 30, PANEL_W - 20, PANEL_H - MARGIN

    def at(epoch: float, value: float) -> tuple[int, int]:
        return (int(x0 + (epoch - e_lo + pad) / (e_hi - e_lo + 2 * pad) * (x1 - x0)),
                int(y1 - (value - lo) / (hi - lo) * (y1 - y0)))

    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (225, 225, 225)
    for v in ticks:
        y = at(e_lo, v)[1]
        cv2.line(image, (x0, y), (x1, y), grey, 1)
        cv2.putText(image, f"{v:.{decimals}f}", (4, y + 4), font, 0.4, black, 1, cv2.LINE_AA)
    for e in sorted(set(np.linspace(e_lo, e_hi, min(e_hi - e_lo + 1, 6)).round().astype(int).tolist())):
        x = at(e, lo)[0]
        cv2.line(image, (x, y1), (x, y1 + 4), black, 1)
        cv2.putText(image, str(e), (x - 6, y1 + 18), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, (x0, y0), (x1, y1), black, 1)
    cv2.putText(image, title, (x0, 20), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(image, "epoch", ((x0 + x1) // 2 - 20, PANEL_H - 12), font, 0.45, black, 1, cv2.LINE_AA)
    for i in sorted(range(len(runs)), key=lambda i: -len(runs[i].history)):  # shorter runs drawn on top
        r = runs[i]
        for key, dash in zip(keys, (True, False), strict=True):
            points = [at(line["epoch"], line[key]) for line in r.history if _drawn(line, key)]
            if points:
                _curve(image, points, COLOURS[i % len(COLOURS)], dash)
    return image


def plot_curves(runs: list[RunSummary], path: Path) -> None:
    """One PNG: loss and top-1 panels, each run a colour, train dashed and test solid, a legend. Eval
    and ensemble directories (no metrics.jsonl) are left out; TrainingError when no run is left."""
    drawn = [r for r in runs if r.history]
    if not drawn:
        raise TrainingError("no run with a metrics.jsonl to draw (eval and ensemble directories have none)")
    panels = np.hstack([_panel(drawn, ("train_loss", "test_loss"), "loss (cross-entropy of the prediction)",
                               None), _panel(drawn, ("train_top1", "test_top1"), "top-1", (0.0, 1.0))])
    legend = np.full((24 * (len(drawn) + 1) + 10, panels.shape[1], 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(legend, "train: dashed, hollow markers; test: solid, filled markers", (MARGIN, 20), font,
                0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, r in enumerate(drawn):
        y = 24 * (i + 2)
        colour = COLOURS[i % len(COLOURS)]
        cv2.line(legend, (MARGIN, y - 5), (MARGIN + 30, y - 5), colour, 3)
        said = f"test top-1 {r.top1:.3f}" if r.finished else r.state
        cv2.putText(legend, f"{r.run} ({r.model}, {said})", (MARGIN + 40, y), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    write_image(Path(path), np.vstack([panels, legend]))
