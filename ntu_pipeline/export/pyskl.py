"""Export a store to the pickle PYSKL's `PoseDataset` reads for NTU RGB+D 3D skeletons (`ntu60_3danno.pkl`).

Usage:
    ntu-prep export ntu60.zarr --format pyskl -o ntu60_3danno.pkl [--protocol xsub --protocol xview]
    write_pyskl(ExportConfig(store=Path("ntu60.zarr"), out=Path("ntu60_3danno.pkl"), format="pyskl"))

The file is the layout PYSKL's own `tools/data/ntu_preproc.py` dumps (kennymckormick/pyskl) and its
`pyskl/datasets/pose_dataset.py` loads:

    {"split": {"xsub_train": [names], "xsub_val": [names], "xview_train": ..., "xview_val": ...},
     "annotations": [{"frame_dir": name, "label": int (0-based), "keypoint": (M, T, 25, 3) float16,
                      "total_frames": T}, ...],
     "meta": {...}}                               # ours: the store it came from, versions, options, splits

- Split names are PYSKL's: NTU60 `xsub_*`, `xview_*`; NTU120 `xsub_*`, `xset_*` (our protocols xsub,
  xview, xsub120, xset120); `val` is the protocol's test half. Names and annotations are in name order.
- `keypoint` holds raw camera coordinates in metres (PYSKL's PreNormalize3D centres and aligns them at
  load time), the store's frames kept (frames with no actor are already dropped).
- M is 2 when the store's actor slot 2 holds anyone in any frame, else 1. As in ntu_preproc.py, the
  two actors are swapped when actor 1's spine-middle joint is empty in the first frame and actor 2's is not.
- Annotations: every sample of the exported splits whose skeleton status is ok (and missing_skeleton
  ones where a stored split kept them) and that has frames; the others are listed in meta["left_out"].

Differences from ntu_preproc.py come from the store's actors (`skeleton/actors.py`: CTR-GCN's
denoising, which ntu_preproc.py follows closely but not exactly): a body that disappears and comes back
keeps its true frames (PYSKL packs its rows contiguously); frames with no kept actor are dropped wherever
they are (PYSKL trims them only at the ends, so a frame with only a noise body stays there as zeros); and
M is 1 when denoising kept several bodies but none in slot 2 (PYSKL writes an all-zero second actor).

The pickle streams: annotations are written as they are read, shard by shard, so memory stays bounded by a
shard however many samples there are. Arrays are pickled as `numpy.ndarray(shape, dtype, bytearray)`,
which NumPy 1.x and 2.x both load (NumPy 2's own ndarray pickles name `numpy._core`, which 1.x lacks,
and PYSKL environments run 1.x); the file needs nothing of ntu-prep to load.
"""

from __future__ import annotations

import pickle
import time
import types
from collections.abc import Iterator

import numpy as np

from ..errors import NTUPrepError
from ..progress import ProgressBar
from ..skeleton.normalize import SPINE_MID
from .common import (
    SKELETON,
    ExportConfig,
    ExportSummary,
    SampleTable,
    atomic_output,
    export_record,
    open_for_export,
    read_blocks,
    resolve_splits,
)

SPLIT_PREFIX = {"xsub": "xsub", "xview": "xview", "xsub120": "xsub", "xset120": "xset"}
EPS = 1e-3  # ntu_preproc.py's threshold for an empty joint
PICKLE_PROTOCOL = 4  # Python >= 3.4; framed, so the C pickler writes the file as it goes


def pyskl_keypoint(joints: np.ndarray) -> np.ndarray:
    """One sample's PYSKL keypoint from its stored joints.

    joints: (T, 2, 25, 3) float32, the frames kept. Returns (M, T, 25, 3) float16, M = 1 or 2.
    """
    present = np.any(joints != 0, axis=(2, 3))  # (T, 2)
    keypoint = joints.transpose(1, 0, 2, 3)  # (2, T, 25, 3)
    if not present[:, 1].any():
        return keypoint[:1].astype(np.float16)  # (1, T, 25, 3)
    first = np.abs(keypoint[:, 0, SPINE_MID]).sum(axis=-1)  # (2,)
    if first[0] < EPS and first[1] > EPS:
        keypoint = keypoint[::-1]
    return keypoint.astype(np.float16)


class _PortablePickler(pickle.Pickler):
    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            # numpy.ndarray(shape, dtype, buffer): the same names in NumPy 1.x and 2.x; writeable on load
            return np.ndarray, (obj.shape, obj.dtype.str, bytearray(np.ascontiguousarray(obj).tobytes()))
        if isinstance(obj, types.GeneratorType):
            return list, (), None, obj  # written item by item as it yields, loaded as a plain list
        return NotImplemented


def dump_streaming(obj: dict, file) -> None:
    """Pickle `obj`, in which generators stand for lists, without keeping what was written in memory.

    file: anything with a write(bytes) method.
    """
    pickler = _PortablePickler(file, protocol=PICKLE_PROTOCOL)
    pickler.fast = True  # no memo: it would hold every annotation until the end (nothing here repeats)
    pickler.dump(obj)


def write_pyskl(config: ExportConfig) -> ExportSummary:
    """Write the PYSKL pickle of `config.store` to `config.out`; see the module docstring."""
    started = time.monotonic()
    group = open_for_export(config.store, SKELETON)
    splits = resolve_splits(group, config.protocols, SKELETON)
    table = SampleTable.read(group)

    wanted = np.unique(np.concatenate([np.concatenate([s.train, s.test]) for s in splits]))
    indices, left_out = table.exportable(wanted)
    if len(indices) == 0:
        raise NTUPrepError(f"{config.store}: no sample of the splits {', '.join(s.protocol for s in splits)} "
                           "has skeleton data (status ok, with frames): nothing to export")
    keep = np.zeros(len(table.names), bool)
    keep[indices] = True
    split = {}
    for s in splits:
        prefix = SPLIT_PREFIX[s.protocol]
        split[f"{prefix}_train"] = [table.names[i] for i in s.train if keep[i]]
        split[f"{prefix}_val"] = [table.names[i] for i in s.test if keep[i]]

    joints = group["skeleton/joints"]

    def annotations() -> Iterator[dict]:
        with ProgressBar(len(indices), "samples", "export pyskl", enabled=config.progress) as bar:
            for positions, block in read_blocks(joints, indices):
                for i, sample in zip(indices[positions], block, strict=True):
                    n = int(table.num_frames[i])
                    yield {"frame_dir": table.names[i], "label": int(table.label[i]),
                           "keypoint": pyskl_keypoint(sample[:n]), "total_frames": n}
                bar.advance(len(block))

    meta = export_record(group, config, splits, left_out)
    with atomic_output(config.out, config.overwrite) as tmp, open(tmp, "wb") as f:
        dump_streaming({"split": split, "annotations": annotations(), "meta": meta}, f)
    halves = ", ".join(f"{name} {len(names)}" for name, names in split.items())
    return ExportSummary("pyskl", {config.out: f"{len(indices)} annotations; split {halves}"},
                         {s.protocol: s.source for s in splits}, left_out, time.monotonic() - started)

