"""Late fusion of saved scores: the recipe of CTR-GCN's ensemble.py and PYSKL's multi-stream numbers.

    report = ensemble_report(["runs/hcn", "runs/i3d"], weights=[1.0, 0.5], out_dir=Path("runs/late"))
    # -> runs/late/metrics.json, confusion.png, scores.npz, as an evaluation writes them
    fused = ensemble([read_scores("runs/hcn"), read_scores("runs/i3d")])   # the fused Scores alone

The fused logits are the weighted sum of the sources' logits (weights 1 each by default, not
normalised: an ensemble of a run with itself has twice its logits and exactly its predictions). The
sources are aligned by sample name, so runs evaluated in another order still combine; they must hold
the same samples, the same label for each, and the same classes, or ScoresError says which two differ.
Weights are one finite number >= 0 per source, at least one of them > 0 (0 leaves a source out; all
zero fuses nothing and a negative weight turns a source's vote around): any other is a ConfigError.
The report's metrics.json records `kind: "ensemble"`, what lets a later `--out` replace it
(`reports.check_result_folder`); `--out` is never one of the sources.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from model.results.reports import check_result_folder, classification_report, write_evaluation
from model.results.scores import Scores, ScoresError, read_scores
from ntu_pipeline.errors import ConfigError


def _where(scores: Scores, k: int) -> str:
    return scores.source or f"scores #{k + 1}"


def ensemble(sources: list[Scores], weights: list[float] | None = None) -> Scores:
    """The weighted sum of `sources`' logits, in the first source's sample order."""
    if not sources:
        raise ScoresError("ensemble needs at least one scores file")
    weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
    if len(weights) != len(sources):
        raise ConfigError(f"{len(weights)} weights for {len(sources)} scores files: give one weight each")
    if not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"weights {weights}: every weight must be a finite number")
    if any(w < 0 for w in weights):
        raise ConfigError(f"weights {weights}: every weight must be >= 0 (a negative one turns a source's "
                          "vote around; 0 leaves it out)")
    if not any(w > 0 for w in weights):
        raise ConfigError(f"weights {weights}: at least one weight must be > 0 (all zero fuses nothing)")
    first = sources[0]
    order = {name: i for i, name in enumerate(first.names)}
    total = np.zeros_like(first.logits, dtype=np.float64)
    for k, (scores, weight) in enumerate(zip(sources, weights, strict=True)):
        a, b = _where(first, 0), _where(scores, k)
        if scores.class_names != first.class_names:
            raise ScoresError(f"{b} has {len(scores.class_names)} classes, {a} {len(first.class_names)} "
                              "(or other class names): they score different classes")
        if set(scores.names) != set(order) or len(scores) != len(first):
            only = sorted(set(scores.names) ^ set(order))
            raise ScoresError(f"{b} and {a} hold different samples ({len(only)} in one only, e.g. "
                              f"{only[0] if only else 'a repeated name'})")
        rows = np.array([order[name] for name in scores.names])
        if not np.array_equal(first.labels[rows], scores.labels):
            bad = int(np.flatnonzero(first.labels[rows] != scores.labels)[0])
            raise ScoresError(f"{b} and {a} give {scores.names[bad]} different labels")
        total[rows] += weight * scores.logits
    return Scores(first.names, first.labels, total.astype(np.float32), first.class_names)


def _shared_protocol(sources: list[Scores]) -> str | None:
    """The protocol that the metrics.json beside every source names, where they all name the same one."""
    protocols = set()
    for scores in sources:
        metrics = Path(scores.source).parent / "metrics.json"
        try:
            protocols.add(json.loads(metrics.read_text()).get("protocol"))
        except (OSError, ValueError, AttributeError):
            return None
    return protocols.pop() if len(protocols) == 1 else None


def ensemble_report(sources: list[str | Path], weights: list[float] | None = None,
                    out_dir: str | Path | None = None) -> dict:
    """The classification report of the fused scores of `sources` (run or eval directories, or their
    scores.npz), with model "ensemble", the sources, the weights and the protocol (where the sources'
    metrics.json agree on one); written as out_dir/metrics.json, confusion.png and scores.npz when
    out_dir is given. ScoresError, in one line, where the sources do not go together; ConfigError where
    out_dir may not take the result (`check_result_folder`) or is one of the sources."""
    if out_dir is not None:
        check_result_folder(Path(out_dir))
        target = Path(out_dir).resolve()
        for source in sources:
            path = Path(source).resolve()
            if (path.parent if path.is_file() else path) == target:
                raise ConfigError(f"--out {out_dir} is one of the sources ({source}): the result would "
                                  "replace what it was fused from; choose another folder")
    read = [read_scores(source) for source in sources]
    fused = ensemble(read, weights)
    report = classification_report(torch.from_numpy(fused.logits), torch.from_numpy(fused.labels),
                                   fused.class_names)
    report.update({"kind": "ensemble", "model": "ensemble", "sources": [str(s) for s in sources],
                   "weights": [float(w) for w in weights] if weights is not None else [1.0] * len(read)})
    protocol = _shared_protocol(read)
    if protocol is not None:
        report["protocol"] = protocol
    if out_dir is not None:
        write_evaluation(Path(out_dir), report, fused, f"ensemble of {len(read)}"
                         + (f" {protocol}" if protocol else "") + f" top1 {report['top1']:.4f}")
    return report
