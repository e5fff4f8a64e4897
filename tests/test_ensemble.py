"""`ntu-train ensemble` (late fusion of saved scores) and `ntu-train summary --plot` over real runs: two
short HCN runs on a synthetic skeleton store."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from training import build_store, hcn_config

from cli.train import main
from model.results.runs import COLOURS
from model.results.scores import Scores, read_scores, write_scores
from model.training.fit import fit

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest.py: why one thread


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run "a" (2 epochs) and run "b" (1 epoch, another seed) on 60 samples of 6 classes."""
    root = tmp_path_factory.mktemp("ensemble")
    store = build_store(root, samples=60)
    fit(hcn_config(store, root / "a", epochs=2))
    fit(hcn_config(store, root / "b", epochs=1, seed=1, lr=0.004))
    return {"a": root / "a", "b": root / "b"}


def test_an_ensemble_of_a_run_with_itself_is_the_run(runs, tmp_path):
    """Twice the run's logits, the same predictions, top-1/top-5 and per-class numbers, and the files of
    an evaluation (catches weights normalised wrongly, samples misaligned, a missing output)."""
    out = tmp_path / "self"
    result = invoke("ensemble", runs["a"], runs["a"], "--out", out)
    assert result.exit_code == 0, result.output
    run = json.loads((runs["a"] / "metrics.json").read_text())
    assert result.stdout.startswith(f"ensemble of 2: top1 {run['top1']:.4f} top5 {run['top5']:.4f}")
    fused, alone = read_scores(out), read_scores(runs["a"])
    assert np.array_equal(fused.names, alone.names) and np.array_equal(fused.labels, alone.labels)
    assert np.array_equal(fused.logits, 2 * alone.logits)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["top1"], metrics["top5"], metrics["per_class"]) == (run["top1"], run["top5"],
                                                                         run["per_class"])
    assert metrics["model"] == "ensemble" and metrics["weights"] == [1.0, 1.0]
    assert metrics["protocol"] == "xsub"
    image = cv2.imread(str(out / "confusion.png"))
    assert image is not None and image.shape[0] > 200


def test_weights_and_sample_order(runs, tmp_path):
    """`--weights 1 0` is run a alone; `--weights 0.5,2` the weighted sum; a scores file in another
    sample order is aligned by name (catches weights ignored or swapped, rows added by position)."""
    a, b = read_scores(runs["a"]), read_scores(runs["b"])
    result = invoke("ensemble", runs["a"], runs["b"], "--weights", "1", "0", "--out", tmp_path / "a_only")
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_scores(tmp_path / "a_only").logits, a.logits)
    assert json.loads((tmp_path / "a_only" / "metrics.json").read_text())["weights"] == [1.0, 0.0]

    result = invoke("ensemble", "--weights", "0.5,2", runs["a"], runs["b"], "--out", tmp_path / "mix")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_scores(tmp_path / "mix").logits, 0.5 * a.logits + 2 * b.logits, rtol=1e-6)

    backwards = slice(None, None, -1)
    write_scores(tmp_path / "reversed.npz", Scores(b.names[backwards], b.labels[backwards],
                                                  b.logits[backwards], b.class_names))
    result = invoke("ensemble", runs["a"], tmp_path / "reversed.npz", "--out", tmp_path / "aligned")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_scores(tmp_path / "aligned").logits, a.logits + b.logits, rtol=1e-6)


def _bad(kind: str, a: Scores, folder: Path) -> Path:
    path = folder / f"{kind}.npz"
    if kind == "fewer samples":
        write_scores(path, Scores(a.names[1:], a.labels[1:], a.logits[1:], a.class_names))
    elif kind == "other classes":
        write_scores(path, Scores(a.names, a.labels % 10, a.logits[:, :10], a.class_names[:10]))
    elif kind == "another label":
        labels = a.labels.copy()
        labels[3] = (labels[3] + 1) % len(a.class_names)
        write_scores(path, Scores(a.names, labels, a.logits, a.class_names))
    else:
        path.write_text('{"top1": 0.5}\n')  # a metrics.json, not scores
    return path


@pytest.mark.parametrize("kind, says", [
    ("fewer samples", "hold different samples (1 in one only"),
    ("other classes", "has 10 classes"),
    ("another label", "different labels"),
    ("not a scores file", "not a scores file"),
])
def test_scores_that_do_not_go_together_are_one_line(runs, tmp_path, kind, says):
    """Catches a fusion over different samples or classes that goes ahead (or a traceback)."""
    bad = _bad(kind, read_scores(runs["a"]), tmp_path)
    result = invoke("ensemble", runs["a"], bad, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"Error: {bad}") and says in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("weights, says", [(["1", "2", "3"], "3 weights for 2 scores files"),
                                           (["one"], "--weights 'one': give numbers")])
def test_weights_that_do_not_fit_are_one_line(runs, weights, says):
    """Options that cannot work: exit 2, one line (catches weights silently cut or padded)."""
    result = invoke("ensemble", runs["a"], runs["b"], "--weights", *weights)
    assert result.exit_code == 2 and result.output.splitlines() == [result.output.strip()], result.output
    assert says in result.output


def test_summary_plots_every_run(runs, tmp_path):
    """`summary --plot` writes a PNG holding each run's colour in the panels (catches a run left undrawn,
    an empty figure) and lists an ensemble directory in the table, not in the figure; with nothing to
    draw it says so in one line."""
    invoke("ensemble", runs["a"], runs["b"], "--out", tmp_path / "late")
    png = tmp_path / "curves.png"
    result = invoke("summary", runs["a"], runs["b"], tmp_path / "late", "--plot", png)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()[1:4]
    assert [row.split()[1] for row in rows] == ["hcn", "hcn", "ensemble"]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imread(str(png))
    panels = image[:380]  # model/results/runs.py: PANEL_H, above the legend
    for colour, drawn in zip(COLOURS[:3], (True, True, False), strict=True):
        pixels = int(np.all(panels == colour, axis=2).sum())
        assert (pixels > 50) == drawn, (colour, pixels)

    result = invoke("summary", tmp_path / "late", "--plot", tmp_path / "none.png")
    assert result.exit_code == 1 and result.output.startswith("Error: no run with a metrics.jsonl")
    assert len(result.output.splitlines()) == 1
