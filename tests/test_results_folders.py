"""What `eval --out` and `ensemble --out` may write into, the scores and weights `ensemble` refuses, and
`summary` over runs that have not finished: two short HCN runs on a synthetic skeleton store."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from training import build_store, hcn_config

from cli.train import main
from model.results.scores import Scores, ScoresError, read_scores, write_scores
from model.training.fit import RUN_LOCK, fit
from ntu_pipeline.errors import TrainingError
from ntu_pipeline.store.lock import hold_lock

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest.py: why one thread

EVAL = ["--protocol", "xsub", "--device", "cpu", "--workers", "0", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run "a" (2 epochs) and run "b" (1 epoch, another seed) on 60 samples of 6 classes, and the store."""
    root = tmp_path_factory.mktemp("folders")
    store = build_store(root, samples=60)
    fit(hcn_config(store, root / "a", epochs=2))
    fit(hcn_config(store, root / "b", epochs=1, seed=1, lr=0.004))
    return {"a": root / "a", "b": root / "b", "store": store}


def contents(folder: Path) -> dict[str, str]:
    """Every file under `folder` and the digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def eval_into(runs, out: Path):
    checkpoint = runs["a"] / "best.pt"
    return invoke("eval", "--checkpoint", checkpoint, "--store", runs["store"], "--out", out, *EVAL)


# --- --out: never into a folder that is not an earlier result of ours ----------------------------------

@pytest.mark.parametrize("command", ["eval", "ensemble"])
@pytest.mark.parametrize("what, says", [
    ("a finished run", "holds a training run (config.json, last.pt, best.pt, metrics.jsonl"),
    ("a store", "is an ntu-prep store"),
    ("a user's folder", "holds files that are not an earlier eval or ensemble result (notes.txt)"),
    ("an old result with a user's file", "holds files that are not an earlier eval or ensemble result "
                                         "(notes.txt)"),
    ("a file", "is a file"),
])
def test_out_refuses_whatever_is_not_an_earlier_result(runs, tmp_path, command, what, says):
    """A finished run (its metrics.json, scores.npz and confusion.png are the run's: overwritten, summary
    showed the eval's protocol under the run's name), a store, a user's folder, an earlier result beside
    a user's file, a file: one line, exit 2, and not a byte changed (catches --out written over blindly)."""
    if what == "a finished run":
        out = tmp_path / "run"
        shutil.copytree(runs["b"], out)
    elif what == "a store":
        out = runs["store"]
    elif what == "a file":
        out = tmp_path / "file"
        out.write_text("mine\n")
    else:
        out = tmp_path / "mine"
        if what == "an old result with a user's file":
            assert invoke("ensemble", runs["a"], runs["b"], "--out", out).exit_code == 0
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("mine\n")
    before = contents(out) if out.is_dir() else out.read_bytes()
    if command == "eval":
        result = eval_into(runs, out)
    else:
        result = invoke("ensemble", runs["a"], runs["b"], "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    if what == "a file":  # click's own check of --out (its usage lines, then the error)
        assert lines[-1].endswith(f"'{out}' is a file."), result.output
    else:
        assert len(lines) == 1 and lines[0].startswith(f"Error: --out {out} {says}"), result.output
    assert (contents(out) if out.is_dir() else out.read_bytes()) == before


def test_out_replaces_an_earlier_result_of_its_own(runs, tmp_path):
    """A folder that holds only an earlier eval or ensemble result (marked `kind` in its metrics.json) is
    replaced, by either command, and what a killed write left there is cleared; an ensemble into one of
    its own sources is refused (catches a marker not written, or a replace that leaves old files)."""
    out = tmp_path / "result"
    result = eval_into(runs, out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["kind"] == "eval"
    (out / ".scores.npz.0123456789ab.partial").write_bytes(b"left by a kill")

    result = invoke("ensemble", runs["a"], runs["b"], "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["kind"] == "ensemble"
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json", "scores.npz"]
    a, b = read_scores(runs["a"]), read_scores(runs["b"])
    np.testing.assert_allclose(read_scores(out).logits, a.logits + b.logits, rtol=1e-6)

    result = eval_into(runs, out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["kind"] == "eval"

    before = contents(out)
    result = invoke("ensemble", out, runs["b"], "--out", out)
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    assert "is one of the sources" in result.output and contents(out) == before


def test_a_training_run_is_never_marked_as_a_result(runs):
    """fit's own metrics.json carries no eval/ensemble kind: nothing could take the run for a result."""
    assert json.loads((runs["a"] / "metrics.json").read_text()).get("kind") not in ("eval", "ensemble")


# --- ensemble: labels and weights -----------------------------------------------------------------------

@pytest.mark.parametrize("label", [6, 60, -1])
def test_a_label_outside_the_classes_is_one_line_naming_the_file(runs, tmp_path, label):
    """A scores file whose label is not one of its classes (>= K, or negative): one line naming it, exit 1
    (it was a traceback from the confusion matrix)."""
    a = read_scores(runs["a"])
    k = len(a.class_names)
    labels = a.labels.copy()
    labels[2] = label if label < 0 else k + label - 6
    bad = tmp_path / "bad.npz"
    write_scores(bad, Scores(a.names, labels, a.logits, a.class_names))
    result = invoke("ensemble", bad, bad, "--out", tmp_path / "out")  # alike: only the label is wrong
    assert result.exit_code == 1, result.output
    assert len(result.output.splitlines()) == 1 and result.output.startswith(f"Error: {bad}: "), result.output
    assert "label" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(ScoresError):
        read_scores(bad)


@pytest.mark.parametrize("weights, says", [(["0", "0"], "at least one weight must be > 0"),
                                           (["-1", "1"], "must be >= 0"),
                                           (["1", "-0.5"], "must be >= 0")])
def test_all_zero_and_negative_weights_are_refused(runs, tmp_path, weights, says):
    """`--weights 0 0` fused nothing (top-1 0.000 where either run scores more) and a negative weight
    turned a run's vote around, both silently: now one line, exit 2, nothing written."""
    result = invoke("ensemble", runs["a"], runs["b"], "--weights", *weights, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1 and says in result.output, result.output
    assert not (tmp_path / "out").exists()


# --- summary: unfinished runs, files that exist ---------------------------------------------------------

def unfinished(runs, folder: Path, epochs: int) -> Path:
    """A copy of run a as it is after 1 of `epochs` epochs: no final evaluation yet."""
    shutil.copytree(runs["a"], folder)
    for name in ("metrics.json", "scores.npz", "confusion.png"):
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    if isinstance(config.get("recipe"), dict):  # config.json in parts (TrainConfig.to_dict)
        config["recipe"]["epochs"] = epochs
    else:
        config["epochs"] = epochs
    (folder / "config.json").write_text(json.dumps(config))
    log = (folder / "metrics.jsonl").read_text().splitlines()
    (folder / "metrics.jsonl").write_text(log[0] + "\n")
    return folder


def test_summary_shows_the_finished_runs_and_marks_the_unfinished_ones(runs, tmp_path):
    """One run stopped after epoch 1 of 20, one still running (its lock held): the table keeps every
    finished row and says of the others "stopped after epoch 1/20" / "running (pid N), epoch 2/20", and the
    curves draw them (catches the whole table refused for one unfinished run)."""
    stopped = unfinished(runs, tmp_path / "stopped", 20)
    running = unfinished(runs, tmp_path / "running", 20)
    with hold_lock(running / RUN_LOCK, "fit", "busy", TrainingError):
        result = invoke("summary", runs["a"], stopped, running, runs["b"], "--plot", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert len(rows) == 6 and rows[-1] == f"wrote {tmp_path / 'c.png'}"
    a, s, r, b = rows[1:5]
    top1 = json.loads((runs["a"] / "metrics.json").read_text())["top1"]
    assert f"{top1:7.4f}" in a and str(runs["a"] / "confusion.png") in a
    assert "stopped after epoch 1/20" in s and "running (pid " in r and "), epoch 2/20" in r
    for row in (s, r):
        assert "confusion.png" not in row and row.split()[5:7] == ["-", "-"]
    assert (tmp_path / "c.png").is_file()


def test_summary_lists_only_the_files_that_exist(runs, tmp_path):
    """A result whose confusion.png is gone is listed without it (it was listed all the same)."""
    copy = tmp_path / "b"
    shutil.copytree(runs["b"], copy)
    (copy / "confusion.png").unlink()
    result = invoke("summary", copy)
    assert result.exit_code == 0, result.output
    assert "confusion.png" not in result.stdout.splitlines()[1]
