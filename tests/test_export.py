"""`ntu-prep export`: PYSKL pickles, CTR-GCN npz files and HDF5 copies, checked against the store.

Each format is read back the way its consumer reads it, in a fresh Python process that cannot import
ntu-prep: plain `pickle` (PYSKL's mmcv.load), `np.load` and CTR-GCN's feeder reshapes, plain h5py.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from cli.prep import main
from ntu_pipeline import __version__
from ntu_pipeline.export import pyskl as pyskl_module
from ntu_pipeline.export.common import ExportConfig, read_runs
from ntu_pipeline.export.ctrgcn import ctrgcn_rows, write_ctrgcn
from ntu_pipeline.export.hdf5 import write_hdf5
from ntu_pipeline.export.pyskl import pyskl_keypoint, write_pyskl
from ntu_pipeline.manifests import get_protocol, missing_samples
from ntu_pipeline.sample_id import SampleId
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import STATUS_CODES, open_store, read_strings
from ntu_pipeline.store.splits import compute_split, make_split, usable_samples
from ntu_pipeline.synth.corpus import write_corpus

MISSING_NAME = sorted(missing_samples("ntu60"))[0]
TWO_PERSON_REAL = ("S001C001P001R001A050", "S017C003P020R002A054", "S017C003P020R002A055",
                   "S017C003P020R002A056", "S017C003P020R002A057", "S017C003P020R002A058")
OURS = ("ntu_pipeline", "cli", "model")

# Run with `python -I` and an import hook that refuses ntu-prep's packages: what PYSKL's mmcv.load does.
PICKLE_READER = """
import json, pickle, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ntu_pipeline", "cli", "model"):
            raise ImportError("the pickle needs " + name)
sys.meta_path.insert(0, Refuse())
path, out = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
data = pickle.loads(raw)
import numpy as np
rows = [[a["frame_dir"], a["label"], a["total_frames"], type(a["label"]).__name__,
         type(a["total_frames"]).__name__, type(a["keypoint"]).__name__, a["keypoint"].dtype.str,
         bool(a["keypoint"].flags.writeable), sorted(a)] for a in data["annotations"]]
np.savez(out + ".npz", **{a["frame_dir"]: a["keypoint"] for a in data["annotations"]})
json.dump({"keys": sorted(data), "split": data["split"], "meta": data["meta"], "rows": rows,
           "annotations_type": type(data["annotations"]).__name__,
           "numpy_2_only_names": b"numpy._core" in raw,
           "ours_imported": sorted(m for m in sys.modules
                                   if m.split(".")[0] in ("ntu_pipeline", "cli", "model"))},
          open(out + ".json", "w"))
"""

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


def run_fresh(script: str, *args) -> None:
    """Run `script` in a fresh, isolated interpreter (no cwd on sys.path, no PYTHON* variables)."""
    result = subprocess.run([sys.executable, "-I", "-c", script, *map(str, args)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


# --- stores ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory) -> Path:
    """41 synthetic samples in shards of 8: one failed, one on the missing-skeleton list; xsub stored
    with keep_missing (so the missing sample is exported), xview left to be computed."""
    root = tmp_path_factory.mktemp("export_synth")
    raw = root / "raw"
    write_corpus(raw, 40, 6, seed=1)
    files = sorted(raw.rglob("*.skeleton"))
    shutil.copy(files[5], raw / f"{MISSING_NAME}.skeleton")
    lines = files[3].read_text().splitlines(keepends=True)
    files[3].write_text("".join(lines[: len(lines) // 2]))  # ends early: failed
    out = root / "s.zarr"
    extract(ExtractConfig(skeletons=raw, out=out, dataset="ntu60", shard_size=8, progress=False))
    make_split(open_store(out, mode="r+"), "xsub", keep_missing=True)
    return out


@pytest.fixture(scope="module")
def real_store(ntu_samples, tmp_path_factory) -> Path:
    """The 16 real samples as an ntu60 store (two shards), no split stored."""
    out = tmp_path_factory.mktemp("export_real") / "real.zarr"
    extract(ExtractConfig(skeletons=ntu_samples / "skeletons", out=out, dataset="ntu60", shard_size=8,
                          progress=False))
    return out


@pytest.fixture(scope="module")
def real_store_120(ntu_samples, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export_real120") / "real120.zarr"
    extract(ExtractConfig(skeletons=ntu_samples / "skeletons", out=out, dataset="ntu120", shard_size=8,
                          progress=False))
    return out


@pytest.fixture(params=["synth", "real"])
def store(request) -> Path:
    return request.getfixturevalue(f"{request.param}_store")


def table(path: Path) -> tuple[zarr.Group, list[str], np.ndarray, np.ndarray, np.ndarray]:
    group = open_store(path)
    return (group, read_strings(group["samples/name"]), group["samples/label"][:],
            group["samples/num_frames"][:], group["samples/status"][:])


def split_of(group: zarr.Group, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """The samples of a split an export holds: its members with a usable skeleton (a split is membership;
    failed samples are in it, and left out of every export)."""
    if protocol in group["splits"]:
        train, test = group[f"splits/{protocol}/train"][:], group[f"splits/{protocol}/test"][:]
        keep = bool(group[f"splits/{protocol}"].attrs["keep_missing"])
    else:
        result = compute_split(group, protocol)
        train, test, keep = result.train, result.test, False
    return tuple(usable_samples(group, half, ("skeleton",), keep)[0] for half in (train, test))


# --- PYSKL ----------------------------------------------------------------------------------------------


def expected_keypoint(joints: np.ndarray) -> np.ndarray:
    """ntu_preproc.py's gen_keypoint_array on the store's actors: (M, T, 25, 3) float16."""
    keypoint = joints.transpose(1, 0, 2, 3)  # (2, T, 25, 3)
    if not keypoint[1].any():
        return keypoint[:1].astype(np.float16)
    if np.abs(keypoint[0, 0, 1]).sum() < 1e-3 and np.abs(keypoint[1, 0, 1]).sum() > 1e-3:
        keypoint = keypoint[::-1]
    return keypoint.astype(np.float16)


def test_pyskl_pickle_loads_without_ntu_prep_and_equals_the_store(store, tmp_path):
    out = tmp_path / "ntu60_3danno.pkl"
    summary = write_pyskl(ExportConfig(store=store, out=out, format="pyskl", progress=False))
    run_fresh(PICKLE_READER, out, tmp_path / "read")
    read = json.loads((tmp_path / "read.json").read_text())
    keypoints = np.load(tmp_path / "read.npz")
    assert read["ours_imported"] == [] and not read["numpy_2_only_names"]  # NumPy 1.x loads it too
    assert read["keys"] == ["annotations", "meta", "split"] and read["annotations_type"] == "list"

    group, names, label, num_frames, status = table(store)
    assert sorted(read["split"]) == ["xsub_train", "xsub_val", "xview_train", "xview_val"]
    exported = set()
    for protocol in ("xsub", "xview"):
        train, test = split_of(group, protocol)
        assert read["split"][f"{protocol}_train"] == [names[i] for i in train]
        assert read["split"][f"{protocol}_val"] == [names[i] for i in test]
        exported |= set(train.tolist()) | set(test.tolist())
    expected_rows = sorted(exported)
    assert [row[0] for row in read["rows"]] == [names[i] for i in expected_rows]  # name order
    for row, i in zip(read["rows"], expected_rows, strict=True):
        name, lab, frames, lab_type, frames_type, kp_type, kp_dtype, writeable, keys = row
        assert keys == ["frame_dir", "keypoint", "label", "total_frames"]
        assert (lab, frames) == (int(label[i]), int(num_frames[i])) and frames > 0
        assert (lab_type, frames_type, kp_type, kp_dtype, writeable) == ("int", "int", "ndarray", "<f2", True)
        assert status[i] in (STATUS_CODES["ok"], STATUS_CODES["missing_skeleton"])
        joints = group["skeleton/joints"][i, :frames]
        np.testing.assert_array_equal(keypoints[name], expected_keypoint(joints), err_msg=name)
        assert keypoints[name].shape[1:] == (frames, 25, 3)

    meta = read["meta"]
    assert meta["source"] == str(store.resolve()) and meta["store_format"] == "ntu-prep/2"
    assert meta["ntu_prep_version"] == __version__ and meta["options"]["format"] == "pyskl"
    stored = "stored" if "xsub" in group["splits"] else "computed"
    assert meta["splits"]["xsub"]["source"] == stored and meta["splits"]["xview"]["source"] == "computed"
    assert summary.splits == {"xsub": stored, "xview": "computed"}
    assert "xview" not in open_store(store)["splits"]  # computed on the fly, never written


def test_pyskl_keeps_missing_samples_only_where_the_split_keeps_them(synth_store, tmp_path):
    out = tmp_path / "a.pkl"
    write_pyskl(ExportConfig(store=synth_store, out=out, format="pyskl", progress=False))
    data = pickle.loads(out.read_bytes())
    frame_dirs = [a["frame_dir"] for a in data["annotations"]]
    in_xsub = MISSING_NAME in data["split"]["xsub_train"] + data["split"]["xsub_val"]
    assert in_xsub and MISSING_NAME in frame_dirs  # the stored xsub split kept it
    assert MISSING_NAME not in data["split"]["xview_train"] + data["split"]["xview_val"]  # computed: excluded
    group, names, _, _, status = table(synth_store)
    failed = [names[i] for i in np.flatnonzero(status == STATUS_CODES["failed"])]
    assert len(failed) == 1 and failed[0] not in frame_dirs
    assert data["meta"]["splits"]["xsub"]["keep_missing"] is True

    only = tmp_path / "xview.pkl"
    write_pyskl(ExportConfig(store=synth_store, out=only, format="pyskl", protocols=("xview",),
                             progress=False))
    data = pickle.loads(only.read_bytes())
    assert sorted(data["split"]) == ["xview_train", "xview_val"] and MISSING_NAME not in [
        a["frame_dir"] for a in data["annotations"]]


def test_pyskl_pickle_streams_without_holding_the_annotations():
    """400 MB of annotations pickled through a sink: the pickler keeps none of them (no memo)."""
    import tracemalloc

    class Sink:
        written = 0

        def write(self, data):
            self.written += len(data)

    def annotations():
        for k in range(400):
            yield {"frame_dir": f"S001C001P001R001A{k % 60 + 1:03d}", "label": k % 60,
                   "keypoint": np.full((2, 1000, 25, 10), k, np.float16), "total_frames": 1000}  # 1 MB

    sink = Sink()
    tracemalloc.start()
    try:
        pyskl_module.dump_streaming({"split": {}, "annotations": annotations()}, sink)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sink.written > 400 * 10**6
    assert peak < 16 * 2**20, peak / 2**20


def test_pyskl_keypoint_follows_ntu_preproc():
    joints = np.zeros((4, 2, 25, 3), np.float32)
    joints[:, 0] = 1.5
    one = pyskl_keypoint(joints)
    assert one.shape == (1, 4, 25, 3) and one.dtype == np.float16  # slot 2 empty: M = 1
    joints[2:, 1] = 2.0
    assert pyskl_keypoint(joints).shape == (2, 4, 25, 3) and (pyskl_keypoint(joints)[0] == 1.5).all()
    joints[0, 0] = 0  # actor 1 absent in the first frame, actor 2 present there: swapped
    joints[0, 1] = 2.0
    swapped = pyskl_keypoint(joints)
    assert (swapped[0, 0] == 2.0).all() and (swapped[1, 0] == 0).all()


# --- CTR-GCN --------------------------------------------------------------------------------------------


def reference_sequence(joints: np.ndarray, ntu120: bool) -> np.ndarray:
    """CTR-GCN's seq_translation + align_frames, transcribed loop for loop, on one stored sample.

    joints: (n, 2, 25, 3), the frames kept. Returns (300, 150) float32.
    """
    ske = joints.reshape(len(joints), 150).copy()
    single = not ske[:, 75:].any()  # one actor left after denoising: a (n, 75) sequence there
    if single:
        ske = ske[:, :75]
    else:
        missing_1 = np.where(ske[:, :75].sum(axis=1) == 0)[0]
        missing_2 = np.where(ske[:, 75:].sum(axis=1) == 0)[0]
    i = 0
    while i < len(ske):
        if np.any(ske[i, :75] != 0):
            break
        i += 1
    origin = np.copy(ske[i, 3:6])
    for f in range(len(ske)):
        ske[f] -= np.tile(origin, 25 if single else 50)
    if not single:
        ske[missing_1, :75] = 0
        ske[missing_2, 75:] = 0
    aligned = np.zeros((300, 150), np.float32)
    if single:
        aligned[:len(ske)] = np.hstack((ske, ske) if ntu120 else (ske, np.zeros_like(ske)))
    else:
        aligned[:len(ske)] = ske
    return aligned


def ctrgcn_expected_order(names: list[str], indices: np.ndarray, protocol: str) -> list[str]:
    field = get_protocol(protocol).field
    return sorted((names[i] for i in indices), key=lambda n: (getattr(SampleId.parse(n), field), n))


def feeder_load(npz, split: str) -> tuple[np.ndarray, np.ndarray]:
    """What feeders/feeder_ntu.py's load_data does."""
    data = npz[f"x_{split}"]
    label = np.where(npz[f"y_{split}"] > 0)[1]
    n, t, _ = data.shape
    return data.reshape((n, t, 2, 25, 3)).transpose(0, 4, 1, 3, 2), label


@pytest.mark.parametrize("fixture,files", [("synth_store", ("NTU60_CS", "NTU60_CV")),
                                           ("real_store", ("NTU60_CS", "NTU60_CV")),
                                           ("real_store_120", ("NTU120_CSub", "NTU120_CSet"))])
def test_ctrgcn_npz_is_what_seq_transformation_writes(fixture, files, request, tmp_path):
    path = request.getfixturevalue(fixture)
    summary = write_ctrgcn(ExportConfig(store=path, out=tmp_path / "npz", format="ctrgcn", progress=False))
    assert sorted(p.name for p in (tmp_path / "npz").iterdir()) == sorted(f"{f}.npz" for f in files)
    assert list(summary.outputs) == [tmp_path / "npz" / f"{f}.npz" for f in files]
    group, names, label, num_frames, _ = table(path)
    ntu120 = group.attrs["dataset"] == "ntu120"
    classes = 120 if ntu120 else 60
    protocols = ("xsub120", "xset120") if ntu120 else ("xsub", "xview")
    for file, protocol in zip(files, protocols, strict=True):
        with zipfile.ZipFile(tmp_path / "npz" / f"{file}.npz") as archive:
            members = ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy", "meta.npy"]
            assert archive.namelist() == members
        npz = np.load(tmp_path / "npz" / f"{file}.npz")  # allow_pickle=False: nothing pickled
        halves = dict(zip(("train", "test"), split_of(group, protocol), strict=True))
        for half, indices in halves.items():
            order = ctrgcn_expected_order(names, indices, protocol)
            x, y = npz[f"x_{half}"], npz[f"y_{half}"]
            assert x.shape == (len(order), 300, 150) and x.dtype == np.float32
            assert y.shape == (len(order), classes) and y.dtype == np.float64
            assert (y.sum(axis=1) == 1).all()
            data, feeder_label = feeder_load(npz, half)
            assert data.shape == (len(order), 3, 300, 25, 2)
            np.testing.assert_array_equal(feeder_label, [label[names.index(n)] for n in order])
            for row, name in enumerate(order):
                i = names.index(name)
                joints = group["skeleton/joints"][i, :num_frames[i]]
                reference = reference_sequence(joints, ntu120)
                np.testing.assert_array_equal(x[row], reference, err_msg=name)
                assert x[row].tobytes() == reference.tobytes(), name  # bit for bit (no -0.0 either)
        meta = json.loads(str(npz["meta"]))
        assert meta["source"] == str(path.resolve()) and meta["protocol"] == protocol
        assert meta["store_format"] == "ntu-prep/2" and meta["ntu_prep_version"] == __version__


def test_ctrgcn_translation_on_real_two_person_samples_by_hand(real_store, tmp_path):
    write_ctrgcn(ExportConfig(store=real_store, out=tmp_path, format="ctrgcn", protocols=("xsub",),
                              progress=False))
    npz = np.load(tmp_path / "NTU60_CS.npz")
    group, names, _, num_frames, _ = table(real_store)
    train, test = split_of(group, "xsub")
    for name in TWO_PERSON_REAL:
        i = names.index(name)
        half = "train" if i in train else "test"
        row = ctrgcn_expected_order(names, train if half == "train" else test, "xsub").index(name)
        n = int(num_frames[i])
        joints = group["skeleton/joints"][i, :n]  # (n, 2, 25, 3)
        actor_1, actor_2 = joints[:, 0].any(axis=(1, 2)), joints[:, 1].any(axis=(1, 2))
        assert actor_2.any(), f"{name} should hold two actors"
        first = int(np.flatnonzero(actor_1)[0])
        origin = joints[first, 0, 1]  # spine middle of actor 1, first frame it is present
        x = npz[f"x_{half}"][row].reshape(300, 2, 25, 3)
        for f in (0, n // 2, n - 1):
            for m, present in ((0, actor_1), (1, actor_2)):
                want = joints[f, m] - origin if present[f] else np.zeros((25, 3), np.float32)
                np.testing.assert_array_equal(x[f, m], want, err_msg=f"{name} frame {f} actor {m}")
        assert not x[n:].any()
        np.testing.assert_array_equal(x[first, 0, 1], 0)  # the origin itself


def test_ctrgcn_rows_copy_a_single_actor_only_for_ntu120():
    joints = np.zeros((1, 5, 2, 25, 3), np.float32)
    joints[0, 1:4, 0] = np.arange(75, dtype=np.float32).reshape(25, 3) + 1
    zero = ctrgcn_rows(joints, duplicate_single=False).reshape(1, 5, 2, 25, 3)
    copied = ctrgcn_rows(joints, duplicate_single=True).reshape(1, 5, 2, 25, 3)
    assert not zero[0, :, 1].any()
    np.testing.assert_array_equal(copied[0, :, 1], copied[0, :, 0])
    np.testing.assert_array_equal(zero[0, 1, 0, 1], 0)  # origin: joint 1 of frame 1, actor 1's first
    assert not zero[0, 0].any() and not zero[0, 4].any()  # absent frames stay zero


def test_read_runs_stay_in_one_shard_and_consecutive():
    indices = np.array([0, 1, 2, 3, 9, 10, 11, 12, 5, 6, 7])
    runs = list(read_runs(indices, shard_size=4, max_rows=3))
    assert runs == [(0, 3), (3, 4), (4, 7), (7, 8), (8, 11)]
    for start, stop in runs:
        chunk = indices[start:stop]
        assert (np.diff(chunk) == 1).all() and len(set(chunk // 4)) == 1


# --- HDF5 -----------------------------------------------------------------------------------------------


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


def zarr_arrays(group: zarr.Group, prefix: str = "") -> dict[str, zarr.Array]:
    out = {f"{prefix}{name}": array for name, array in group.arrays()}
    for name, sub in group.groups():
        out.update(zarr_arrays(sub, f"{prefix}{name}/"))
    return out


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


# --- outputs, errors and the command line ---------------------------------------------------------------


def test_a_failed_export_leaves_no_file_and_keeps_the_old_one(synth_store, tmp_path, monkeypatch):
    out = tmp_path / "a.pkl"
    out.write_bytes(b"earlier export")
    calls = []

    def failing(joints):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        return pyskl_keypoint(joints)

    monkeypatch.setattr(pyskl_module, "pyskl_keypoint", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_pyskl(ExportConfig(store=synth_store, out=out, format="pyskl", overwrite=True, progress=False))
    assert out.read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pkl"]  # no partial file left


def test_cli_exports_each_format(synth_store, tmp_path):
    runner = CliRunner()
    store = str(synth_store)
    result = runner.invoke(main, ["export", store, "--format", "pyskl", "-o", str(tmp_path / "a.pkl"),
                                  "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'a.pkl'}" in result.output and "split xview: not in the store" in result.output
    result = runner.invoke(main, ["export", store, "--format", "ctrgcn", "-o", str(tmp_path / "ctr"),
                                  "--protocol", "xview", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ctr" / "NTU60_CV.npz").is_file() and not (tmp_path / "ctr" / "NTU60_CS.npz").exists()
    result = runner.invoke(main, ["export", store, "--format", "hdf5", "-o", str(tmp_path / "s.h5"),
                                  "--no-rgb", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.h5").is_file()


def one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, ["export", *args, "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    return result.output


def test_cli_refuses_with_one_line_messages(synth_store, tmp_path):
    existing = tmp_path / "a.pkl"
    existing.write_bytes(b"keep me")
    assert "already exists (--overwrite replaces it)" in one_line_error(
        [str(synth_store), "--format", "pyskl", "-o", str(existing)])
    assert existing.read_bytes() == b"keep me"
    assert "protocol xsub120 is defined on ntu120; this store holds ntu60" in one_line_error(
        [str(synth_store), "--format", "pyskl", "-o", str(tmp_path / "b.pkl"), "--protocol", "xsub120"])
    assert "--no-rgb applies to --format hdf5 only" in one_line_error(
        [str(synth_store), "--format", "ctrgcn", "-o", str(tmp_path / "c"), "--no-rgb"])
    assert "--protocol does not apply to --format hdf5" in one_line_error(
        [str(synth_store), "--format", "hdf5", "-o", str(tmp_path / "d.h5"), "--protocol", "xsub"])
    (tmp_path / "npz").mkdir()
    (tmp_path / "npz" / "NTU60_CV.npz").write_bytes(b"keep me")
    assert "NTU60_CV.npz: already exists" in one_line_error(
        [str(synth_store), "--format", "ctrgcn", "-o", str(tmp_path / "npz")])
    assert not (tmp_path / "npz" / "NTU60_CS.npz").exists()  # refused before writing any file
    assert "is a file; --format ctrgcn writes a folder" in one_line_error(
        [str(synth_store), "--format", "ctrgcn", "-o", str(existing)])
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.partial"))


def test_cli_refuses_incomplete_and_empty_stores(synth_store, tmp_path):
    incomplete = tmp_path / "incomplete.zarr"
    shutil.copytree(synth_store, incomplete)
    zarr.open_group(str(incomplete), mode="r+").attrs["state"] = "extracting"
    assert "the store is not complete (state 'extracting')" in one_line_error(
        [str(incomplete), "--format", "hdf5", "-o", str(tmp_path / "a.h5")])

    empty = tmp_path / "empty.zarr"
    shutil.copytree(synth_store, empty)
    group = zarr.open_group(str(empty), mode="r+")
    group["samples/status"][:] = STATUS_CODES["failed"]
    del group["splits/xsub"]
    message = one_line_error([str(empty), "--format", "pyskl", "-o", str(tmp_path / "a.pkl")])
    assert "has skeleton data" in message and "nothing to export" in message
    message = one_line_error([str(empty), "--format", "ctrgcn", "-o", str(tmp_path / "c")])
    assert "nothing to export" in message
    assert not (tmp_path / "a.pkl").exists()


# --- memory ---------------------------------------------------------------------------------------------

MEMORY_PROBE = """
import json, re, sys, time, tracemalloc
from pathlib import Path
from ntu_pipeline.export.common import ExportConfig
from ntu_pipeline.export.ctrgcn import write_ctrgcn
from ntu_pipeline.export.hdf5 import write_hdf5
from ntu_pipeline.export.pyskl import write_pyskl
from ntu_pipeline.store import open_store

def status_kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))

store, fmt, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
open_store(store)["skeleton/joints"][0:1]  # zarr's codecs and thread pools loaded before the baseline
tracemalloc.start()
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before = status_kib("VmRSS")
started = time.perf_counter()
writer = {"pyskl": write_pyskl, "ctrgcn": write_ctrgcn, "hdf5": write_hdf5}[fmt]
writer(ExportConfig(store=store, out=out, format=fmt, progress=False))
seconds = time.perf_counter() - started
print(json.dumps({"before_kib": before, "peak_kib": status_kib("VmHWM"), "seconds": seconds,
                  "traced_peak": tracemalloc.get_traced_memory()[1]}))
"""

# Bounds for an export of a store of 32-sample shards (a joints shard decodes to 5.5 MB), whatever the number
# of samples. Traced: what Python and NumPy allocate at the peak (measured 22-26 MiB: zarr's read of a shard
# holds about 3x its decoded size, plus one block of output). RSS: the process's peak growth (measured 45-70
# MiB; glibc keeps per-thread arenas of zarr's reader threads). bench/export_memory.py shows both flat from
# 1,000 to 4,000 samples.
TRACED_BOUND_MIB = 40
RSS_BOUND_MIB = 128


def replicated_corpus(files: list[Path], out: Path, count: int) -> None:
    """`count` .skeleton files under distinct NTU60 names, hard links to (or copies of) `files`."""
    out.mkdir(parents=True)
    for k in range(count):
        a, r, c, p, s = k % 60, (k // 60) % 2, (k // 120) % 3, (k // 360) % 40, k // 14400
        target = out / f"S{s + 1:03d}C{c + 1:03d}P{p + 1:03d}R{r + 1:03d}A{a + 1:03d}.skeleton"
        try:
            os.link(files[k % len(files)], target)
        except OSError:
            shutil.copy(files[k % len(files)], target)


@pytest.mark.slow
def test_exports_stay_within_a_memory_bound_independent_of_the_number_of_samples(tmp_path):
    """2,000 samples in shards of 32: each export allocates at most TRACED_BOUND_MIB at its peak and grows
    the process by less than RSS_BOUND_MIB, while holding its output would take more than that (printed:
    about 60 MiB of pyskl keypoints, 250 MiB of ctrgcn x_train, 950 MiB of store arrays for hdf5)."""
    write_corpus(tmp_path / "base", 60, 60, seed=2)
    longest = sorted((tmp_path / "base").rglob("*.skeleton"), key=lambda p: p.stat().st_size)[-10:]
    replicated_corpus(longest, tmp_path / "raw", 2000)  # long two-person samples: a large pickle
    store = tmp_path / "big.zarr"
    extract(ExtractConfig(skeletons=tmp_path / "raw", out=store, dataset="ntu60", shard_size=32,
                          progress=False))
    group = open_store(store)
    assert group["samples/name"].shape[0] == 2000
    outputs = {"pyskl": tmp_path / "a.pkl", "ctrgcn": tmp_path / "npz", "hdf5": tmp_path / "a.h5"}
    for fmt, out in outputs.items():
        result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(store), fmt, str(out)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        rss_mib = (probe["peak_kib"] - probe["before_kib"]) / 1024
        traced_mib = probe["traced_peak"] / 2**20
        if fmt == "pyskl":
            in_memory = sum(a["keypoint"].nbytes for a in pickle.loads(out.read_bytes())["annotations"])
        elif fmt == "ctrgcn":
            in_memory = max(300 * 150 * 4 * len(np.load(path)["y_train"]) for path in out.iterdir())
        else:
            in_memory = sum(a.nbytes for a in zarr_arrays(group).values())
        print(f"{fmt}: allocated at most {traced_mib:.1f} MiB, peak RSS +{rss_mib:.1f} MiB over "
              f"{probe['before_kib'] / 1024:.0f} MiB; holding its output would take "
              f"{in_memory / 2**20:.0f} MiB; {probe['seconds']:.1f} s")
        assert traced_mib < TRACED_BOUND_MIB and rss_mib < RSS_BOUND_MIB, (fmt, traced_mib, rss_mib)
        assert in_memory / 2**20 > TRACED_BOUND_MIB, (fmt, in_memory)  # so the bound says something
