"""`NTUDataset`, the public dataset: its items against `ntu-train`'s batches, the rendered videos, workers,
samplers and epochs.

The stores come from the real pipeline: `write_corpus(..., videos=True)` renders each synthetic sample's
`_rgb.avi` (classes 0 and 1 hold a red or a blue ball in the right hand), `extract` runs both stages;
one video is deleted first, so one sample's RGB is absent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from model import NTUDataset, rgb_to_model
from model.data import split as D
from model.data.heatmaps import joint_heatmaps
from model.data.sampling import ClipRule
from model.data.transforms import to_heatmap_pixels
from model.predict.recordings import first_clip_frames
from ntu_pipeline.errors import ConfigError, StoreFormatError
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: why one thread

# Kinect v2 joints (0-based): the hands and hand tips.
HAND_LEFT, HAND_TIP_LEFT, HAND_RIGHT, HAND_TIP_RIGHT = 7, 21, 11, 23


@pytest.fixture(scope="module")
def video_stores(tmp_path_factory) -> dict[str, Path]:
    """24 samples of 3 classes, one video deleted: "fixed" 32 frames of 40 x 40, "all" every frame at
    24 x 24 (`--frames all`)."""
    root = tmp_path_factory.mktemp("dataset")
    raw = root / "raw"
    write_corpus(raw, 24, 3, seed=1, videos=True)
    sorted(raw.rglob("*_rgb.avi"))[5].unlink()
    stores = {}
    for name, frames, size in (("fixed", 32, 40), ("all", None, 24)):
        stores[name] = root / f"{name}.zarr"
        extract(ExtractConfig(skeletons=raw, videos=raw, out=stores[name], dataset="ntu60", shard_size=8,
                              rgb_frames=frames, rgb_size=size, rgb_shard_size=8, progress=False))
        make_split(open_store(stores[name], mode="r+"), "xsub")
    return stores


def _collate(dataset: NTUDataset, positions: list[int]) -> dict:
    return default_collate([dataset[p] for p in positions])


def assert_items_are_ntu_train_batches(store: Path, side: str, inputs: tuple[str, ...], spec: D.ClipSpec,
                                       clip: int = 0, clips: int = 1, preload: bool = False) -> int:
    """Every item of the side (each training epoch of 0 and 1, or test clip `clip` of `clips`) against
    the sample's clip in SplitData.batches: skeleton, motion, label bit for bit, RGB once through
    rgb_to_model, frame_index the source frames of Batch.frames. Returns the items compared."""
    dataset = NTUDataset(store, "xsub", side, inputs=inputs, frames=spec.frames, crop=spec.crop, clip=clip,
                         clips=clips, flip=spec.flip, normalize=spec.normalize, seed=5, preload=preload)
    info = D.read_split(store, "xsub", side, need_rgb=spec.rgb, need_skeleton=spec.skeleton)
    data = D.SplitData(info, spec, "cpu", seed=5)
    group = open_store(store)
    table = group["rgb/frame_index"] if spec.rgb else group["skeleton/frame_index"]
    compared = 0
    for epoch in (0, 1) if side == "train" else (0,):
        dataset.set_epoch(epoch)
        for batch in data.batches(epoch, 8, train=side == "train", clip=clip, clips=clips):
            got = _collate(dataset, batch.positions.tolist())
            assert torch.equal(got["label"], batch.labels)
            if spec.skeleton:
                assert torch.equal(got["skeleton"], batch.skeleton), (epoch, batch.positions)
                assert torch.equal(got["motion"], batch.motion)
            if spec.rgb:
                rgb = rgb_to_model(got["rgb"], got["crop_box"], got["flip"], spec.crop)
                assert torch.equal(rgb, batch.rgb), (epoch, batch.positions)
            for b, p in enumerate(batch.positions.tolist()):
                source = table[int(info.indices[p])][batch.frames[b].numpy()]
                assert got["frame_index"][b].tolist() == source.tolist()
            compared += len(batch.labels)
    return compared


def test_skeleton_items_are_ntu_trains_clips(skeleton_store):
    """Catches the dataset drifting from ntu-train's skeleton path: normalisation, the training window
    and flip of each epoch, the centred test window, the multi-clip segments, motion; read per item or
    preloaded."""
    spec = D.ClipSpec(frames=16)
    inputs = ("skeleton", "motion")
    train = assert_items_are_ntu_train_batches(skeleton_store, "train", inputs, spec)
    assert train == 2 * 112  # two epochs of 119 // 8 batches of 8
    assert assert_items_are_ntu_train_batches(skeleton_store, "test", inputs, spec) == 120
    assert assert_items_are_ntu_train_batches(skeleton_store, "test", inputs, spec, clip=2, clips=3) == 120
    spine = D.ClipSpec(frames=16, normalize="spine", flip=1.0)
    assert_items_are_ntu_train_batches(skeleton_store, "train", inputs, spine, preload=True)


# CTR-GCN's `ntu_pairs` (feeders/bone_pairs.py), 1-based (joint, parent), transcribed: its bone stream
# is `bone[:, :, :, v1 - 1] = joint[:, :, :, v1 - 1] - joint[:, :, :, v2 - 1]` over these pairs.
CTRGCN_NTU_PAIRS = ((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                    (20, 19), (22, 23), (21, 21), (23, 8), (24, 25), (25, 12))


def test_bones_are_ctrgcns_bone_stream(skeleton_store):
    """Catches a wrong parent table or bones taken before the flip (they must be the flipped skeleton's)."""
    dataset = NTUDataset(skeleton_store, "xsub", "train", inputs=("skeleton", "bones"), frames=16, flip=0.5)
    items = _collate(dataset, list(range(12)))
    joints, want = items["skeleton"], torch.zeros_like(items["skeleton"])  # (B, 3, T, V, M)
    for v1, v2 in CTRGCN_NTU_PAIRS:
        want[:, :, :, v1 - 1] = joints[:, :, :, v1 - 1] - joints[:, :, :, v2 - 1]
    assert torch.equal(items["bones"], want) and items["flip"].any() and not items["flip"].all()
    assert items["bones"].abs().sum() > 0


@pytest.mark.parametrize("side", ["train", "test"])
def test_rgb_and_fused_items_are_ntu_trains_clips(video_stores, side):
    """Catches the dataset drifting from ntu-train's RGB path: the stored frames of each clip (every
    one of a 32-frame store, evenly subsampled; a new window per epoch of a `--frames all` store), the
    random resized crop, the flip shared with the skeleton, the skeleton at the clip's frames, the
    test's centre crop and its multi-clip views and segments."""
    fused = ("skeleton", "motion", "rgb")
    spec = D.ClipSpec(frames=16, rgb=True, crop=32)
    assert assert_items_are_ntu_train_batches(video_stores["fixed"], side, fused, spec) > 0
    rgb_only = D.ClipSpec(frames=32, skeleton=False, rgb=True, crop=32)
    assert_items_are_ntu_train_batches(video_stores["fixed"], side, ("rgb",), rgb_only)
    all_frames = D.ClipSpec(frames=16, rgb=True, crop=20)
    assert_items_are_ntu_train_batches(video_stores["all"], side, fused, all_frames)
    if side == "test":  # views along the diagonal (32 of 32 frames), segments (16 of 32, of all)
        assert_items_are_ntu_train_batches(video_stores["fixed"], side, ("rgb",), rgb_only, clip=2, clips=3)
        assert_items_are_ntu_train_batches(video_stores["fixed"], side, fused, spec, clip=1, clips=3)
        assert_items_are_ntu_train_batches(video_stores["all"], side, fused, all_frames, clip=0, clips=2)


def test_the_picture_draws_the_frames_the_batches_took(skeleton_store, video_stores, monkeypatch):
    """`ntu-train predict --picture` draws the frames of each recording's first test clip: those of
    Batch.frames, for a skeleton model and an RGB one, also after the data path's rule changes (here:
    its positions halved). Catches the picture computing the positions with a copy of the rule."""
    skeleton, fused = D.ClipSpec(frames=16), D.ClipSpec(frames=16, rgb=True, crop=20)
    cases = ((skeleton_store, skeleton, False, 1), (skeleton_store, skeleton, False, 3),
             (video_stores["all"], fused, True, 2))
    skeleton_rule, rgb_rule = ClipRule.skeleton_positions, ClipRule.rgb_positions
    before = {}
    for mutated in (False, True):
        if mutated:
            monkeypatch.setattr(ClipRule, "skeleton_positions", lambda *a: skeleton_rule(*a) * 0.5)
            monkeypatch.setattr(ClipRule, "rgb_positions", lambda *a: rgb_rule(*a) // 2)
        for k, (store, spec, rgb, clips) in enumerate(cases):
            data = D.SplitData(D.read_split(store, "xsub", "test", need_rgb=rgb), spec, "cpu")
            taken = torch.cat([b.frames for b in data.batches(0, 16, train=False, clip=0, clips=clips)])
            drawn = first_clip_frames(data, clips)
            assert np.array_equal(drawn, taken.numpy()), (mutated, k)
            if mutated:
                assert not np.array_equal(drawn, before[k]), k  # the mutation moved the frames
            before[k] = drawn


def test_augmentation_changes_with_the_epoch_and_repeats_within_it(video_stores):
    """Each epoch draws a new window (of a `--frames all` store), crop and flip per sample, and the
    same epoch the same ones, in ntu-train's batches and in the dataset (set_epoch). Catches draws
    frozen across epochs."""
    store = video_stores["all"]
    spec = D.ClipSpec(frames=16, rgb=True, crop=20)
    data = D.SplitData(D.read_split(store, "xsub", "train", need_rgb=True), spec, "cpu", seed=1)
    by_epoch = []
    for epoch in (0, 1):
        clips = {}
        for batch in data.batches(epoch, 4, train=True):
            clips.update({int(p): (batch.rgb[b], batch.skeleton[b]) for b, p in enumerate(batch.positions)})
        by_epoch.append(clips)
    common = sorted(set(by_epoch[0]) & set(by_epoch[1]))
    assert len(common) >= 4
    for p in common:
        assert not torch.equal(by_epoch[0][p][0], by_epoch[1][p][0]), p  # another crop (or flip)
        assert not torch.equal(by_epoch[0][p][1], by_epoch[1][p][1]), p  # another window (or flip)

    dataset = NTUDataset(store, "xsub", "train", inputs=("skeleton", "rgb"), frames=16, crop=20, seed=1)
    epoch0 = _collate(dataset, list(range(len(dataset))))
    dataset.set_epoch(1)
    epoch1 = _collate(dataset, list(range(len(dataset))))
    dataset.set_epoch(0)
    again = _collate(dataset, list(range(len(dataset))))
    for key in ("skeleton", "crop_box", "frame_index", "flip", "rgb"):
        assert torch.equal(again[key], epoch0[key]), key
    assert all(not torch.equal(a, b) for a, b in zip(epoch0["crop_box"], epoch1["crop_box"], strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(epoch0["skeleton"], epoch1["skeleton"], strict=True))
    assert not torch.equal(epoch0["flip"], epoch1["flip"])


def test_workers_persistent_workers_and_the_epoch(video_stores):
    """Items through a DataLoader with 2 workers (persistent, each epoch after set_epoch; and with a
    spawned worker) equal the items made in this process. Catches persistent workers keeping the
    epoch their copy of the dataset was made with, and a dataset that does not pickle to a worker."""
    dataset = NTUDataset(video_stores["fixed"], "xsub", "train", inputs=("skeleton", "joints_2d", "rgb"),
                         frames=8, crop=32, seed=2)
    positions = list(range(len(dataset)))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    for epoch in (0, 1, 2):
        dataset.set_epoch(epoch)
        batches = list(loader)
        want = _collate(dataset, positions)  # in this process, at the same epoch
        got = {key: torch.cat([b[key] for b in batches]) for key in want if key != "name"}
        assert [n for b in batches for n in b["name"]] == want["name"]
        for key, value in got.items():
            assert torch.equal(value, want[key]), (epoch, key)
    spawned = DataLoader(dataset, batch_size=8, num_workers=1, multiprocessing_context="spawn")
    dataset.set_epoch(5)
    got = next(iter(spawned))
    want = _collate(dataset, positions[:8])
    assert torch.equal(got["skeleton"], want["skeleton"]) and torch.equal(got["rgb"], want["rgb"])


def test_distributed_sampler_covers_the_split_once(skeleton_store):
    """Two replicas of DistributedSampler (shuffled, set_epoch) take every sample, none twice but the one
    it pads an odd split with."""
    dataset = NTUDataset(skeleton_store, "xsub", "train", inputs=("skeleton",), frames=16)
    names = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(4)
        dataset.set_epoch(4)
        for batch in DataLoader(dataset, batch_size=16, sampler=sampler, num_workers=2):
            names += batch["name"]
    counts = Counter(names)
    assert set(counts) == set(dataset.names) and len(dataset) == 119
    assert sorted(counts.values()) == [1] * 118 + [2]


def test_2d_joints_lie_on_the_rendered_figure(video_stores):
    """joints_2d against the rendered videos: in each training item's frames (its random crop, flipped
    or not, through rgb_to_model), the ball lies within 2 pixels of the hand holding it, the right
    hand, which after a flip is the hand the skeleton calls left. Heatmaps peak at the joints, and are
    what `joint_heatmaps` makes of the joints in a training step. Catches 2D joints not mapped through
    the stored crop and the random crop, or not flipped with the frames."""
    crop = 32
    dataset = NTUDataset(video_stores["fixed"], "xsub", "train", inputs=("joints_2d", "heatmaps", "rgb"),
                         frames=32, crop=crop, heatmap_size=crop, seed=2)
    checked = Counter()
    for p in range(len(dataset)):
        item = dataset[p]
        label, flip = int(item["label"]), bool(item["flip"])
        xy, score = item["joints_2d"][:, :, :, 0].permute(1, 2, 0).numpy(), item["joints_2d_score"][:, :, 0]
        on = score > 0  # (T, V)
        peaks = item["heatmaps"][:, :, :, :].flatten(2).argmax(2)  # (V, T) of the H x H maps
        peak_xy = torch.stack([peaks % crop, peaks // crop], -1).permute(1, 0, 2).numpy() + 0.5  # (T, V, 2)
        two = (item["joints_2d_score"][:, :, 1] > 0).any(1, keepdim=True)  # (T, 1) actor 2's maps too
        alone = on & ~two & torch.from_numpy((xy > 1).all(-1) & (xy < crop - 1).all(-1))
        alone = alone.numpy()
        assert np.abs(peak_xy[alone] - xy[alone]).max(initial=0) <= 0.75
        checked["peaks"] += int(alone.sum())
        batch = default_collate([item])
        maps = joint_heatmaps(to_heatmap_pixels(batch["joints_2d"], crop, crop), batch["joints_2d_score"],
                              (crop, crop))  # as a training step would make them on the device
        assert torch.equal(maps[0], item["heatmaps"])
        if label > 1:
            continue
        image = rgb_to_model(batch["rgb"], batch["crop_box"], batch["flip"], crop)
        image = ((image[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()  # T,H,W,3
        holding = [HAND_LEFT, HAND_TIP_LEFT] if flip else [HAND_RIGHT, HAND_TIP_RIGHT]
        other = [HAND_RIGHT, HAND_TIP_RIGHT] if flip else [HAND_LEFT, HAND_TIP_LEFT]
        for t in range(32):
            ball = _ball(image[t], red=label == 0)
            hand, other_hand = xy[t, holding].mean(0), xy[t, other].mean(0)
            if ball is None or not on[t, holding].all() or np.linalg.norm(hand - other_hand) < 4:
                continue  # no ball seen, or hands together: the ball says nothing about the side
            assert np.linalg.norm(ball - hand) < 2, (p, t, flip, ball, hand, other_hand)
            checked[flip] += 1
    assert checked[True] >= 20 and checked[False] >= 20 and checked["peaks"] >= 1000, checked


def _ball(frame: np.ndarray, red: bool) -> np.ndarray | None:
    """Centre (x, y) of the saturated red or blue pixels of an (H, W, 3) uint8 frame, None if < 3."""
    r, g, b = (frame[..., c].astype(int) for c in range(3))
    mask = (r - np.maximum(g, b) > 80) if red else (b - np.maximum(r, g) > 80)
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5]) if len(xs) >= 3 else None


def test_left_out_samples_are_counted_and_missing_stages_refused(skeleton_store, video_stores):
    """A sample without its video is left out of the RGB items and counted, as `fit` counts it; a store
    without RGB refuses an RGB or 2D input in one line naming it; bad arguments are refused."""
    store = video_stores["fixed"]
    sides = {side: (NTUDataset(store, "xsub", side, inputs=("skeleton",)),
                    NTUDataset(store, "xsub", side, inputs=("rgb",), crop=32)) for side in ("train", "test")}
    assert sum(len(skel) - len(rgb) for skel, rgb in sides.values()) == 1
    assert sum(rgb.left_out.get("rgb absent", 0) for _, rgb in sides.values()) == 1
    for side, (skel, rgb) in sides.items():
        assert rgb.left_out == D.read_split(store, "xsub", side, need_rgb=True).left_out
        assert skel.left_out == {} and set(rgb.names) <= set(skel.names)
    for inputs in (("skeleton", "rgb"), ("heatmaps",)):
        with pytest.raises(StoreFormatError, match=f"input {inputs[-1]} needs the RGB frames") as err:
            NTUDataset(skeleton_store, "xsub", "train", inputs=inputs)
        assert "\n" not in str(err.value) and "ntu-prep extract --videos" in str(err.value)
    for bad in (dict(inputs=("depth",)), dict(side="val"), dict(side="train", clips=3),
                dict(side="test", clip=3, clips=3), dict(inputs=("rgb",), crop=41), dict(flip=2.0)):
        with pytest.raises(ConfigError):
            NTUDataset(store, "xsub", **{"side": "test", **bad})
