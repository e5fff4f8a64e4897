"""Late fusion of saved scores: the recipe of CTR-GCN's ensemble.py and PYSKL's multi-stream numbers.

    fused = ensemble([read_scores("runs/hcn"), read_scores("runs/i3d")], weights=[1.0, 1.0])
    classification_report(torch.from_numpy(fused.logits), torch.from_numpy(fused.labels), fused.class_names)

The fused logits are the weighted sum of the sources' logits (weights 1 each by default, not
normalised: an ensemble of a run with itself has twice its logits and exactly its predictions). The
sources are aligned by sample name, so runs evaluated in another order still combine; they must hold
the same samples, the same label for each, and the same classes, or ScoresError says which two differ.
"""

from __future__ import annotations

import numpy as np

from model.scores import Scores, ScoresError


def _where(scores: Scores, k: int) -> str:
    return scores.source or f"scores #{k + 1}"


def ensemble(sources: list[Scores], weights: list[float] | None = None) -> Scores:
    """The weighted sum of `sources`' logits, in the first source's sample order."""
    if not sources:
        raise ScoresError("ensemble needs at least one scores file")
    weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
    if len(weights) != len(sources):
        raise ScoresError(f"{len(weights)} weights for {len(sources)} scores files: give one weight each")
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
