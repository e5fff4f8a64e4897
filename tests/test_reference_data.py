"""The reference models' clips (`ClipSpec` sampling, heatmaps, rgb_crop, rgb_norm, rotation, stream;
`clip_recipes.reference_clip`): their batches against each network and against the reference steps,
`NTUDataset` against `SplitData`, fixed test clips and drawn training ones.

The stores come from the real pipeline: `write_corpus(..., videos=True)` renders 16 synthetic samples,
`extract` makes one store with both stages (32 RGB frames of 48 x 48) and one with the skeletons alone.
Sizes are small (crop 32, heatmaps 16 or 8, PoseC3D's 8 frames); everything else is each recipe's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.data import default_collate

import model
from model import NTUDataset, rgb_to_model
from model.data import ctrgcn_sampling as ctr
from model.data import pyskl_sampling as ps
from model.data import split as D
from model.data.clip_heatmaps import COLOR_IMAGE
from model.data.clip_recipes import REFERENCE_CLIPS, reference_clip
from model.data.heatmaps import joint_heatmaps, tracking_scores
from model.data.sampling import FLIP, NUM_RANDOMS, clip_randoms
from model.data.transforms import (
    crop_points,
    interpolate_packed,
    mirror_skeleton,
    normalize_skeletons,
    to_heatmap_pixels,
    to_model_layout,
)
from ntu_pipeline.errors import ConfigError
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.schema import has_stage
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus
from ntu_pipeline.video.crop import project_to_crop

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: why one thread

SMALL = {  # each recipe at test sizes
    "posec3d": dict(frames=8, heatmap_size=16, heatmap_test_size=18),
    "slowonly": dict(crop=32),
    "rgbpose": dict(crop=32, heatmap_size=8),
    "ctrgcn": dict(),
}
STORE_OF = {"posec3d": "skeleton", "slowonly": "video", "rgbpose": "video", "ctrgcn": "skeleton"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """16 samples of 2 classes: "video" with both stages (32 RGB frames of 48 x 48), "skeleton" with the
    skeleton stage alone, each with the xsub split (8 training, 8 test samples)."""
    root = tmp_path_factory.mktemp("reference_data")
    write_corpus(root / "raw", 16, 2, seed=3, videos=True)
    out = {"video": root / "video.zarr", "skeleton": root / "skeleton.zarr"}
    extract(ExtractConfig(skeletons=root / "raw", videos=root / "raw", out=out["video"], dataset="ntu60",
                          shard_size=8, rgb_frames=32, rgb_size=48, rgb_shard_size=8, progress=False))
    extract(ExtractConfig(skeletons=root / "raw", out=out["skeleton"], dataset="ntu60", shard_size=8,
                          progress=False))
    for store in out.values():
        make_split(open_store(store, mode="r+"), "xsub")
    return out


def spec_of(name: str, **changes) -> D.ClipSpec:
    """The ClipSpec of reference model `name` at test sizes, its inputs the network's own."""
    takes = model.network_spec(name).takes
    return D.ClipSpec(skeleton=takes("skeleton"), rgb=takes("rgb"), heatmaps=takes("heatmaps"),
                      **{**reference_clip(name), **SMALL[name], **changes})


def split_data(store: Path, spec: D.ClipSpec, side: str, seed: int = 5) -> D.SplitData:
    return D.SplitData(D.read_split(store, "xsub", side, *spec.needs), spec, "cpu", seed=seed)


def dataset_of(store: Path, spec: D.ClipSpec, side: str, clip: int = 0, clips: int = 1,
               seed: int = 5) -> NTUDataset:
    """The NTUDataset whose items are `spec`'s batches: its inputs, and ClipSpec's fields by name."""
    inputs = (("skeleton", "motion") if spec.skeleton else ()) + (("rgb",) if spec.rgb else ()) \
        + (("heatmaps",) if spec.heatmaps else ())
    fields = ("frames", "crop", "flip", "normalize", "sampling", "heatmap_size", "heatmap_test_size",
              "heatmap_frames", "sigma", "rgb_crop", "rgb_norm", "rotation", "stream")
    return NTUDataset(store, "xsub", side, inputs=inputs, clip=clip, clips=clips, seed=seed,
                      heatmap_box=spec.heatmap_box if spec.heatmaps else None,
                      **{f: getattr(spec, f) for f in fields})


def batches_by_position(data: D.SplitData, epoch: int, train: bool, clip: int = 0, clips: int = 1,
                        batch: int = 4) -> dict[int, tuple]:
    """{split position: (rgb, skeleton, heatmaps, frames)} of every sample the epoch (or test clip) gives."""
    out = {}
    for b in data.batches(epoch, batch, train, clip=clip, clips=clips):
        for i, p in enumerate(b.positions.tolist()):
            out[p] = tuple(None if x is None else x[i] for x in (b.rgb, b.skeleton, b.heatmaps, b.frames))
    return out


# --- the recipes and what each network takes ----------------------------------------------------------

def test_each_recipe_is_a_valid_clip_for_its_network():
    """Catches a recipe that ClipSpec refuses with the network's own inputs, a recipe drifting from the
    reference's documented settings, and the project's own models losing their defaults."""
    for name in REFERENCE_CLIPS:
        takes = model.network_spec(name).takes
        spec = D.ClipSpec(skeleton=takes("skeleton"), rgb=takes("rgb"), heatmaps=takes("heatmaps"),
                          **reference_clip(name))
        assert spec.frames == {"posec3d": 48, "slowonly": 8, "rgbpose": 8, "ctrgcn": 64}[name]
    assert reference_clip("posec3d")["heatmap_test_size"] == 64 and reference_clip("rgbpose")["sigma"] == 0.7
    assert reference_clip("rgbpose")["heatmap_frames"] == 32 and reference_clip("ctrgcn")["rotation"] == 0.3
    for name in ("hcn", "i3d", "ccdfarm"):
        assert reference_clip(name) == {}
    recipe = reference_clip("ctrgcn")
    recipe["frames"] = 1  # a copy: the table itself stays
    assert reference_clip("ctrgcn")["frames"] == 64


@pytest.mark.parametrize("name", list(REFERENCE_CLIPS))
def test_one_batch_through_each_network(stores, name):
    """A training and a test batch of each recipe have the shapes its network takes (RGBPose: 4x the
    frames and a quarter of the side for the heatmaps), and a forward pass on each gives finite logits.
    Catches a batch field missing, a layout or a size the network refuses."""
    spec, inputs = spec_of(name), model.network_spec(name).inputs
    net = model.build(name, num_classes=60).eval()
    for side in ("train", "test"):
        batch = next(split_data(stores[STORE_OF[name]], spec, side).batches(0, 2, side == "train"))
        b, t = 2, spec.frames
        if spec.rgb:
            assert batch.rgb.shape == (b, 3, t, spec.crop, spec.crop) and batch.rgb.dtype == torch.float32
        if spec.heatmaps:
            at_test = side == "test" and spec.heatmap_box == "pose"  # PoseC3D tests on its whole box
            px = spec.heatmap_test_size if at_test else spec.heatmap_size
            assert batch.heatmaps.shape == (b, 25, spec.heatmap_frames or t, px, px)
            assert batch.heatmaps.amax() > 0.9  # the joints are drawn
        if spec.skeleton:
            assert batch.skeleton.shape == (b, 3, t, 25, 2) and batch.motion.shape == batch.skeleton.shape
        assert (batch.rgb is None, batch.skeleton is None, batch.heatmaps is None) == \
            (not spec.rgb, not spec.skeleton, not spec.heatmaps)
        with torch.no_grad():
            logits = net(**{key: getattr(batch, key) for key in inputs})["logits"]
        assert logits.shape == (b, 60) and torch.isfinite(logits).all()


# --- NTUDataset and SplitData --------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(REFERENCE_CLIPS))
def test_items_are_the_batches_of_each_recipe(stores, name):
    """Every item of NTUDataset, with the recipe's settings, equals the sample's clip in SplitData.batches
    bit for bit: two training epochs, the one-clip test and a clip of a 3-clip test; RGB through
    rgb_to_model with the recipe's norm. Catches the two paths drifting apart (a draw column, a frame
    rule, a box, the flip, the rotation or the stream taken differently)."""
    spec, store = spec_of(name), stores[STORE_OF[name]]
    table = open_store(store)["rgb/frame_index" if spec.rgb else "skeleton/frame_index"]
    compared = 0
    for side, epochs, clip, clips in (("train", (0, 1), 0, 1), ("test", (0,), 0, 1), ("test", (0,), 1, 3)):
        data, dataset = split_data(store, spec, side), dataset_of(store, spec, side, clip, clips)
        assert dataset.rgb_norm == spec.rgb_norm
        for epoch in epochs:
            dataset.set_epoch(epoch)
            for batch in data.batches(epoch, 4, side == "train", clip=clip, clips=clips):
                got = default_collate([dataset[p] for p in batch.positions.tolist()])
                assert torch.equal(got["label"], batch.labels)
                if spec.skeleton:
                    assert torch.equal(got["skeleton"], batch.skeleton), (side, epoch)
                    assert torch.equal(got["motion"], batch.motion)
                if spec.heatmaps:
                    assert torch.equal(got["heatmaps"], batch.heatmaps), (side, epoch)
                if spec.rgb:
                    rgb = rgb_to_model(got["rgb"], got["crop_box"], got["flip"], spec.crop, dataset.rgb_norm)
                    assert torch.equal(rgb, batch.rgb), (side, epoch)
                for b, p in enumerate(batch.positions.tolist()):
                    source = table[int(data.info.indices[p])][batch.frames[b].numpy()]
                    assert got["frame_index"][b].tolist() == source.tolist()
                compared += len(batch.labels)
    assert compared == 2 * 8 + 8 + 8


# --- fixed test clips, drawn training clips -------------------------------------------------------------

@pytest.mark.parametrize("name", list(REFERENCE_CLIPS))
def test_test_clips_are_fixed_and_training_draws_change_with_the_epoch(stores, name):
    """The test clips repeat whatever the epoch or seed, clip k of a multi-clip test is another clip
    (PYSKL's seeded draws; CTR-GCN tests one clip: all its clips are the centred crop), and every
    training epoch draws anew for each sample while the same epoch repeats."""
    spec, store = spec_of(name), stores[STORE_OF[name]]
    test = split_data(store, spec, "test")
    first = batches_by_position(test, 0, False)
    again = batches_by_position(split_data(store, spec, "test", seed=9), 7, False)  # another seed, epoch
    other = batches_by_position(test, 0, False, clip=1, clips=3)
    for p in first:
        assert all(x is None or torch.equal(x, y) for x, y in zip(first[p], again[p], strict=True))
    changed = sum(any(x is not None and not torch.equal(x, y)
                      for x, y in zip(first[p], other[p], strict=True)) for p in first)
    assert changed == (0 if name == "ctrgcn" else len(first))
    train = split_data(store, spec, "train")
    epoch0, epoch1 = batches_by_position(train, 0, True), batches_by_position(train, 1, True)
    repeated = batches_by_position(train, 0, True)
    common = set(epoch0) & set(epoch1)
    assert len(common) >= 4
    for p in common:
        assert any(x is not None and not torch.equal(x, y) for x, y in zip(epoch0[p], epoch1[p], strict=True))
        assert all(x is None or torch.equal(x, y) for x, y in zip(epoch0[p], repeated[p], strict=True))


# --- the clips against the reference steps --------------------------------------------------------------

def _pyskl_posec3d(xy: torch.Tensor, tracking: torch.Tensor, u: torch.Tensor | None, flip: bool,
                   size: int, test_size: int) -> torch.Tensor:
    """One sample's PoseC3D heatmaps (V, T, H, H), the pipeline as pyskl_sampling's docstring composes it:
    xy (T, M, V, 2) colour pixels at the clip's frames, tracking (T, M, V); u (CROP_DRAWS,) or None."""
    xy, valid = xy[None], xy.ne(0).any(-1)[None]
    box = ps.pose_compact_box(xy, valid, img_shape=(1080, 1920))
    if u is None:
        grid, side = ps.xy_to_grid(xy, valid, box, (test_size, test_size)), test_size
    else:
        h, w = ps.short_side_size(box[:, 3] - box[:, 1], box[:, 2] - box[:, 0], test_size)
        grid = ps.xy_to_grid(xy, valid, box, (h, w))
        crop = ps.random_resized_crop_box(h, w, uniforms=u[None])
        grid = ps.xy_to_grid(grid, valid, crop, (size, size))
        grid = ps.flip_xy(grid, size, torch.tensor([flip]))
        side = size
    score = tracking_scores(tracking)[None]
    return joint_heatmaps(grid.permute(0, 4, 1, 3, 2), score.permute(0, 1, 3, 2), (side, side))[0]


def test_posec3d_heatmaps_are_pyskls_pipeline_on_a_store_without_videos(stores):
    """PoseC3D's batches on a store without the RGB stage: each sample's heatmaps equal, bit for bit,
    the pyskl_sampling steps composed on that sample alone from the store's own rows (its 2D joints at
    the frames UniformSampleFrames draws from the epoch's uniforms, PoseCompact, Resize, RandomResizedCrop,
    Resize, Flip; the whole box at test size for each clip of a 3-clip test). Catches the frames, the box,
    the crop draws or the flip taken wrongly on the way to the device."""
    store = stores["skeleton"]
    group = open_store(store)
    assert not has_stage(group, "rgb")
    spec = spec_of("posec3d", flip=0.5)
    t, checked = spec.frames, 0
    for side, clip, clips in (("train", 0, 1), ("test", 0, 1), ("test", 2, 3)):
        data = split_data(store, spec, side)
        train = side == "train"
        u = clip_randoms(len(data), 5, 1, data.rule) if train else None
        frames_cols = slice(NUM_RANDOMS, NUM_RANDOMS + t + 3)  # the layout the rule promises
        crop_cols = slice(NUM_RANDOMS + t + 3, NUM_RANDOMS + t + 3 + ps.CROP_DRAWS)
        assert data.rule.draws == ({"frames": frames_cols, "pose_crop": crop_cols})
        for batch in data.batches(1, 4, train, clip=clip, clips=clips):
            for b, p in enumerate(batch.positions.tolist()):
                index, n = int(data.info.indices[p]), int(data.info.num_frames[p])
                count = torch.tensor([n])
                if train:
                    draws = u[p:p + 1, None, frames_cols]  # (1, 1, T + 3)
                    frames = ps.uniform_sample_frames(count, t, train=True, uniforms=draws)[0]
                else:
                    every = ps.uniform_sample_frames(count, t, clips, train=False)[0]
                    frames = every[clip * t:(clip + 1) * t]
                assert batch.frames[b].tolist() == frames.tolist()
                xy = torch.from_numpy(group["skeleton/color_xy"][index][frames.numpy()])
                tracking = torch.from_numpy(group["skeleton/tracking"][index][frames.numpy()])
                flip = bool(train and u[p, FLIP] < 0.5)
                want = _pyskl_posec3d(xy, tracking, u[p, crop_cols] if train else None, flip,
                                      spec.heatmap_size, spec.heatmap_test_size)
                assert torch.equal(batch.heatmaps[b], want), (side, p)
                checked += 1
    assert checked == 8 + 8 + 8


def test_rgbpose_heatmaps_lie_on_its_rgb_crop_at_the_stored_frames(stores):
    """RGBPose on a 32-frame store: the 32 heatmap frames are the 32 stored RGB frames (so the 8 RGB
    frames' instants are among them), and the maps are the joints of `project_to_crop` (the store's own
    projection) carried through the clip's crop box and flip (x -> crop - x, Kinect sides swapped) to a
    quarter of the crop. Catches the heatmaps cut by another box than the RGB's, unflipped, or at other
    instants than the stored frames'."""
    store = stores["video"]
    group = open_store(store)
    spec = spec_of("rgbpose")
    crop, size = spec.crop, spec.heatmap_size
    data = split_data(store, spec, "train")
    u = clip_randoms(len(data), 5, 0, data.rule)
    stored = torch.from_numpy(data.rgb_table.stored)
    assert (stored == 32).all()
    assert (data.rule.pose_positions(stored, u) == torch.arange(32)).all()  # every stored frame
    assert (data.rule.pose_positions(stored, None, 4, 10) == torch.arange(32)).all()
    boxes = data.rule.boxes(u, len(data))  # (n, 4) the RGB crops of epoch 0
    flips = data.rule.flips(u, len(data))
    assert flips.any() and not flips.all()
    for batch in data.batches(0, 4, train=True):
        for b, p in enumerate(batch.positions.tolist()):
            index, n = int(data.info.indices[p]), int(data.info.num_frames[p])
            kept = data.rgb_table.to_skeleton[p]  # (32,) the skeleton frame at each stored frame
            assert set(batch.frames[b].tolist()) <= set(range(32))
            color = group["skeleton/color_xy"][index][:max(n, 1)][np.maximum(kept, 0)]  # (32, M, V, 2)
            color[kept < 0] = 0
            tracking = group["skeleton/tracking"][index][:max(n, 1)][np.maximum(kept, 0)]
            tracking[kept < 0] = 0
            video_box, video_size = group["rgb/crop_box"][index], tuple(group["rgb/video_size"][index])
            points = project_to_crop(color, video_box, video_size, 48)  # (32, M, V, 2) in the stored crop
            in_crop = crop_points(torch.from_numpy(points).double()[None], boxes[p:p + 1],
                                  torch.zeros(1, dtype=torch.bool), 48, crop)
            layout = to_model_layout(in_crop)  # (1, 2, T, V, M)
            layout = mirror_skeleton(layout, flips[p:p + 1], width=float(crop))
            absent = layout.isnan().any(1)
            score = tracking_scores(torch.from_numpy(tracking)).permute(0, 2, 1)[None].masked_fill(absent, 0)
            grid = to_heatmap_pixels(layout.masked_fill(absent[:, None], 0.0), crop, size).float()
            want = joint_heatmaps(grid, score, (size, size), sigma=0.7)[0]
            assert torch.equal(batch.heatmaps[b], want), p


def _ctrgcn_seq_translation(joints: np.ndarray) -> np.ndarray:
    """CTR-GCN's data/ntu/seq_transformation.py seq_translation on one sample, transcribed: joints
    (T, 150) of two actors, minus actor 1's joint 2 in its first non-zero frame, missing actors back
    to zero."""
    ske = joints.copy()
    missing_1 = np.where(ske[:, :75].sum(axis=1) == 0)[0]
    missing_2 = np.where(ske[:, 75:].sum(axis=1) == 0)[0]
    i = 0
    while i < len(ske) and not np.any(ske[i, :75] != 0):
        i += 1
    origin = np.copy(ske[i, 3:6])
    ske -= np.tile(origin, 50)
    ske[missing_1, :75] = 0
    ske[missing_2, 75:] = 0
    return ske


@pytest.mark.parametrize("stream", ctr.STREAMS)
def test_ctrgcn_batches_are_its_feeder_on_its_preprocessing(stores, stream):
    """CTR-GCN's training and test batches equal its own steps on each sample: the store's joints
    translated as its preprocessing does (transcribed), then ctrgcn_sampling's valid_crop_resize (from
    the epoch's draws), random_rot and the stream. Catches another normalisation, the packed frames
    mixed otherwise than its interpolation (masked, or across samples), or the stream taken before the
    rotation."""
    store = stores["skeleton"]
    group = open_store(store)
    spec = spec_of("ctrgcn", stream=stream)
    for side in ("train", "test"):
        data = split_data(store, spec, side)
        train = side == "train"
        u = clip_randoms(len(data), 5, 2, data.rule) if train else None
        for batch in data.batches(2, 4, train):
            pos = batch.positions.numpy()
            rows = []
            for p in pos:
                joints = group["skeleton/joints"][int(data.info.indices[p])]  # (300, M, V, 3)
                flat = joints.reshape(300, 150)  # per frame: actor 1's 25 x (x, y, z), then actor 2's
                n = int(data.info.num_frames[p])
                flat[:n] = _ctrgcn_seq_translation(flat[:n])
                rows.append(flat.reshape(300, 2, 25, 3))
            x = to_model_layout(torch.from_numpy(np.stack(rows)))  # (B, 3, 300, 25, 2)
            count = torch.from_numpy(data.info.num_frames[pos])
            if train:
                x = ctr.valid_crop_resize(x, count, ctr.TRAIN_P_INTERVAL, 64, uniforms=u[pos, NUM_RANDOMS:9])
                x = ctr.random_rotation(x, 0.3, uniforms=u[pos, 9:12])
            else:
                x = ctr.valid_crop_resize(x, count, ctr.TEST_P_INTERVAL, 64)
            want = ctr.stream(x, stream)
            torch.testing.assert_close(batch.skeleton, want, rtol=0, atol=2e-6)
            if stream == "joint" and not train:
                assert torch.equal(batch.skeleton, want)  # no rotation: the same arithmetic, bit for bit


def test_spine_first_is_ctrgcns_translation(stores):
    """normalize "spine_first" on the store's joints equals CTR-GCN's seq_translation, transcribed."""
    group = open_store(stores["skeleton"])
    joints = group["skeleton/joints"][:8]
    got = normalize_skeletons(torch.from_numpy(joints), "spine_first").numpy()
    for i, n in enumerate(group["samples/num_frames"][:8]):
        want = _ctrgcn_seq_translation(joints[i, :n].reshape(n, 150)).reshape(n, 2, 25, 3)
        np.testing.assert_array_equal(got[i, :n], want)
    assert COLOR_IMAGE == (1080, 1920)


def test_imagenet_norm_is_pyskls_normalize(stores):
    """SlowOnly's RGB: the same crop as the [-1, 1] one, normalised by ImageNet's mean and std per
    channel (PYSKL's Normalize), and crops of 56-100% of the stored frame drawn by RandomResizedCrop."""
    spec = spec_of("slowonly")
    data = split_data(stores["video"], spec, "train")
    plain = split_data(stores["video"], dataclasses.replace(spec, rgb_norm="i3d"), "train")
    for mine, i3d in zip(data.batches(0, 4, True), plain.batches(0, 4, True), strict=True):
        want = ps.normalize_clips((i3d.rgb + 1) * 127.5, dim=1)
        torch.testing.assert_close(mine.rgb, want, rtol=0, atol=1e-4)
    boxes = data.rule.boxes(clip_randoms(len(data), 5, 0, data.rule), len(data))
    area = boxes[:, 2] * boxes[:, 3] / 48 ** 2
    assert (area >= 0.56 - 0.05).all() and (area <= 1).all() and (boxes == boxes.round()).all()


def test_crop_resize_mixes_packed_frames_as_ctrgcn_interpolates():
    """CTR-GCN's taps on packed samples of different lengths, an actor entering halfway: the same numbers
    as its valid_crop_resize on the dense (B, C, T, V, M) array, unmasked (the entering actor is mixed
    with zeros, as its F.interpolate does), never reading the next sample's frames."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([70, 130, 1])
    dense = torch.zeros(3, 130, 2, 25, 3)
    for i, n in enumerate(lengths.tolist()):
        dense[i, :n, 0] = torch.randn(n, 25, 3, generator=gen)
        dense[i, n // 2:n, 1] = torch.randn(n - n // 2, 25, 3, generator=gen)  # actor 2 enters
    packed = torch.cat([dense[i, :n] for i, n in enumerate(lengths.tolist())])  # (F, M, V, 3)
    starts = torch.cumsum(lengths, 0) - lengths
    for p_interval, u in ((ctr.TRAIN_P_INTERVAL, torch.rand(3, 2, generator=gen, dtype=torch.float64)),
                          (ctr.TEST_P_INTERVAL, None)):
        taps = ctr.crop_resize_taps(lengths, p_interval, 64, uniforms=u)
        got = to_model_layout(interpolate_packed(packed, starts, *taps))
        want = ctr.valid_crop_resize(to_model_layout(dense), lengths, p_interval, 64, uniforms=u)
        assert torch.equal(got, want)
        assert (taps[1] < lengths[:, None]).all()  # within each sample


class _HostData(TorchDispatchMode):
    """Records an op mixing a host tensor (not a 0-d scalar) into `meta` work: on CUDA, a copy that waits
    (tests/test_gpu_paths.py's watch, for the reference clips). Non-blocking copies pass, and so does
    whatever runs while `allowed` (the per-epoch tables `split._to_device` sends)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.allowed = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        non_blocking = kwargs.get("non_blocking", False) or (
            func is torch.ops.aten.copy_.default and len(args) > 2 and args[2])
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        host = any(t.device.type == "cpu" and t.dim() > 0 for t in tensors)
        if host and not (self.allowed or non_blocking) and any(t.device.type == "meta" for t in tensors):
            self.found.append(str(func))
        return out


@pytest.mark.parametrize("name", list(REFERENCE_CLIPS))
def test_reference_batches_are_made_on_the_device_without_waiting(stores, name, monkeypatch):
    """Each recipe's training and multi-clip test batches on the `meta` device (a GPU's stand-in: no
    value to read back, no host tensor mixed in): the heatmaps, crops, rotations and streams are made
    there from the resident tables, and nothing is copied from the host but the per-epoch tables."""
    spec = spec_of(name, stream="bone_motion") if name == "ctrgcn" else spec_of(name)
    store = stores[STORE_OF[name]]
    watch = _HostData()
    to_device = D._to_device

    def per_epoch(array, device):
        watch.allowed = True
        try:
            return to_device(array, device)
        finally:
            watch.allowed = False

    def watched(make):  # torch.tensor(data, device=...) copies without passing the dispatcher
        def made(*args, **kwargs):
            tensor = make(*args, **kwargs)
            if tensor.device.type == "meta" and not watch.allowed:
                watch.found.append(f"{make.__name__} made from host data")
            return tensor
        return made

    sides = (("train", 0, 1), ("test", 1, 3))
    datas = [D.SplitData(D.read_split(store, "xsub", side, *spec.needs), spec, "meta", seed=1)
             for side, _, _ in sides]  # resident tables made first: copies allowed there
    monkeypatch.setattr(D, "_to_device", per_epoch)
    for factory in ("tensor", "as_tensor"):
        monkeypatch.setattr(torch, factory, watched(getattr(torch, factory)))
    for data, (side, clip, clips) in zip(datas, sides, strict=True):
        with watch:
            made = list(data.batches(0, 4, side == "train", clip=clip, clips=clips))
        assert made and all(b.labels.device.type == "meta" for b in made)
        assert all(x.device.type == "meta" for b in made for x in (b.rgb, b.skeleton, b.heatmaps)
                   if x is not None)
    assert watch.found == []


# --- refusals --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, says", [
    (dict(sampling="crop_resize", rgb=True), "crop_resize"),
    (dict(sampling="crop_resize", skeleton=False, heatmaps=True), "crop_resize"),
    (dict(heatmaps=True), "sampling='uniform'"),
    (dict(heatmaps=True, sampling="uniform", heatmap_box="rgb"), "needs rgb"),
    (dict(rgb_crop="resized"), "needs rgb"),
    (dict(rgb_norm="imagenet"), "needs rgb"),
    (dict(skeleton=False, rgb=True, rotation=0.3), "needs skeleton"),
    (dict(skeleton=False, rgb=True, stream="bone"), "needs skeleton"),
    (dict(stream="velocity"), "stream must be one of"),
    (dict(sampling="random"), "sampling must be one of"),
    (dict(heatmap_frames=16), "heatmap_frames"),
    (dict(skeleton=False, heatmaps=True, sampling="uniform", sigma=0), "sigma > 0"),
    (dict(skeleton=False), "needs the skeleton"),
])
def test_combinations_the_inputs_cannot_take_are_refused_in_one_line(bad, says):
    with pytest.raises(ConfigError, match=says) as err:
        D.ClipSpec(**bad)
    assert "\n" not in str(err.value)


def test_heatmaps_need_the_skeletons_read_and_the_dataset_its_heatmaps_input(stores):
    """SplitData refuses heatmaps from a split read without the skeleton stage; NTUDataset refuses a
    heatmap_box beside the RGB-crop pose inputs."""
    spec = spec_of("rgbpose")
    info = D.read_split(stores["video"], "xsub", "train", need_rgb=True, need_skeleton=False)
    with pytest.raises(ConfigError, match="need_skeleton=True"):
        D.SplitData(info, spec, "cpu")
    with pytest.raises(ConfigError, match="heatmap_box"):
        NTUDataset(stores["video"], "xsub", "train", inputs=("heatmaps", "joints_2d"), heatmap_box="pose",
                   sampling="uniform")
