"""`ntu-prep export` to PYSKL pickles and CTR-GCN npz files, read back as PYSKL and CTR-GCN read them."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from exports import MISSING_NAME, run_fresh

from ntu_pipeline import __version__
from ntu_pipeline.export import pyskl as pyskl_module
from ntu_pipeline.export.common import ExportConfig, read_runs
from ntu_pipeline.export.ctrgcn import ctrgcn_rows, write_ctrgcn
from ntu_pipeline.export.pyskl import pyskl_keypoint, write_pyskl
from ntu_pipeline.manifests import get_protocol
from ntu_pipeline.sample_id import SampleId
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import STATUS_CODES, open_store, read_strings
from ntu_pipeline.store.splits import compute_split, usable_samples

TWO_PERSON_REAL = ("S001C001P001R001A050", "S017C003P020R002A054", "S017C003P020R002A055",
                   "S017C003P020R002A056", "S017C003P020R002A057", "S017C003P020R002A058")

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


# --- stores ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_store_120(ntu_samples, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export_real120") / "real120.zarr"
    extract(ExtractConfig(skeletons=ntu_samples / "skeletons", out=out, dataset="ntu120", shard_size=8,
                          progress=False))
    return out


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

