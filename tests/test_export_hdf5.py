"""`ntu-prep export --format hdf5`: a copy of the whole store, read back with plain h5py."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from exports import run_fresh, zarr_arrays

from ntu_pipeline import __version__
from ntu_pipeline.export.common import ExportConfig
from ntu_pipeline.export.hdf5 import write_hdf5
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store

H5_READER = """
import json, pickle, sys
import h5py, numpy as np
def attrs(obj):
    enc = set(json.loads(obj.attrs["json_attrs"])) if "json_attrs" in obj.attrs else set()
    out = {}
    for k, v in obj.attrs.items():
        if k != "json_attrs":
            v = v.item() if isinstance(v, np.generic) else v
            out[k] = json.loads(v) if k in enc else v
    return out
out = {"arrays": {}, "groups": {}}
with h5py.File(sys.argv[1], "r") as f:
    out["file_attrs"] = attrs(f)
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            data = obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) else obj[()]
            out["arrays"][name] = {"data": data, "attrs": attrs(obj), "chunks": obj.chunks,
                                   "compression": obj.compression}
        else:
            out["groups"][name] = attrs(obj)
    f.visititems(visit)
out["ours_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in ("ntu_pipeline", "cli", "model"))
pickle.dump(out, open(sys.argv[2], "wb"))
"""


def with_rgb(path: Path, tmp_path: Path) -> Path:
    """A copy of the store with rgb/* arrays (the RGB stage's names), unless it already has them."""
    copy = tmp_path / "rgb.zarr"
    shutil.copytree(path, copy)
    group = zarr.open_group(str(copy), mode="r+")
    if "rgb" not in group:
        n = group["samples/name"].shape[0]
        rgb = group.create_group("rgb")
        rgb.attrs["note"] = {"made_by": "test_export", "size": 8}
        frames = rgb.create_array("frames", shape=(n, 4, 8, 8, 3), dtype="uint8", chunks=(1, 1, 8, 8, 3),
                                  shards=(8, 4, 8, 8, 3))
        frames[:] = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
        rgb.create_array("status", shape=(n,), dtype="int8", chunks=(8,))[:] = np.arange(n) % 3
        crop_box = rgb.create_array("crop_box", shape=(n, 4), dtype="int32", chunks=(8, 4))
        crop_box[:] = np.arange(4 * n).reshape(n, 4)
    return copy


def zarr_groups(group: zarr.Group, prefix: str = "") -> dict[str, dict]:
    out = {}
    for name, sub in group.groups():
        out[f"{prefix}{name}"] = dict(sub.attrs)
        out.update(zarr_groups(sub, f"{prefix}{name}/"))
    return out


@pytest.mark.parametrize("rgb", [True, False])
def test_hdf5_opens_with_plain_h5py_and_equals_the_store(store, rgb, tmp_path):
    source = with_rgb(store, tmp_path)
    out = tmp_path / "store.h5"
    summary = write_hdf5(ExportConfig(store=source, out=out, format="hdf5", rgb=rgb, progress=False))
    run_fresh(H5_READER, out, tmp_path / "read.pkl")
    read = pickle.loads((tmp_path / "read.pkl").read_bytes())
    assert read["ours_imported"] == []

    group = zarr.open_group(str(source), mode="r")
    arrays = zarr_arrays(group)
    expected = set(arrays) - (set() if rgb else {"rgb/frames"})
    assert set(read["arrays"]) == expected and "skeleton/frame_index" in expected
    n = group["samples/name"].shape[0]
    for path in sorted(expected):
        array, got = arrays[path], read["arrays"][path]
        want = array[...]
        if array.dtype.kind in "OTU":
            assert [str(s) for s in np.ravel(got["data"])] == [str(s) for s in np.ravel(want)], path
        else:
            assert got["data"].dtype == want.dtype, path
            np.testing.assert_array_equal(got["data"], want, err_msg=path)
        assert got["attrs"] == dict(array.attrs), path
        if array.ndim >= 2 and array.shape[0] == n and want[0].nbytes >= 1024:  # skeleton/*, rgb/frames
            assert got["chunks"] == (1, *array.shape[1:]) and got["compression"] == "gzip", path
    assert read["groups"] == zarr_groups(group)
    attrs = read["file_attrs"]
    export = attrs.pop("export")
    assert attrs == dict(group.attrs)
    assert export["source"] == str(source.resolve()) and export["store_format"] == "ntu-prep/2"
    assert export["ntu_prep_version"] == __version__ and export["options"]["rgb"] is rgb
    assert export["left_out_arrays"] == ([] if rgb else ["rgb/frames"])
    assert summary.left_out == ([] if rgb else [("rgb/frames", "--no-rgb")])


def test_hdf5_copies_the_rgb_stages_frames_unless_no_rgb(tmp_path):
    import h5py

    from ntu_pipeline.synth.corpus import write_synthetic_corpus

    raw = tmp_path / "raw"
    write_synthetic_corpus(raw, 4, 3, seed=0, videos=True, progress=False)
    store = tmp_path / "av.zarr"
    extract(ExtractConfig(skeletons=raw, videos=raw, out=store, dataset="ntu60", rgb_frames=4, rgb_size=32,
                          progress=False))
    group = open_store(store)
    rgb_arrays = sorted(name for name, _ in group["rgb"].arrays())
    for rgb in (True, False):
        out = tmp_path / f"av_{rgb}.h5"
        write_hdf5(ExportConfig(store=store, out=out, format="hdf5", rgb=rgb, progress=False))
        with h5py.File(out, "r") as f:
            assert sorted(f["rgb"]) == [n for n in rgb_arrays if rgb or n != "frames"]
            if rgb:
                frames = f["rgb/frames"]
                assert frames.dtype == np.uint8 and frames.chunks == (1, *frames.shape[1:])
                np.testing.assert_array_equal(frames[:], group["rgb/frames"][:])  # the JPEGs, decoded
            np.testing.assert_array_equal(f["rgb/frame_index"][:], group["rgb/frame_index"][:])
