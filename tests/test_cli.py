"""`ntu-prep` through click's CliRunner: the commands a user types, their output and exit codes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli.prep import main
from ntu_pipeline.sheet import ACTOR_COLOURS, TILE


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A synthetic corpus run through synth, extract and split, as `make demo` does."""
    root = tmp_path_factory.mktemp("cli")
    runner = CliRunner()
    result = runner.invoke(main, ["synth", str(root / "raw"), "--samples", "24", "--classes", "3",
                                  "--no-videos", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "wrote 24" in result.output
    result = runner.invoke(main, ["extract", "--skeletons", str(root / "raw"), "--out", str(root / "s.zarr"),
                                  "--dataset", "ntu60", "--shard-size", "8", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "skeleton: ok 24" in result.output
    return root / "s.zarr"


def test_split_prints_the_counts(prepared):
    result = CliRunner().invoke(main, ["split", "--protocol", "xsub", str(prepared)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("xsub: train ") and "test" in result.output


def test_info_and_verify(prepared):
    result = CliRunner().invoke(main, ["info", str(prepared)])
    assert result.exit_code == 0, result.output
    assert "ntu-prep/2, ntu60, 24 samples, state complete" in result.output
    assert "skeleton/joints: (24, 300, 2, 25, 3) float32" in result.output
    result = CliRunner().invoke(main, ["verify", "--quiet", str(prepared)])
    assert result.exit_code == 0 and result.output.strip().endswith(": ok")


def test_verify_exits_1_listing_problems(prepared, tmp_path):
    import shutil

    import zarr

    broken = tmp_path / "broken.zarr"
    shutil.copytree(prepared, broken)
    zarr.open_group(str(broken), mode="r+")["progress/shard_done"][0] = 0
    result = CliRunner().invoke(main, ["verify", "--quiet", str(broken)])
    assert result.exit_code == 1
    assert "problem: skeleton: 1 of 3 shards not written" in result.output


def test_verify_counts_the_shards_it_checks_and_a_missing_table_is_a_problem(prepared, tmp_path):
    """The progress total is what verify_store advances through (catches a stage's shards left out of
    the total); a store whose sample table is gone is a listed problem, not a KeyError traceback."""
    import shutil

    from ntu_pipeline.store import open_store, verify_store
    from ntu_pipeline.store.verify import shards_to_verify

    group = open_store(prepared, check=False)
    steps: list[int] = []
    assert verify_store(group, advance=steps.append) == []
    assert shards_to_verify(group) == sum(steps) == 3  # 24 samples in shards of 8
    broken = tmp_path / "broken.zarr"
    shutil.copytree(prepared, broken)
    (broken / "samples/name/zarr.json").unlink()
    result = CliRunner().invoke(main, ["verify", "--quiet", str(broken)])
    assert result.exit_code == 1 and not isinstance(result.exception, KeyError), result.output
    assert "problem: samples/name: array missing" in result.output


def test_protocols_prints_the_official_counts():
    result = CliRunner().invoke(main, ["protocols"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "train  40091 test  16487" in lines["xsub"] and "train  40320 test  16560" in lines["xsub"]
    assert "train  54468 test  59477" in lines["xset120"]


def test_user_errors_are_messages_not_tracebacks(prepared, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["extract", "--skeletons", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no *.skeleton file" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["split", "--protocol", "xsub120", str(prepared)])
    assert result.exit_code == 1 and "defined on ntu120" in result.output
    result = CliRunner().invoke(main, ["info", str(empty)])
    assert result.exit_code == 1 and "not a zarr store" in result.output


def test_sheet_draws_each_sample(prepared, tmp_path):
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["sheet", str(prepared), str(out), "--samples", "8", "--columns", "4"])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(out))
    assert image.shape[1] == 4 * TILE and image.shape[0] > 2 * TILE
    tiles = [image[r * (image.shape[0] // 2):(r * (image.shape[0] // 2)) + TILE, c * TILE:(c + 1) * TILE]
             for r in range(2) for c in range(4)]
    blue = np.array(ACTOR_COLOURS[0])
    for tile in tiles:  # every tile has actor 1 drawn in (faded) blue
        bluish = (tile[..., 0].astype(int) - tile[..., 2].astype(int)) > 60
        assert bluish.sum() > 50, blue



@pytest.fixture(scope="module")
def rgb_store(tmp_path_factory) -> Path:
    """Two synthetic samples with skeletons and videos: 4 frames of 32 pixels each."""
    from ntu_pipeline.stages.runner import ExtractConfig, extract
    from ntu_pipeline.synth.corpus import write_corpus

    root = tmp_path_factory.mktemp("cli_rgb")
    write_corpus(root / "raw", 2, 1, seed=3, videos=True)
    extract(ExtractConfig(skeletons=root / "raw", videos=root / "raw", out=root / "s.zarr", dataset="ntu60",
                          rgb_frames=4, rgb_size=32, progress=False), say=lambda _: None)
    return root / "s.zarr"


def _image_command(kind: str, store: Path, out: Path) -> list[str]:
    return ["sheet", str(store), str(out)] if kind == "sheet" else ["preview", str(store), "-o", str(out)]


@pytest.mark.parametrize("kind", ["sheet", "preview"])
def test_sheet_and_preview_write_whole_images(kind, rgb_store, tmp_path, monkeypatch):
    """An image is written whole or not at all: an unknown suffix is one line (exit 2) and writes nothing;
    a write interrupted before its rename keeps the old image and leaves no partial file; a finished one
    leaves the image alone in its folder (catches a direct cv2.imwrite, which writes in place)."""
    odd = tmp_path / "out.xyz"
    result = CliRunner().invoke(main, _image_command(kind, rgb_store, odd))
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {odd}: OpenCV cannot write images of type '.xyz'; name it .png or .jpg\n"
    assert list(tmp_path.iterdir()) == []

    out = tmp_path / "out.png"
    out.write_bytes(b"the old image")
    import ntu_pipeline.atomic

    def killed(*_):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ntu_pipeline.atomic.os, "replace", killed)
        result = CliRunner().invoke(main, _image_command(kind, rgb_store, out))
    assert result.exit_code == 130, result.output
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"the old image"

    result = CliRunner().invoke(main, _image_command(kind, rgb_store, out))
    assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == [out]
    image = cv2.imread(str(out))
    assert image is not None and image.ndim == 3 and image.std() > 0


def test_a_missing_stage_is_one_line_naming_the_command_that_adds_it(prepared, rgb_store, tmp_path):
    """sheet, export and preview refuse a store without the stage they read (one definition:
    `require_stages`), naming the store and the extract input that adds the stage."""
    from ntu_pipeline.stages.runner import ExtractConfig, extract

    result = CliRunner().invoke(main, ["preview", str(prepared), "-o", str(tmp_path / "p.png")])
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: {prepared}: the store has no RGB frames; prepare them with: "
                             f"ntu-prep extract --videos DIR --out {prepared}\n")
    videos_only = tmp_path / "v.zarr"
    extract(ExtractConfig(videos=rgb_store.parent / "raw", out=videos_only, dataset="ntu60", rgb_frames=4,
                          rgb_size=32, progress=False), say=lambda _: None)
    fix = (f"Error: {videos_only}: the store has no skeletons; prepare them with: "
           f"ntu-prep extract --skeletons DIR --out {videos_only}\n")
    for args in (["sheet", str(videos_only), str(tmp_path / "s.png")],
                 ["export", str(videos_only), "--format", "pyskl", "-o", str(tmp_path / "e.pkl")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.output == fix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zarr"]
