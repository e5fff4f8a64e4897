"""`ntu-train` on the skeleton path: the data path's pure functions, fit, eval, resume, bad input.

The stores are synthetic (`write_corpus` -> `extract` -> `make_split`), built once per test process
(`skeleton_store`); test_train_rgb.py and test_train_ddp.py import the helpers from here. Torch runs
on one thread in these tests: this machine's two cores are shared, and two threads fighting for one
core made HCN's steps four times slower.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import model
from cli.train import main
from model import data as D
from model import transforms as T
from model.checkpoint import load_checkpoint
from model.config import TrainConfig
from model.epoch import learning_rate
from model.evaluate import evaluate_checkpoint
from model.reports import classification_report, confusion_matrix, draw_confusion
from model.skeletons import load_packed, packed_bytes
from model.train import fit
from ntu_pipeline.skeleton import normalize as reference
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus
from ntu_pipeline.synth.skeleton import REST_POSE

REPO = Path(__file__).resolve().parent.parent
_STORES: dict[tuple, Path] = {}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_store(root: Path, samples: int = 240, classes: int = 6, seed: int = 0) -> Path:
    """A synthetic skeleton store with the xsub split, made once per process for each arguments."""
    key = (samples, classes, seed)
    if key not in _STORES:
        raw, store = root / f"raw{samples}_{classes}_{seed}", root / f"s{samples}_{classes}_{seed}.zarr"
        write_corpus(raw, samples, classes, seed=seed, videos=False)
        extract(ExtractConfig(skeletons=raw, out=store, dataset="ntu60", shard_size=32, progress=False))
        make_split(open_store(store, mode="r+"), "xsub")
        _STORES[key] = store
    return _STORES[key]


def copy_store(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns(".ntu-prep.lock"))
    return dest


@pytest.fixture(scope="session")
def train_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="session")
def skeleton_store(train_root) -> Path:
    """240 samples of 6 classes (xsub: 119 train, 120 test; 20 per class in the test split)."""
    return build_store(train_root)


def hcn_config(store: Path, out: Path, **changes) -> TrainConfig:
    """A small, fast HCN run: 16 frames, batch 16, Adam (what makes HCN learn in a few epochs)."""
    options = dict(store=str(store), protocol="xsub", model="hcn", out=str(out), epochs=2, batch_size=16,
                   optimizer="adam", lr=0.016, weight_decay=0.0, warmup_epochs=1, frames=16, flip=0.0,
                   dropout=0.1, device="cpu", workers=0, progress=False)
    return TrainConfig(**{**options, **changes})


# --- the data path's pure functions -------------------------------------------------------------------

def test_batched_normalisation_matches_the_reference_functions(skeleton_store):
    """Catches the batched torch centring/alignment drifting from ntu_pipeline.skeleton.normalize."""
    joints = open_store(skeleton_store)["skeleton/joints"][:48]  # (48, 300, 2, 25, 3)
    ours = T.normalize_skeletons(torch.from_numpy(joints), "spine_axes").numpy()
    for got, sample in zip(ours, joints, strict=True):
        present = np.abs(sample).sum(axis=(2, 3)) > 0
        want = reference.align_to_axes(reference.center_on_spine(sample, present), present)
        np.testing.assert_allclose(got, want, atol=2e-6)
    empty = torch.zeros(1, 10, 2, 25, 3)  # a sample without actor 1 stays as it is
    assert torch.equal(T.normalize_skeletons(empty, "spine_axes"), empty)


def test_packed_skeletons_hold_the_rows_asked_for_and_their_frames_only(skeleton_store):
    """Catches load_packed mixing up rows when the indices skip samples and cross shards, a sample's
    frames reaching into the next one's, and residency sized by the longest sample instead of the
    frames held (the issue: one 300-frame sample made every sample cost 300 frames)."""
    group = open_store(skeleton_store)
    indices = np.array([1, 5, 31, 32, 33, 70, 200, 239])
    num_frames = group["samples/num_frames"][:][indices]
    packed = load_packed(skeleton_store, indices, num_frames, "none")
    assert packed.frames.shape == (num_frames.sum(), 2, 25, 3)
    assert packed_bytes(num_frames) == packed.frames.numel() * 4
    for row, index in enumerate(indices):
        sample = group["skeleton/joints"][int(index)]
        start, length = int(packed.starts[row]), int(packed.lengths[row])
        assert length == num_frames[row]
        np.testing.assert_array_equal(packed.frames[start:start + length].numpy(), sample[:length])
    # the last frame position of each sample, and one past it, never reads the next sample's frames
    positions = (packed.lengths[:, None] - 1 + torch.tensor([[0.0, 0.75]])).double()
    joints = T.resample_packed(packed.frames, packed.starts, packed.lengths, positions)
    for row in range(len(indices)):
        last = packed.frames[packed.starts[row] + packed.lengths[row] - 1]
        assert torch.equal(joints[row, 0], last) and torch.equal(joints[row, 1], last)


def test_windows_resampling_and_motion():
    """Catches windows leaving the frames kept, interpolation making half-size skeletons where an
    actor enters, and motion taken across the skipped frames."""
    n = torch.tensor([10, 100, 1])
    test = T.window_positions(n, 8, torch.full((3,), 1.0))
    np.testing.assert_allclose(test[0].numpy(), np.arange(8) * 10 / 8 + 10 / 16 - 0.5)
    for _ in range(20):
        u = torch.rand(3)
        pos = T.window_positions(n, 32, T.window_ratio(u, 3, "cpu"), torch.rand(3))
        assert (pos >= 0).all() and (pos <= (n - 1)[:, None]).all()
        assert (pos.diff(dim=1) >= 0).all()
    joints = torch.zeros(4, 2, 25, 3)  # one sample of 4 frames, packed
    joints[:, 0] = torch.arange(4.0)[:, None, None] + 1  # actor 1 everywhere, values 1..4
    joints[2:, 1] = 5.0  # actor 2 enters at frame 2
    positions = torch.tensor([[0.0, 1.5, 2.5, 3.0]])
    out = T.resample_packed(joints, torch.tensor([0]), torch.tensor([4]), positions)
    assert out[0, :, 0, 0, 0].tolist() == [1.0, 2.5, 3.5, 4.0]  # linear between frames
    assert out[0, 1, 1, 0, 0] == 5.0  # between frames 1 (absent) and 2: frame 2, not half of it
    assert out[0, 0, 1].abs().sum() == 0
    skeleton = T.to_model_layout(out)  # (1, 3, 4, 25, 2)
    motion = model.skeleton_motion(skeleton)
    assert motion[0, 0, 0, 0, 1] == 0  # actor 2 absent at t = 0: no motion into frame 1
    assert motion[0, 0, 1, 0, 0] == 1.0 and motion[0, 0, 3].abs().sum() == 0


def test_flip_mirrors_the_body_and_swaps_its_sides():
    """Catches a wrong left/right joint table: the synthetic rest pose is left-right symmetric, so its
    mirror image with the sides swapped is itself."""
    pose = torch.as_tensor(REST_POSE, dtype=torch.float32)  # (25, 3), its left side at -x
    skeleton = pose.T[None, :, None, :, None].repeat(1, 1, 2, 1, 2)  # (1, 3, T=2, 25, M=2)
    flipped = T.mirror_skeleton(skeleton, torch.tensor([True]))
    torch.testing.assert_close(flipped, skeleton, atol=1e-6, rtol=0)
    lopsided = skeleton.clone()
    lopsided[:, 0, :, 7] += 0.3  # the left hand reaches out
    flipped = T.mirror_skeleton(lopsided, torch.tensor([True]))
    assert torch.isclose(flipped[0, 0, 0, 11, 0], -(lopsided[0, 0, 0, 7, 0]))  # now the right hand
    assert torch.equal(T.mirror_skeleton(flipped, torch.tensor([True])), lopsided)
    assert torch.equal(T.mirror_skeleton(lopsided, torch.tensor([False])), lopsided)


def test_data_order_is_a_pure_function_of_seed_and_epoch():
    """Catches an order that depends on the process count or the step a run resumed at."""
    one = D.train_plan(50, 8, seed=3, epoch=2)
    assert len(one) == 6 and all(len(b) == 8 for b in one)
    ranks = [D.train_plan(50, 8, seed=3, epoch=2, rank=r, world=2) for r in range(2)]
    for step, batch in enumerate(one):
        assert sorted(np.concatenate([ranks[0][step], ranks[1][step]])) == sorted(batch)
    assert not np.array_equal(np.concatenate(one), np.concatenate(D.train_plan(50, 8, seed=3, epoch=3)))
    torch.testing.assert_close(D.epoch_randoms(5, 3, 2), D.epoch_randoms(5, 3, 2))
    shares = D.test_plan(11, 4, rank=1, world=2)
    assert np.concatenate(shares).tolist() == list(range(6, 11))


def test_resumed_batches_equal_the_uninterrupted_ones(skeleton_store):
    """Catches augmentation that depends on the batch's position rather than (seed, epoch, sample)."""
    data = D.SplitData(D.read_split(skeleton_store, "xsub", "train"), D.ClipSpec(frames=16), "cpu", seed=4)
    full = list(data.batches(epoch=1, batch_size=16, train=True))
    later = list(data.batches(epoch=1, batch_size=16, train=True, start_step=5))
    assert len(full) == 7 and len(later) == 2
    for a, b in zip(full[5:], later, strict=True):
        assert torch.equal(a.skeleton, b.skeleton) and torch.equal(a.labels, b.labels)
    again = next(data.batches(epoch=2, batch_size=16, train=True))
    assert not torch.equal(again.skeleton, full[0].skeleton)


def test_learning_rate_schedule():
    """Catches a warm-up or cosine that does not start near 0, reach the base, and end at 0, and an
    exponential schedule that does not decay by its factor per epoch."""
    lrs = [learning_rate(s, 100, 10, 0.2) for s in range(100)]
    assert lrs[0] == pytest.approx(0.02) and lrs[9] == pytest.approx(0.2) and lrs[10] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] < 1e-3
    exp = [learning_rate(s, 100, 0, 0.2, "exp", 0.5, steps_per_epoch=10) for s in (0, 10, 20, 25)]
    assert exp == pytest.approx([0.2, 0.1, 0.05, 0.05 * 0.5 ** 0.5])
    config = TrainConfig(store="s", protocol="xsub", model="hcn", out="o", batch_size=64, lr=0.1)
    assert config.base_lr() == pytest.approx(0.2)  # linear scaling from batch 32


def test_each_model_family_gets_its_recipe_and_every_option_overrides_it():
    """Catches the skeleton baseline trained with the fused models' SGD 0.1 (it diverged: loss in the
    hundreds, chance accuracy) and options that do not override the recipe."""
    hcn = TrainConfig(store="s", protocol="xsub", model="hcn", out="o")
    assert (hcn.optimizer, hcn.batch_size, hcn.schedule, hcn.recipe) == ("adam", 64, "exp", "hcn")
    assert hcn.base_lr() == pytest.approx(0.001) and hcn.weight_decay == 1e-4 and hcn.lr_decay == 0.99
    for name in ("i3d", "ccdfarm", "mmtm"):
        fused = TrainConfig(store="s", protocol="xsub", model=name, out="o")
        assert (fused.optimizer, fused.lr, fused.batch_size, fused.epochs, fused.schedule) == \
            ("sgd", 0.1, 32, 50, "cosine")
    mine = TrainConfig(store="s", protocol="xsub", model="hcn", out="o", optimizer="sgd", epochs=3)
    assert (mine.optimizer, mine.epochs, mine.lr) == ("sgd", 3, 0.0005)
    assert "changed: epochs, optimizer" in mine.describe_recipe()
    again = TrainConfig(**mine.to_dict())  # what config.json holds resumes to the same settings
    assert again == mine


# --- evaluation ---------------------------------------------------------------------------------------

def test_classification_report_and_confusion_png():
    """Catches top-k, per-class accuracy or the confusion matrix counting the wrong thing."""
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5, 1, 0, 0, 0], [1, 5, 0, 0, 0, 0], [0, 0, 0, 0, 1, 5]])
    labels = torch.tensor([0, 1, 0, 5])
    names = ["a", "b", "c", "d", "e", "f"]
    report = classification_report(logits, labels, names)
    assert report["top1"] == pytest.approx(0.75) and report["top5"] == pytest.approx(1.0)
    assert report["per_class"]["a"] == {"accuracy": 0.5, "samples": 2}
    assert report["per_class"]["c"] == {"accuracy": None, "samples": 0}
    conf = confusion_matrix(logits.argmax(1), labels, 6)
    assert conf[0, 0] == 1 and conf[0, 1] == 1 and conf.sum() == 4
    image = draw_confusion(conf, names, "title")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] > 6 * 12


# --- fit, eval, resume --------------------------------------------------------------------------------

@pytest.mark.slow
def test_hcn_learns_the_synthetic_classes(skeleton_store, tmp_path):
    """Catches a data path that loses the class signal (labels misaligned with samples, windows or
    normalisation destroying the motion) or a loop that does not optimise. Threshold: 3x chance (the
    test split has 20 samples of each of 6 classes, chance 1/6), so 0.5; a nearest-centroid
    classifier reaches 0.98 on these classes (test_synth.py)."""
    report = fit(hcn_config(skeleton_store, tmp_path / "run", epochs=8, batch_size=8, dropout=0.0))
    assert report["top1"] >= 0.5, report["top1"]
    lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and lines[-1]["train_loss"] < lines[0]["train_loss"]


@pytest.fixture(scope="session")
def finished_run(skeleton_store, train_root) -> Path:
    """`ntu-train fit` through the CLI: 2 epochs of HCN."""
    out = train_root / "cli_run"
    result = CliRunner().invoke(main, [
        "fit", "--store", str(skeleton_store), "--protocol", "xsub", "--model", "hcn", "--out", str(out),
        "--epochs", "2", "--batch-size", "16", "--frames", "16", "--optimizer", "adam", "--lr", "0.016",
        "--weight-decay", "0", "--warmup-epochs", "1", "--flip", "0", "--device", "cpu", "--workers", "0",
        "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test top1" in result.output
    return out


def test_fit_writes_the_run_directory(finished_run):
    """Catches a missing or malformed run artefact: config, checkpoints, logs, report, PNG."""
    config = json.loads((finished_run / "config.json").read_text())
    assert config["model"] == "hcn" and config["epochs"] == 2 and config["frames"] == 16
    lines = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    keys = {"train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr", "clips_per_s"}
    assert keys <= set(lines[0])
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and metrics["num_samples"] == 120
    assert metrics["top1"] == pytest.approx(lines[-1]["test_top1"])
    assert metrics["per_class"]["drink water"]["samples"] == 20
    assert sum(c["samples"] for c in metrics["per_class"].values()) == 120
    image = cv2.imread(str(finished_run / "confusion.png"))
    assert image is not None and image.shape[0] > 200
    for name in ("last.pt", "best.pt"):
        state = torch.load(finished_run / name, map_location="cpu", weights_only=True)
        assert state["model_name"] == "hcn" and state["num_classes"] == 60 and state["epoch"] >= 1
        assert isinstance(state["rng"]["torch"], torch.Tensor) and state["seed"] == 0
    assert not list(finished_run.glob("*.tmp"))


def test_eval_reproduces_the_final_metrics(finished_run, skeleton_store, tmp_path):
    """Catches eval building another model or data path than fit's (its metrics must match)."""
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(finished_run / "last.pt"), "--store",
                                       str(skeleton_store), "--protocol", "xsub", "--out", str(tmp_path),
                                       "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "metrics.json").read_text())
    theirs = json.loads((finished_run / "metrics.json").read_text())
    assert ours["top1"] == pytest.approx(theirs["top1"]) and ours["per_class"] == theirs["per_class"]
    assert (tmp_path / "confusion.png").is_file()


@pytest.mark.slow
def test_resume_after_kill_9_equals_an_uninterrupted_run(skeleton_store, tmp_path):
    """Catches any state a resumed run loses: weights, optimizer, schedule, data order, dropout RNG,
    the epoch's running sums. The run is a real process killed with SIGKILL mid-epoch."""
    args = ["fit", "--store", str(skeleton_store), "--protocol", "xsub", "--model", "hcn",
            "--epochs", "4", "--batch-size", "16", "--frames", "16", "--optimizer", "adam", "--lr", "0.016",
            "--weight-decay", "0", "--warmup-epochs", "1", "--flip", "0.5", "--dropout", "0.3",
            "--device", "cpu", "--workers", "0", "--quiet", "--checkpoint-every", "2"]
    reference_run = tmp_path / "whole"
    fit(TrainConfig(store=str(skeleton_store), protocol="xsub", model="hcn", out=str(reference_run),
                    epochs=4, batch_size=16, frames=16, optimizer="adam", lr=0.016, weight_decay=0.0,
                    warmup_epochs=1, flip=0.5, dropout=0.3, device="cpu", workers=0, progress=False,
                    checkpoint_every=2))
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cli.train", *args, "--out", str(killed)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    where = None
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / "last.pt").is_file():
            state = torch.load(killed / "last.pt", map_location="cpu", weights_only=True)
            if state["epoch"] >= 1 and state["step"] > 0:  # mid-epoch, after the first epoch
                proc.send_signal(signal.SIGKILL)
                where = (state["epoch"], state["step"])
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert where is not None and proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = torch.load(reference_run / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), f"{key} differs after resuming at {where}"
    for key in ("train_loss", "train_top1", "test_top1", "test_loss"):
        assert [line[key] for line in a["history"]] == [line[key] for line in b["history"]], key
    assert json.loads((reference_run / "metrics.json").read_text())["per_class"] == \
        json.loads((killed / "metrics.json").read_text())["per_class"]


def test_nan_loss_stops_with_one_line(skeleton_store, tmp_path):
    """Catches a run that trains on after its loss became NaN (or dies with a traceback)."""
    result = CliRunner().invoke(main, [
        "fit", "--store", str(skeleton_store), "--protocol", "xsub", "--model", "hcn",
        "--out", str(tmp_path / "nan"), "--epochs", "2", "--batch-size", "16", "--frames", "16",
        "--lr", "1e30", "--clip-norm", "0", "--warmup-epochs", "0", "--device", "cpu", "--quiet"])
    assert result.exit_code == 1
    assert "Error: the training loss became nan" in result.output or "became inf" in result.output
    assert len(result.output.strip().splitlines()) <= 3, result.output  # recipe, loading, the error
    assert not (tmp_path / "nan" / "last.pt").exists()


# --- bad input: one line each -------------------------------------------------------------------------

def _fit_args(store: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--frames", "16", "--device", "cpu", "--quiet", *extra]


def _one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_store_without_the_split(skeleton_store, tmp_path):
    line = _one_line_error(CliRunner().invoke(main, _fit_args(skeleton_store, tmp_path / "r")[:4] + [
        "xview", *_fit_args(skeleton_store, tmp_path / "r")[5:]]))
    assert "no split 'xview'" in line and "ntu-prep split --protocol xview" in line


def test_unknown_store_format(skeleton_store, tmp_path):
    odd = copy_store(skeleton_store, tmp_path / "odd.zarr")
    meta = json.loads((odd / "zarr.json").read_text())
    meta["attributes"]["format"] = "ntu-prep/99"
    (odd / "zarr.json").write_text(json.dumps(meta))
    line = _one_line_error(CliRunner().invoke(main, _fit_args(odd, tmp_path / "r")))
    assert "ntu-prep/99" in line


def test_store_without_rgb_for_an_rgb_model(skeleton_store, tmp_path):
    args = _fit_args(skeleton_store, tmp_path / "r")
    args[args.index("hcn")] = "ccdfarm"
    line = _one_line_error(CliRunner().invoke(main, args))
    assert "no RGB frames" in line and "--videos" in line


def test_empty_split(skeleton_store, tmp_path):
    from ntu_pipeline.store.schema import write_split

    empty = copy_store(skeleton_store, tmp_path / "empty.zarr")
    group = open_store(empty, mode="r+")
    write_split(group, "xsub", np.arange(10, dtype=np.int64), np.zeros(0, dtype=np.int64), {})
    line = _one_line_error(CliRunner().invoke(main, _fit_args(empty, tmp_path / "r")))
    assert "xsub/test is empty" in line


def test_checkpoint_of_another_model_or_class_count(finished_run, skeleton_store, tmp_path):
    base = ["eval", "--store", str(skeleton_store), "--protocol", "xsub", "--device", "cpu"]
    line = _one_line_error(CliRunner().invoke(main, [*base, "--checkpoint", str(finished_run / "last.pt"),
                                                     "--model", "ccdfarm"]))
    assert "hcn checkpoint, not ccdfarm" in line
    state = load_checkpoint(finished_run / "last.pt").to_dict()
    other = model.build("hcn", 120, frames=16)
    torch.save({**state, "num_classes": 120, "class_names": [str(k) for k in range(120)], "dataset": "ntu120",
                "model": other.state_dict()}, tmp_path / "ntu120.pt")
    line = _one_line_error(CliRunner().invoke(main, [*base, "--checkpoint", str(tmp_path / "ntu120.pt")]))
    assert "has 120 classes" in line and "the store has 60" in line
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    line = _one_line_error(CliRunner().invoke(main, [*base, "--checkpoint", str(tmp_path / "junk.pt")]))
    assert "not a readable checkpoint" in line
    with pytest.raises(Exception, match="other settings"):  # resume with changed settings
        fit(hcn_config(skeleton_store, finished_run, epochs=3), resume=True)


def test_existing_run_directory_needs_resume(finished_run, skeleton_store):
    line = _one_line_error(CliRunner().invoke(main, _fit_args(skeleton_store, finished_run)))
    assert "--resume" in line


def test_evaluate_checkpoint_api(finished_run, skeleton_store):
    report = evaluate_checkpoint(finished_run / "best.pt", skeleton_store, "xsub", None, device="cpu",
                                 workers=0)
    assert report["num_samples"] == 120 and report["model"] == "hcn"


def test_init_from_starts_the_skeleton_stream_of_a_fused_model(finished_run, skeleton_store):
    """Catches --init-from loading into the wrong module, or silently loading nothing."""
    from model.checkpoint import init_stream
    from ntu_pipeline.errors import CheckpointError

    class_names = tuple(open_store(skeleton_store).attrs["class_names"])
    state = load_checkpoint(finished_run / "best.pt")
    net = model.build("ccdfarm", len(class_names), frames=16)
    before = net.rgb.endpoints["conv1a"].conv.weight.clone()
    message = init_stream(net, finished_run / "best.pt", class_names)
    assert "hcn stream" in message
    for key, value in state.model.items():
        torch.testing.assert_close(net.skeleton.state_dict()[key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(net.rgb.endpoints["conv1a"].conv.weight, before, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no hcn stream"):
        init_stream(model.build("i3d", len(class_names)), finished_run / "best.pt", class_names)


def test_summary_tables_finished_runs(finished_run, tmp_path):
    """Catches a summary that misreads a run's files or accepts a folder that is not a run."""
    result = CliRunner().invoke(main, ["summary", str(finished_run)])
    assert result.exit_code == 0, result.output
    report = json.loads((finished_run / "metrics.json").read_text())
    row = result.output.splitlines()[1].split()
    assert row[1:5] == ["hcn", "xsub", "2", "1"] and float(row[5]) == pytest.approx(report["top1"], abs=1e-4)
    result = CliRunner().invoke(main, ["summary", str(tmp_path)])
    assert result.exit_code == 1 and "not a finished run" in result.output
