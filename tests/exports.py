"""What the export test files share (imported as `from exports import ...`); their stores are in conftest.py.

Each format is read back the way its consumer reads it, in a fresh Python process that cannot import
ntu-prep: plain `pickle` (PYSKL's mmcv.load), `np.load` and CTR-GCN's feeder reshapes, plain h5py.
"""

from __future__ import annotations

import subprocess
import sys

import zarr

from ntu_pipeline.manifests import missing_samples

MISSING_NAME = sorted(missing_samples("ntu60"))[0]


def run_fresh(script: str, *args) -> None:
    """Run `script` in a fresh, isolated interpreter (no cwd on sys.path, no PYTHON* variables)."""
    result = subprocess.run([sys.executable, "-I", "-c", script, *map(str, args)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def zarr_arrays(group: zarr.Group, prefix: str = "") -> dict[str, zarr.Array]:
    out = {f"{prefix}{name}": array for name, array in group.arrays()}
    for name, sub in group.groups():
        out.update(zarr_arrays(sub, f"{prefix}{name}/"))
    return out
