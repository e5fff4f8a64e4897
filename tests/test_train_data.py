"""`ntu-train`'s data path and reports as pure functions: normalisation, packing, windows, order, recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model
from model.data import split as D
from model.data import transforms as T
from model.data.skeletons import load_packed, packed_bytes
from model.results.reports import classification_report, confusion_matrix, draw_confusion
from model.training.config import TrainConfig
from model.training.epoch import learning_rate
from ntu_pipeline.skeleton import normalize as reference
from ntu_pipeline.store import open_store
from ntu_pipeline.synth.skeleton import REST_POSE

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the data path's pure functions -------------------------------------------------------------------

def test_batched_normalisation_matches_the_reference_functions(skeleton_store):
    """Catches the batched torch centring/alignment drifting from ntu_pipeline.skeleton.normalize."""
    joints = open_store(skeleton_store)["skeleton/joints"][:48]  # (48, 300, 2, 25, 3)
    ours = T.normalize_skeletons(torch.from_numpy(joints), "spine_axes").numpy()
    for got, sample in zip(ours, joints, strict=True):
        present = np.abs(sample).sum(axis=(2, 3)) > 0
        want = reference.align_to_axes(reference.center_on_spine(sample, present), present)
        np.testing.assert_allclose(got, want, atol=2e-6)
    empty = torch.zeros(1, 10, 2, 25, 3)  # a sample without actor 1 stays as it is
    assert torch.equal(T.normalize_skeletons(empty, "spine_axes"), empty)


def test_packed_skeletons_hold_the_rows_asked_for_and_their_frames_only(skeleton_store):
    """Catches load_packed mixing up rows when the indices skip samples and cross shards, a sample's
    frames reaching into the next one's, and residency sized by the longest sample instead of the
    frames held (the issue: one 300-frame sample made every sample cost 300 frames)."""
    group = open_store(skeleton_store)
    indices = np.array([1, 5, 31, 32, 33, 70, 200, 239])
    num_frames = group["samples/num_frames"][:][indices]
    packed = load_packed(skeleton_store, indices, num_frames, "none")
    assert packed.frames.shape == (num_frames.sum(), 2, 25, 3)
    assert packed_bytes(num_frames) == packed.frames.numel() * 4
    for row, index in enumerate(indices):
        sample = group["skeleton/joints"][int(index)]
        start, length = int(packed.starts[row]), int(packed.lengths[row])
        assert length == num_frames[row]
        np.testing.assert_array_equal(packed.frames[start:start + length].numpy(), sample[:length])
    # the last frame position of each sample, and one past it, never reads the next sample's frames
    positions = (packed.lengths[:, None] - 1 + torch.tensor([[0.0, 0.75]])).double()
    joints = T.resample_packed(packed.frames, packed.starts, packed.lengths, positions)
    for row in range(len(indices)):
        last = packed.frames[packed.starts[row] + packed.lengths[row] - 1]
        assert torch.equal(joints[row, 0], last) and torch.equal(joints[row, 1], last)


def test_windows_resampling_and_motion():
    """Catches windows leaving the frames kept, interpolation making half-size skeletons where an
    actor enters, and motion taken across the skipped frames."""
    n = torch.tensor([10, 100, 1])
    test = T.window_positions(n, 8, torch.full((3,), 1.0))
    np.testing.assert_allclose(test[0].numpy(), np.arange(8) * 10 / 8 + 10 / 16 - 0.5)
    for _ in range(20):
        u = torch.rand(3)
        pos = T.window_positions(n, 32, T.window_ratio(u, 3, "cpu"), torch.rand(3))
        assert (pos >= 0).all() and (pos <= (n - 1)[:, None]).all()
        assert (pos.diff(dim=1) >= 0).all()
    joints = torch.zeros(4, 2, 25, 3)  # one sample of 4 frames, packed
    joints[:, 0] = torch.arange(4.0)[:, None, None] + 1  # actor 1 everywhere, values 1..4
    joints[2:, 1] = 5.0  # actor 2 enters at frame 2
    positions = torch.tensor([[0.0, 1.5, 2.5, 3.0]])
    out = T.resample_packed(joints, torch.tensor([0]), torch.tensor([4]), positions)
    assert out[0, :, 0, 0, 0].tolist() == [1.0, 2.5, 3.5, 4.0]  # linear between frames
    assert out[0, 1, 1, 0, 0] == 5.0  # between frames 1 (absent) and 2: frame 2, not half of it
    assert out[0, 0, 1].abs().sum() == 0
    skeleton = T.to_model_layout(out)  # (1, 3, 4, 25, 2)
    motion = model.skeleton_motion(skeleton)
    assert motion[0, 0, 0, 0, 1] == 0  # actor 2 absent at t = 0: no motion into frame 1
    assert motion[0, 0, 1, 0, 0] == 1.0 and motion[0, 0, 3].abs().sum() == 0


def test_flip_mirrors_the_body_and_swaps_its_sides():
    """Catches a wrong left/right joint table: the synthetic rest pose is left-right symmetric, so its
    mirror image with the sides swapped is itself."""
    pose = torch.as_tensor(REST_POSE, dtype=torch.float32)  # (25, 3), its left side at -x
    skeleton = pose.T[None, :, None, :, None].repeat(1, 1, 2, 1, 2)  # (1, 3, T=2, 25, M=2)
    flipped = T.mirror_skeleton(skeleton, torch.tensor([True]))
    torch.testing.assert_close(flipped, skeleton, atol=1e-6, rtol=0)
    lopsided = skeleton.clone()
    lopsided[:, 0, :, 7] += 0.3  # the left hand reaches out
    flipped = T.mirror_skeleton(lopsided, torch.tensor([True]))
    assert torch.isclose(flipped[0, 0, 0, 11, 0], -(lopsided[0, 0, 0, 7, 0]))  # now the right hand
    assert torch.equal(T.mirror_skeleton(flipped, torch.tensor([True])), lopsided)
    assert torch.equal(T.mirror_skeleton(lopsided, torch.tensor([False])), lopsided)


def test_data_order_is_a_pure_function_of_seed_and_epoch():
    """Catches an order that depends on the process count or the step a run resumed at."""
    one = D.train_plan(50, 8, seed=3, epoch=2)
    assert len(one) == 6 and all(len(b) == 8 for b in one)
    ranks = [D.train_plan(50, 8, seed=3, epoch=2, rank=r, world=2) for r in range(2)]
    for step, batch in enumerate(one):
        assert sorted(np.concatenate([ranks[0][step], ranks[1][step]])) == sorted(batch)
    assert not np.array_equal(np.concatenate(one), np.concatenate(D.train_plan(50, 8, seed=3, epoch=3)))
    randoms = D.epoch_randoms(5, 3, 2)
    assert randoms.shape == (5, D.NUM_RANDOMS) and bool(((randoms >= 0) & (randoms < 1)).all())
    # the stream ntu-train's runs were drawn from (its demo prints fixed figures): numpy's PCG64 at [3, 2, 1]
    np.testing.assert_array_equal(randoms.numpy(), np.random.default_rng([3, 2, 1]).random((5, 7)))
    state = np.random.get_state()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        np.random.seed(1)  # the global generators moved: the draws must not follow them
        assert torch.equal(D.epoch_randoms(5, 3, 2), randoms)
    np.random.set_state(state)
    assert not torch.equal(D.epoch_randoms(5, 3, 3), randoms)
    assert not torch.equal(D.epoch_randoms(5, 4, 2), randoms)
    shares = D.test_plan(11, 4, rank=1, world=2)
    assert np.concatenate(shares).tolist() == list(range(6, 11))


def test_each_epoch_draws_new_windows_and_flips_for_every_sample(skeleton_store):
    """The same sample's training clip differs from one epoch to the next (another window, another
    flip), and is the same when the epoch is asked for again. Catches augmentation frozen across epochs
    (every earlier test passed with `epoch_randoms` ignoring the epoch: the order alone still moved)."""
    data = D.SplitData(D.read_split(skeleton_store, "xsub", "train"), D.ClipSpec(frames=16), "cpu", seed=4)

    def clips(epoch: int) -> dict[int, torch.Tensor]:
        return {int(p): batch.skeleton[b] for batch in data.batches(epoch, 16, train=True)
                for b, p in enumerate(batch.positions)}

    first, second, again = clips(1), clips(2), clips(1)
    common = set(first) & set(second)
    assert len(common) >= 90
    assert all(not torch.equal(first[p], second[p]) for p in common)
    assert all(torch.equal(first[p], again[p]) for p in first)
    flips = [(D.epoch_randoms(len(data), 4, e)[:, D.FLIP] < 0.5) for e in (1, 2)]
    assert 0.3 < float((flips[0] != flips[1]).double().mean()) < 0.7  # each epoch its own coin


def test_resumed_batches_equal_the_uninterrupted_ones(skeleton_store):
    """Catches augmentation that depends on the batch's position rather than (seed, epoch, sample)."""
    data = D.SplitData(D.read_split(skeleton_store, "xsub", "train"), D.ClipSpec(frames=16), "cpu", seed=4)
    full = list(data.batches(epoch=1, batch_size=16, train=True))
    later = list(data.batches(epoch=1, batch_size=16, train=True, start_step=5))
    assert len(full) == 7 and len(later) == 2
    for a, b in zip(full[5:], later, strict=True):
        assert torch.equal(a.skeleton, b.skeleton) and torch.equal(a.labels, b.labels)
    again = next(data.batches(epoch=2, batch_size=16, train=True))
    assert not torch.equal(again.skeleton, full[0].skeleton)


def test_learning_rate_schedule():
    """Catches a warm-up or cosine that does not start near 0, reach the base, and end at 0, and an
    exponential schedule that does not decay by its factor per epoch."""
    lrs = [learning_rate(s, 100, 10, 0.2) for s in range(100)]
    assert lrs[0] == pytest.approx(0.02) and lrs[9] == pytest.approx(0.2) and lrs[10] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] < 1e-3
    exp = [learning_rate(s, 100, 0, 0.2, "exp", 0.5, steps_per_epoch=10) for s in (0, 10, 20, 25)]
    assert exp == pytest.approx([0.2, 0.1, 0.05, 0.05 * 0.5 ** 0.5])
    config = TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", batch_size=64, lr=0.1)
    assert config.base_lr() == pytest.approx(0.2)  # linear scaling from batch 32


def test_each_model_family_gets_its_recipe_and_every_option_overrides_it():
    """Catches the skeleton baseline trained with the fused models' SGD 0.1 (it diverged: loss in the
    hundreds, chance accuracy) and options that do not override the recipe."""
    hcn = TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o")
    assert (hcn.optimizer, hcn.batch_size, hcn.schedule, hcn.recipe.name) == ("adam", 64, "exp", "hcn")
    assert hcn.base_lr() == pytest.approx(0.001) and hcn.weight_decay == 1e-4 and hcn.lr_decay == 0.99
    for name in ("i3d", "ccdfarm", "mmtm"):
        fused = TrainConfig.from_options(store="s", protocol="xsub", model=name, out="o")
        assert (fused.optimizer, fused.lr, fused.batch_size, fused.epochs, fused.schedule) == \
            ("sgd", 0.1, 32, 50, "cosine")
    mine = TrainConfig.from_options(store="s", protocol="xsub", model="hcn", out="o", optimizer="sgd",
                                    epochs=3)
    assert (mine.optimizer, mine.epochs, mine.lr) == ("sgd", 3, 0.0005)
    assert "changed: epochs, optimizer" in mine.describe_recipe()
    again = TrainConfig.from_dict(mine.to_dict())  # what config.json holds resumes to the same settings
    assert again == mine


# --- evaluation ---------------------------------------------------------------------------------------

def test_classification_report_and_confusion_png():
    """Catches top-k, per-class accuracy or the confusion matrix counting the wrong thing."""
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5, 1, 0, 0, 0], [1, 5, 0, 0, 0, 0], [0, 0, 0, 0, 1, 5]])
    labels = torch.tensor([0, 1, 0, 5])
    names = ["a", "b", "c", "d", "e", "f"]
    report = classification_report(logits, labels, names)
    assert report["top1"] == pytest.approx(0.75) and report["top5"] == pytest.approx(1.0)
    assert report["per_class"]["a"] == {"accuracy": 0.5, "samples": 2}
    assert report["per_class"]["c"] == {"accuracy": None, "samples": 0}
    conf = confusion_matrix(logits.argmax(1), labels, 6)
    assert conf[0, 0] == 1 and conf[0, 1] == 1 and conf.sum() == 4
    image = draw_confusion(conf, names, "title")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] > 6 * 12

