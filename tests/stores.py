"""What several test files compare stores with (imported as `from stores import ...`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store by its path in the group, read whole."""
    out: dict[str, np.ndarray] = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, array in group.arrays():
            out[prefix + name] = array[:]
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")
    walk(zarr.open_group(str(path), mode="r"), "")
    return out


def assert_same_arrays(a: Path, b: Path) -> None:
    left, right = store_arrays(a), store_arrays(b)
    assert sorted(left) == sorted(right)
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def assert_stores_equal(a: Path, b: Path) -> None:
    """The same arrays and the same attributes."""
    assert dict(zarr.open_group(str(a), mode="r").attrs) == dict(zarr.open_group(str(b), mode="r").attrs)
    assert_same_arrays(a, b)


def shards_done(store: Path, array: str = "progress/shard_done") -> int:
    """How many shards a (possibly half-made) store has marked done; 0 before it exists."""
    try:
        return int(zarr.open_group(str(store), mode="r")[array][:].sum())
    except Exception:  # not created yet, or being created
        return 0
