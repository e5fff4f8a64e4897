"""What a new user still broke in `ntu-train fit`, each now one line saying what to do: starting streams
from checkpoints that cannot start them, a file that is not a checkpoint, Ctrl-C before the first
checkpoint, a run larger than the memory left; and the store held for reading while a fit runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from training import hcn_config

import model.training.fit as fit_module
import model.training.runtime as runtime
from cli.train import main
from model.training.fit import fit
from ntu_pipeline.errors import StoreLockedError
from ntu_pipeline.store.lock import store_lock

pytestmark = pytest.mark.usefixtures("one_thread")


def fit_args(store: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--store", str(store), "--protocol", "xsub", "--model", "hcn", "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--frames", "16", "--device", "cpu", "--workers", "0",
            "--quiet", *extra]


def one_error_line(result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def runs(skeleton_store, tmp_path_factory) -> dict[int, Path]:
    """One-epoch hcn runs at 16 and at 32 frames (HCN's last layers are sized by the frame count)."""
    root = tmp_path_factory.mktemp("refusals")
    torch.set_num_threads(1)
    for frames in (16, 32):
        fit(hcn_config(skeleton_store, root / f"hcn{frames}", epochs=1, frames=frames))
    return {frames: root / f"hcn{frames}" for frames in (16, 32)}


def test_init_from_a_run_of_other_frames_is_one_line(runs, skeleton_store, tmp_path):
    """Was a traceback (load_state_dict's size mismatch of fc7); now exit 2 naming both frame counts."""
    result = CliRunner().invoke(main, fit_args(skeleton_store, tmp_path / "r", "--init-from",
                                               str(runs[32] / "best.pt")))
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "trained on 32-frame clips" in line and "--frames 16" in line


def test_init_from_the_same_stream_twice_is_one_line(runs, skeleton_store, tmp_path):
    """The same checkpoint twice loaded it twice in silence (the second load a no-op that looks like two
    streams); two checkpoints of one stream kept the second. Both are exit 2 now."""
    best = str(runs[16] / "best.pt")
    result = CliRunner().invoke(main, fit_args(skeleton_store, tmp_path / "a", "--init-from", best,
                                               "--init-from", best))
    assert result.exit_code == 2, result.output
    assert "is given twice" in one_error_line(result)
    result = CliRunner().invoke(main, fit_args(skeleton_store, tmp_path / "b", "--init-from", best,
                                               "--init-from", str(runs[16] / "last.pt")))
    assert result.exit_code == 2, result.output
    assert "both start the hcn stream" in one_error_line(result)


class Opaque:
    """An object a weights_only load refuses (PyTorch then advises weights_only=False)."""


def test_a_file_that_is_not_a_checkpoint_is_our_own_line(skeleton_store, tmp_path):
    """PyTorch's message on such a file advises loading it with weights_only=False, which runs whatever
    code it holds: never repeated to a user. One line of ours, naming the file, for text, random bytes
    and a pickled object, through eval and through --init-from."""
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    (tmp_path / "bytes.pt").write_bytes(bytes(range(256)) * 4)
    torch.save({"model": Opaque()}, tmp_path / "object.pt", pickle_module=pickle)
    for name in ("text.pt", "bytes.pt", "object.pt"):
        path = tmp_path / name
        result = CliRunner().invoke(main, ["eval", "--checkpoint", str(path), "--store", str(skeleton_store),
                                           "--protocol", "xsub", "--device", "cpu", "--workers", "0"])
        assert result.exit_code == 1, result.output
        line = one_error_line(result)
        assert line.startswith(f"Error: {path}: not a readable checkpoint") and "weights_only" not in line
        result = CliRunner().invoke(main, fit_args(skeleton_store, tmp_path / "r", "--init-from", str(path)))
        assert result.exit_code == 1 and "weights_only" not in result.output, result.output


def test_ctrl_c_before_the_first_checkpoint_says_the_truth(skeleton_store, tmp_path, monkeypatch):
    """Ctrl-C in a fit's first seconds said "last.pt holds the last checkpoint: continue ... --resume",
    and --resume then failed (no last.pt). Now it says there is nothing to resume, and the same command
    run again trains."""
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(fit_module, "read_split", interrupted)  # while the splits are read
        result = CliRunner().invoke(main, fit_args(skeleton_store, out))
    assert result.exit_code == 130, result.output
    assert "nothing to resume" in result.output and "without --resume" in result.output
    assert "holds the last checkpoint" not in result.output
    result = CliRunner().invoke(main, fit_args(skeleton_store, out))
    assert result.exit_code == 0, result.output


def test_skeletons_larger_than_the_memory_left_are_refused_first(skeleton_store, tmp_path, monkeypatch):
    """The resident skeletons (samples x frames kept x 2 x 25 x 3 x 4 bytes) are estimated before they
    are allocated: larger than the memory the device has left is one line with both figures, exit 2."""
    monkeypatch.setattr(runtime, "available_memory", lambda device: 2**20)  # 1 MiB left
    result = CliRunner().invoke(main, fit_args(skeleton_store, tmp_path / "run"))
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "the skeletons of 239 samples" in line and "0.00 GiB available" in line
    assert "--half-skeletons" in line and not (tmp_path / "run" / "last.pt").exists()


def test_the_store_is_held_for_reading_while_a_fit_runs(skeleton_store, tmp_path):
    """A writer (extract --overwrite, split) on the store a fit reads is refused while the fit runs, and
    free again after."""
    tried: list[BaseException | None] = []

    def write_the_store(line: dict) -> None:
        try:
            with store_lock(skeleton_store, "split"):
                tried.append(None)
        except StoreLockedError as err:
            tried.append(err)

    fit(hcn_config(skeleton_store, tmp_path / "run", epochs=1), on_epoch=write_the_store)
    assert len(tried) == 1 and isinstance(tried[0], StoreLockedError), tried
    assert "is being read" in str(tried[0])
    with store_lock(skeleton_store, "split"):
        pass
