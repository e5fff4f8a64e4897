"""A normal (non-editable) install runs from another folder: the wheel carries every package and the
manifests, and `ntu-prep` works from it with nothing of the repository on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("ntu_prep-*.whl")
    members = set(zipfile.ZipFile(wheel).namelist())
    for init in sorted(REPO.glob("*/**/__init__.py")):
        package = init.parent.relative_to(REPO)
        if package.parts[0] in ("ntu_pipeline", "model", "cli"):
            assert f"{package.as_posix()}/__init__.py" in members, f"{package} is not in the wheel"
    for manifest in (REPO / "data_manifests").iterdir():
        if manifest.suffix in (".txt", ".toml"):
            assert f"ntu_pipeline/data_manifests/{manifest.name}" in members, manifest.name

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheel)], check=True, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("NTU_SAMPLES", None)

    def run(*args: str) -> str:
        result = subprocess.run([str(site / "bin" / "ntu-prep"), *args], cwd=elsewhere, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    where = subprocess.run([sys.executable, "-c", "import ntu_pipeline, cli; print(ntu_pipeline.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the repository
    assert "extract" in run("--help")
    assert "train  40091 test  16487" in run("protocols")
    run("synth", "raw", "--samples", "12", "--classes", "2", "--no-videos", "--quiet")
    assert "skeleton: ok 12" in run("extract", "--skeletons", "raw", "--out", "s.zarr", "--quiet")
    assert run("split", "--protocol", "xsub", "s.zarr").startswith("xsub: train")
