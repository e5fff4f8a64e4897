"""The multi-clip test (`eval --clips N`, `fit --test-clips N`), the scores every evaluation saves, the
test samples an evaluation leaves out, the store a checkpoint is evaluated on, and eval's progress bar.

The stores are real pipeline output of 16 synthetic recordings with videos: 16 stored RGB frames (a
16-frame model takes them whole: N clips are N spatial views; an 8-frame model takes N temporal clips)
and `--frames all` (N temporal clips by window); the runs are real one-epoch `ntu-train fit` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.train import main
from model.data.split import ClipSpec, SplitData, read_split
from model.results.scores import read_scores
from model.training.checkpoint import load_checkpoint
from model.training.evaluate import evaluate_split, evaluation_config, trained_network
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store, read_strings
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus

REPO = Path(__file__).resolve().parent.parent
FIT = ["--protocol", "xsub", "--model", "hcn", "--epochs", "1", "--batch-size", "4", "--frames", "16",
       "--device", "cpu", "--workers", "0", "--warmup-epochs", "0", "--quiet"]
EVAL = ["--protocol", "xsub", "--device", "cpu", "--workers", "0", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest.py: why one thread


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _store(raw: Path, out: Path, rgb_frames: int | None) -> Path:
    extract(ExtractConfig(skeletons=raw, videos=raw, out=out, dataset="ntu60",
                          rgb_frames=rgb_frames, rgb_size=64, progress=False))
    make_split(open_store(out, mode="r+"), "xsub")
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """16 recordings of 2 classes as stores of 16 stored RGB frames ("whole") and of every frame ("all"),
    and "lacking": 16 frames, one test sample's skeleton file deleted before extract."""
    root = tmp_path_factory.mktemp("clips")
    write_corpus(root / "raw", 16, 2, seed=3, videos=True)
    whole = _store(root / "raw", root / "whole.zarr", 16)
    test = read_split(whole, "xsub", "test")
    gone = read_strings(open_store(whole)["samples/name"])[test.indices[0]]
    lacking = root / "lacking"  # the sample stays in the store through its video
    for path in (root / "raw").rglob("*"):
        if path.is_file() and path.name != f"{gone}.skeleton":
            (lacking / path.parent.name).mkdir(parents=True, exist_ok=True)
            (lacking / path.parent.name / path.name).symlink_to(path)
    return {"whole": whole, "all": _store(root / "raw", root / "all.zarr", None),
            "lacking": _store(lacking, root / "lacking.zarr", 16)}


@pytest.fixture(scope="module")
def hcn_run(stores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clips_run") / "hcn"
    result = invoke("fit", "--store", stores["whole"], "--out", out, *FIT)
    assert result.exit_code == 0, result.output
    return out


# --- which clips: every kind of model, rerun, and two processes ---------------------------------------

CASES = {  # name: (store, what the model takes, clips, whether RGB clips are views of the same frames)
    "skeleton: segment samplings": ("whole", ClipSpec(frames=16, skeleton=True, rgb=False), 10, None),
    "rgb of --frames all: temporal clips": ("all", ClipSpec(frames=16, rgb=True, crop=56), 4, False),
    "rgb of 16 stored, 8 taken: temporal clips": ("whole", ClipSpec(frames=8, rgb=True, crop=56), 4, False),
    "rgb of 16 stored, 16 taken: spatial views": ("whole", ClipSpec(frames=16, rgb=True, crop=56), 4, True),
}


def clip_inputs(data: SplitData, clip: int, clips: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model is given for test clip `clip` of `clips` of this process's share: every batch's
    skeleton and RGB inputs flattened per sample (n, -1), and their split positions (n,)."""
    rows, positions = [], []
    for batch in data.batches(0, 3, train=False, clip=clip, clips=clips):
        parts = [t.flatten(1) for t in (batch.skeleton, batch.rgb) if t is not None]
        rows.append(torch.cat(parts, 1))
        positions.append(batch.positions)
    return torch.cat(rows), torch.cat(positions)


@pytest.mark.parametrize("case", list(CASES))
def test_the_clips_differ_and_are_the_same_every_time_and_on_any_process_count(stores, case):
    """Clip k of N differs from the one-clip test and from the other clips (catches N copies of one clip,
    e.g. views on a store where temporal clips were due, or the reverse), is the same from a new
    SplitData (a fixed seed, not the global RNG) and is the same cut between two processes (catches a
    clip that depends on the rank or the process's share)."""
    store, spec, clips, views = CASES[case]
    info = read_split(stores[store], "xsub", "test", spec.rgb, spec.skeleton)
    data = SplitData(info, spec, "cpu")
    if views is not None:  # RGB: other stored frames a clip, or the same frames seen through other crops
        same = [np.array_equal(data.rgb_frames(None, k, clips), data.rgb_frames(None)) for k in range(clips)]
        assert same == [views] * clips
    one, positions = clip_inputs(data, 0, 1)
    assert positions.tolist() == list(range(len(info)))
    each = [clip_inputs(data, k, clips)[0] for k in range(clips)]
    for k, inputs in enumerate(each):
        assert inputs.shape == one.shape
        assert not torch.equal(inputs, one), f"clip {k} of {clips} is the one-clip test"
        assert not torch.equal(inputs, each[(k + 1) % clips]), f"clips {k} and {(k + 1) % clips} are equal"
    again = SplitData(info, spec, "cpu")
    assert torch.equal(clip_inputs(again, clips - 1, clips)[0], each[-1])
    shares = [clip_inputs(SplitData(info, spec, "cpu", rank=r, world=2), clips - 1, clips) for r in (0, 1)]
    assert torch.cat([p for _, p in shares]).tolist() == list(range(len(info)))
    assert torch.equal(torch.cat([x for x, _ in shares]), each[-1])


def test_the_logits_of_the_clips_are_averaged(hcn_run, stores):
    """evaluate_split with 3 clips gives the mean of the three clips' logits, in split order with the
    split's labels (catches an average of softmax, one clip taken N times, or a reordering)."""
    path = hcn_run / "last.pt"
    saved = load_checkpoint(path)
    config = evaluation_config(saved, "cpu", 0)
    net, runtime = trained_network(saved, path, config)
    info = read_split(stores["whole"], "xsub", "test")
    data = SplitData(info, config.clip_spec(), "cpu", config.seed)
    logits, labels = evaluate_split(net, data, 5, runtime, clips=3)
    net.eval()
    with torch.no_grad():
        each = [torch.cat([runtime.forward(net, b.rgb, b.skeleton, b.motion)["logits"]
                           for b in data.batches(0, 5, train=False, clip=k, clips=3)]) for k in range(3)]
    torch.testing.assert_close(logits, torch.stack(each).mean(0), atol=1e-6, rtol=0)
    assert torch.equal(labels, torch.from_numpy(info.labels))
    assert (each[0] - each[1]).abs().max() > 1e-4  # the clips differ: the mean is not any one of them


# --- the CLI: eval --clips, fit --test-clips, scores.npz ------------------------------------------------

def test_eval_clips_are_recorded_saved_and_repeatable(hcn_run, stores, tmp_path):
    """`eval --clips 10` differs from `--clips 1`, is equal on a rerun, records `clips` in metrics.json,
    and saves scores.npz: the split's sample names in split order, int64 labels, float32 (N, K) logits
    (catches --clips ignored, a clip drawn from the global RNG, a scores file missing or misaligned)."""
    store = stores["whole"]
    for name, clips in (("one", 1), ("ten", 10), ("ten_again", 10)):
        result = invoke("eval", "--checkpoint", hcn_run / "last.pt", "--store", store, "--clips", clips,
                        "--out", tmp_path / name, *EVAL)
        assert result.exit_code == 0, result.output
        assert f"{clips} clip" in result.stdout
        assert json.loads((tmp_path / name / "metrics.json").read_text())["clips"] == clips
    one, ten, again = (read_scores(tmp_path / n) for n in ("one", "ten", "ten_again"))
    assert np.abs(ten.logits - one.logits).max() > 1e-4
    assert np.array_equal(ten.logits, again.logits)
    info = read_split(store, "xsub", "test")
    names = read_strings(open_store(store)["samples/name"])
    with np.load(tmp_path / "ten" / "scores.npz") as raw:
        assert raw["name"].tolist() == [names[i] for i in info.indices]
        assert raw["label"].dtype == np.int64 and raw["label"].tolist() == info.labels.tolist()
        assert raw["logits"].dtype == np.float32 and raw["logits"].shape == (len(info), 60)
    metrics = json.loads((tmp_path / "ten" / "metrics.json").read_text())
    top1 = float((ten.logits.argmax(1) == ten.labels).mean())
    assert metrics["top1"] == pytest.approx(top1)


def test_fit_test_clips_apply_to_the_final_evaluation(stores, tmp_path):
    """`fit --test-clips 3` writes the scores `eval --clips 3` gives its last.pt, and records clips 3
    (catches a final evaluation that ignores --test-clips)."""
    run = tmp_path / "run"
    result = invoke("fit", "--store", stores["whole"], "--out", run, "--test-clips", "3", *FIT)
    assert result.exit_code == 0, result.output
    assert "3 clips" in result.stdout
    assert json.loads((run / "metrics.json").read_text())["clips"] == 3
    result = invoke("eval", "--checkpoint", run / "last.pt", "--store", stores["whole"], "--clips", "3",
                    "--out", tmp_path / "eval", *EVAL)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_scores(run).logits, read_scores(tmp_path / "eval").logits, atol=1e-5)


@pytest.mark.slow
def test_two_processes_evaluate_ten_clips_as_one(hcn_run, stores, tmp_path):
    """Two gloo processes under torchrun (fit's evaluation path: each its share, gathered) give the
    10-clip logits of one process (catches shares dropped, repeated or out of order, and clips that
    depend on the process)."""
    script = tmp_path / "eval_two.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import torch.distributed as dist
        from pathlib import Path
        from model.training.checkpoint import load_checkpoint
        from model.data.split import SplitData, read_split
        from model.training.evaluate import evaluate_split, evaluation_config, trained_network
        dist.init_process_group("gloo")
        path, store, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        saved = load_checkpoint(path)
        config = evaluation_config(saved, "cpu", 0)
        net, runtime = trained_network(saved, path, config)
        data = SplitData(read_split(store, "xsub", "test"), config.clip_spec(), "cpu", config.seed,
                         rank=dist.get_rank(), world=dist.get_world_size())
        logits, labels = evaluate_split(net, data, 2, runtime, clips=10)
        if dist.get_rank() == 0:
            np.save(out, logits.numpy())
        dist.destroy_process_group()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          "2", str(script), str(hcn_run / "last.pt"), str(stores["whole"]),
                          str(tmp_path / "two.npy")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = invoke("eval", "--checkpoint", hcn_run / "last.pt", "--store", stores["whole"], "--clips", "10",
                    "--out", tmp_path / "one", *EVAL)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), read_scores(tmp_path / "one").logits, atol=1e-5)


# --- the test samples left out -----------------------------------------------------------------------

def test_eval_and_fit_say_which_test_samples_they_left_out(hcn_run, stores, tmp_path):
    """A test sample whose skeleton file was deleted before extract: hcn's eval prints one line saying so
    and both eval and fit record it in metrics.json as `left_out` (catches numbers over a smaller test
    split with nothing to say so); a store without one records {} and prints nothing."""
    lacking, whole = stores["lacking"], stores["whole"]
    result = invoke("eval", "--checkpoint", hcn_run / "last.pt", "--store", lacking, "--out",
                    tmp_path / "eval", *EVAL)
    assert result.exit_code == 0, result.output
    note, left_out = result.stderr.splitlines()  # the note: another store (test_eval_says_which_store...)
    assert note.startswith(f"note: {hcn_run / 'last.pt'} was trained on ")
    assert left_out == "test: 1 sample left out, not in these numbers (skeleton absent 1)"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["left_out"] == {"skeleton absent": 1}
    assert metrics["num_samples"] == len(read_split(whole, "xsub", "test")) - 1

    result = invoke("fit", "--store", lacking, "--out", tmp_path / "run", *FIT)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["left_out"] == {"skeleton absent": 1}

    result = invoke("eval", "--checkpoint", hcn_run / "last.pt", "--store", whole, "--out", tmp_path / "all",
                    *EVAL)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["left_out"] == {}


# --- the store a checkpoint meets, and the progress bar -------------------------------------------------

@pytest.fixture(scope="module")
def i3d_run(stores, tmp_path_factory) -> Path:
    """i3d trained one epoch on the 16-frame store."""
    out = tmp_path_factory.mktemp("clips_i3d") / "i3d"
    fit = [*FIT[:FIT.index("--model")], "--model", "i3d", *FIT[FIT.index("--model") + 2:], "--crop", "48"]
    result = invoke("fit", "--store", stores["whole"], "--out", out, *fit)
    assert result.exit_code == 0, result.output
    return out


def test_eval_refuses_a_store_whose_rgb_frames_were_prepared_otherwise(i3d_run, stores, tmp_path):
    """An i3d trained on 16 stored frames, evaluated on a store of every frame (another temporal sampling,
    what the model never saw): one line naming both preparations, nothing written (it ran silently);
    the store it trained on evaluates with nothing to say."""
    result = invoke("eval", "--checkpoint", i3d_run / "last.pt", "--store", stores["all"], "--out",
                    tmp_path / "all", *EVAL)
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        f"Error: {i3d_run / 'last.pt'} was trained on RGB frames prepared as 16 frames of 64x64, jpeg "
        f"quality 90; {stores['all']} holds every frame (all) of 64x64, jpeg quality 90: evaluate on a store "
        "extracted with the same --frames and --size"]
    assert not (tmp_path / "all").exists()
    result = invoke("eval", "--checkpoint", i3d_run / "last.pt", "--store", stores["whole"], *EVAL)
    assert result.exit_code == 0 and result.stderr == "", result.output


def test_eval_says_which_store_and_protocol_the_checkpoint_was_trained_on(hcn_run, stores):
    """hcn trained on the xsub split of one store: evaluated on another store (other skeleton files), a
    note naming both; on the xview test split of its own store, a note counting the test samples it
    trained on (numbers that are not a held-out test, given under the run's name, were silent)."""
    result = invoke("eval", "--checkpoint", hcn_run / "last.pt", "--store", stores["lacking"], *EVAL)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"note: {hcn_run / 'last.pt'} was trained on {stores['whole']}; evaluating on {stores['lacking']}, "
        "made from other skeleton input files")

    whole = stores["whole"]
    make_split(open_store(whole, mode="r+"), "xview")
    test = read_split(whole, "xview", "test")
    trained = set(read_split(whole, "xsub", "train").indices.tolist())
    seen = sum(int(i) in trained for i in test.indices)
    assert 0 < seen < len(test)  # the note below is a count, not a blanket statement
    result = invoke("eval", "--checkpoint", hcn_run / "last.pt", "--store", whole, *EVAL[2:], "--protocol",
                    "xview")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"note: {hcn_run / 'last.pt'} was trained on the xsub train split: {seen} of the {len(test)} xview "
        "test samples are in it (these numbers are not a held-out test)"]


def test_eval_shows_a_progress_bar_unless_quiet(hcn_run, stores):
    """`eval` draws its bar on stderr (clips done of samples x clips); `--quiet` draws none (it had no
    --quiet, which every other long command has)."""
    args = ["eval", "--checkpoint", hcn_run / "last.pt", "--store", stores["whole"], "--clips", "2",
            *EVAL[:-1]]
    n = len(read_split(stores["whole"], "xsub", "test"))
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1].startswith(f"eval [{'#' * 30}] {2 * n}/{2 * n} clips")
    quiet = invoke(*args, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.output


def test_eval_refuses_a_store_being_written_and_holds_it_while_it_reads(hcn_run, stores, tmp_path,
                                                                        monkeypatch):
    """While a writer holds the store, eval is one line naming it, nothing written (it read a store that
    `extract --overwrite` may be replacing); while eval reads, it holds the store for reading."""
    import model.training.evaluate as evaluate
    from ntu_pipeline.store.lock import lock_path, readers, store_lock

    whole = stores["whole"]
    with store_lock(whole, "extract"):
        result = invoke("eval", "--checkpoint", hcn_run / "last.pt", "--store", whole, "--out",
                        tmp_path / "eval", *EVAL)
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"Error: {whole}: another ntu-prep is writing this store")
    assert not (tmp_path / "eval").exists()

    seen, real = [], evaluate.evaluate_split
    monkeypatch.setattr(evaluate, "evaluate_split",
                        lambda *a, **k: seen.append(readers(lock_path(whole))) or real(*a, **k))
    evaluate.evaluate_checkpoint(hcn_run / "last.pt", whole, "xsub", None, device="cpu", workers=0)
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith(f"pid {os.getpid()}"), seen
