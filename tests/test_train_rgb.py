"""`ntu-train` on the RGB path: clips decoded in workers, crops and flips on the device, fused models.

The stores come from the real pipeline: `write_corpus(..., videos=True)` renders each synthetic
sample's `_rgb.avi` (the actors in clothes, classes 0 and 1 holding a red or a blue ball in the right
hand), and `extract` with `videos` runs the skeleton and RGB stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import model
from cli.train import main
from model.data import split as D
from model.data import transforms as T
from model.data.rgb_clips import ClipRequest, RGBClips
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.corpus import write_corpus
from ntu_pipeline.video.crop import project_to_crop

# Kinect v2 joint names in the files' order; a joint's partner has Left and Right swapped. The test's
# own table, so that it checks the code's (model.data.split.MIRROR_JOINTS) rather than repeating it.
KINECT_JOINTS = ("SpineBase SpineMid Neck Head ShoulderLeft ElbowLeft WristLeft HandLeft ShoulderRight "
                 "ElbowRight WristRight HandRight HipLeft KneeLeft AnkleLeft FootLeft HipRight KneeRight "
                 "AnkleRight FootRight SpineShoulder HandTipLeft ThumbLeft HandTipRight ThumbRight").split()
HAND_RIGHT, HAND_TIP_RIGHT = KINECT_JOINTS.index("HandRight"), KINECT_JOINTS.index("HandTipRight")
HAND_LEFT, HAND_TIP_LEFT = KINECT_JOINTS.index("HandLeft"), KINECT_JOINTS.index("HandTipLeft")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: why one thread


def video_store(root: Path, name: str, samples: int, classes: int, frames: int | None, size: int) -> Path:
    """A synthetic corpus with videos through both stages, xsub split; the corpus is reused by name."""
    raw = root / f"raw{samples}_{classes}"
    if not raw.exists():
        write_corpus(raw, samples, classes, seed=1, videos=True)
    store = root / name
    extract(ExtractConfig(skeletons=raw, videos=raw, out=store, dataset="ntu60", shard_size=8,
                          rgb_frames=frames, rgb_size=size, rgb_shard_size=8, progress=False))
    make_split(open_store(store, mode="r+"), "xsub")
    return store


@pytest.fixture(scope="session")
def rgb_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train_rgb")


@pytest.fixture(scope="session")
def rgb_store(rgb_root) -> Path:
    """24 samples of 3 classes, 32 frames of 96 x 96 (class 0 holds a red ball, class 1 a blue one)."""
    return video_store(rgb_root, "rgb32.zarr", 24, 3, 32, 96)


@pytest.fixture(scope="session")
def learn_store(rgb_root) -> Path:
    """The same 24 samples (12 train, 4 a class) at 40 x 40: the learning tests' (cheaper to decode)."""
    return video_store(rgb_root, "learn.zarr", 24, 3, 32, 40)


def test_clip_frames_and_their_skeleton_frames(rgb_root):
    """Catches the fused models' skeleton taken at other frames than the clip's (rgb/frame_index looked
    up in skeleton/frame_index), a `--frames all` store not drawing a window per training epoch, and
    a 32-frame store's frames not used as stored."""
    store = video_store(rgb_root, "all.zarr", 24, 3, None, 24)
    group = open_store(store)
    assert group.attrs["stages"]["rgb"]["options"]["frames"] == "all"
    info = D.read_split(store, "xsub", "train", need_rgb=True)
    data = D.SplitData(info, D.ClipSpec(frames=16, rgb=True, crop=24), "cpu")
    position = 3
    index = int(info.indices[position])
    frames = data.rgb_frames(None)[position]  # the test clip: the centred window
    clip = RGBClips(store)[ClipRequest(index, frames)].numpy()
    assert clip.shape == (16, 24, 24, 3) and frames.shape == (16,)
    kept, source = group["skeleton/frame_index"][index], group["rgb/frame_index"][index]
    stored = group["rgb/frames"][index]
    skeleton_frames = data.rgb_table.to_skeleton[position, frames]
    found = 0
    for t in range(16):  # each clip frame is a stored frame, and its skeleton frame has the same source
        assert source[frames[t]] >= 0 and np.array_equal(stored[frames[t]], clip[t]), t
        if skeleton_frames[t] >= 0:
            assert kept[skeleton_frames[t]] == source[frames[t]]
            found += 1
    assert found >= 12
    randoms = torch.zeros(len(info), D.NUM_RANDOMS, dtype=torch.float64)  # window ratio 0.5
    early = data.rgb_frames(randoms)[position]
    randoms[:, D.WINDOW_START] = 0.999
    late = data.rgb_frames(randoms)[position]
    assert late.min() > early.min() and late.max() > early.max()  # a training window moves with its uniforms

    fixed_store = video_store(rgb_root, "fixed.zarr", 24, 3, 32, 24)
    fixed = D.SplitData(D.read_split(fixed_store, "xsub", "train", need_rgb=True),
                        D.ClipSpec(frames=16, rgb=True, crop=24), "cpu")
    assert np.array_equal(fixed.rgb_frames(randoms)[position], np.arange(0, 32, 2))  # as stored, every other
    clip = RGBClips(fixed_store)[ClipRequest(index, np.arange(0, 32, 2))].numpy()
    assert np.array_equal(clip, open_store(fixed_store)["rgb/frames"][index][::2])


def test_centre_crop_copies_pixels_and_the_flip_mirrors_them():
    """Catches a test crop that resamples (blurs), a flip that is not an exact mirror, and random
    crops outside the frame or outside CROP_AREA."""
    clips = torch.randint(0, 256, (2, 4, 40, 40, 3), dtype=torch.uint8)
    boxes = T.crop_boxes(None, 2, 40, 32, "cpu")
    out = T.crop_clips(clips, boxes, torch.tensor([False, True]), 32)
    expected = clips[:, :, 4:36, 4:36].permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    torch.testing.assert_close(out[0], expected[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], expected[1].flip(-1), atol=1e-5, rtol=0)
    boxes = T.crop_boxes(torch.rand(64, 4), 64, 256, 224, "cpu")
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 256 + 1e-6).all() and (y0 + h <= 256 + 1e-6).all()
    area = w * h / 256**2
    assert area.min() >= T.CROP_AREA[0] * 0.75 and area.max() <= 1 + 1e-6


def _ball(frame: np.ndarray, red: bool) -> np.ndarray | None:
    """Centre (x, y) of the saturated red or blue pixels of an (H, W, 3) uint8 frame, None if < 3."""
    r, g, b = (frame[..., c].astype(int) for c in range(3))
    mask = (r - np.maximum(g, b) > 80) if red else (b - np.maximum(r, g) > 80)
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5]) if len(xs) >= 3 else None


def test_a_flipped_skeleton_lies_on_the_flipped_figure(rgb_store):
    """The flip of the clip and of the skeleton agree, sample by sample (flip probability 0.5): the
    batch's clip and skeleton are mirrored for the same samples; and each sample's skeleton, projected
    into its crop (skeleton/color_xy through rgb/crop_box, then the batch's random crop) and mirrored
    where the sample is, still holds the ball in its right hand, which after a flip is the hand the
    skeleton calls left (Kinect's names). Catches a flip applied to one modality only, to other
    samples, at another place, or without swapping the sides."""
    size, crop, batch = 96, 80, 8
    info = D.read_split(rgb_store, "xsub", "train", need_rgb=True)
    spec = dict(frames=32, rgb=True, crop=crop, normalize="none")
    mixed = next(D.SplitData(info, D.ClipSpec(flip=0.5, **spec), "cpu", seed=7).batches(0, batch, True))
    plain = next(D.SplitData(info, D.ClipSpec(flip=0.0, **spec), "cpu", seed=7).batches(0, batch, True))
    randoms = D.epoch_randoms(len(info), 7, 0)[mixed.positions]
    flip = randoms[:, D.FLIP] < 0.5
    assert torch.equal(mixed.positions, plain.positions) and 0 < int(flip.sum()) < batch
    for b in range(batch):
        torch.testing.assert_close(mixed.rgb[b], plain.rgb[b].flip(-1) if flip[b] else plain.rgb[b],
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(mixed.skeleton[b], T.mirror_skeleton(plain.skeleton[b:b + 1],
                                                                       flip[b:b + 1])[0])

    group = open_store(rgb_store)
    boxes = T.crop_boxes(randoms[:, D.CROP_SCALE:D.CROP_Y + 1], batch, size, crop, "cpu")
    image = ((mixed.rgb + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 4, 1).numpy()
    checked = {True: 0, False: 0}
    for b, position in enumerate(mixed.positions.tolist()):
        label = int(info.labels[position])
        if label > 1:
            continue  # classes 0 and 1 hold the ball
        index = int(info.indices[position])
        box, video_size = group["rgb/crop_box"][index], group["rgb/video_size"][index]
        kept, source = group["skeleton/frame_index"][index], group["rgb/frame_index"][index]
        for t in range(32):
            k = np.flatnonzero(kept[:info.num_frames[position]] == source[t])
            ball = _ball(image[b, t], red=label == 0)
            if len(k) == 0 or ball is None:
                continue
            xy = torch.from_numpy(project_to_crop(group["skeleton/color_xy"][index, k[0], 0], box,
                                                  video_size, size)).float()  # (V, 2) stored pixels
            in_crop = T.crop_points(xy[None], boxes[b:b + 1], torch.tensor([False]), size, crop)[0]
            layout = in_crop.T[None, :, None, :, None]  # (1, 2, 1, V, 1): x, y as a skeleton's channels
            moved = T.mirror_skeleton(layout, flip[b:b + 1], width=crop)[0, :, 0, :, 0].T.numpy()  # (V, 2)
            holding = (HAND_LEFT, HAND_TIP_LEFT) if flip[b] else (HAND_RIGHT, HAND_TIP_RIGHT)
            other = (HAND_RIGHT, HAND_TIP_RIGHT) if flip[b] else (HAND_LEFT, HAND_TIP_LEFT)
            palm, other_palm = moved[list(holding)].mean(0), moved[list(other)].mean(0)
            if np.linalg.norm(palm - other_palm) < 10:
                continue  # hands together: the ball says nothing about the side
            assert np.linalg.norm(ball - palm) < 4, (b, t, ball, palm, other_palm)
            checked[bool(flip[b])] += 1
    assert checked[True] >= 10 and checked[False] >= 10, checked


def test_rgb_models_run_fit_and_eval(rgb_store, tmp_path):
    """An RGB-only and a fused variant run fit (one step) and eval on CPU at a tiny size, with a
    DataLoader worker process (catches wiring errors between the loader, the crops and the networks);
    the fused one starts its I3D from a pytorch-i3d checkpoint, whose parameters then train in their
    own group at 0.1x the learning rate (catches the pretrained I3D trained at the full rate)."""
    i3d = model.I3D(model.I3DConfig(num_classes=400))
    public = model.pytorch_i3d_key_map(i3d)
    state = {public[k]: v.reshape(-1, 1024, 1, 1, 1) if k == "classifier.weight" else v
             for k, v in i3d.state_dict().items()}
    torch.save(state, tmp_path / "rgb_imagenet.pt")
    for name, extra in (("i3d", []), ("dsfm", ["--i3d-checkpoint", str(tmp_path / "rgb_imagenet.pt")])):
        out = tmp_path / name
        result = CliRunner().invoke(main, [
            "fit", "--store", str(rgb_store), "--protocol", "xsub", "--model", name, "--out", str(out),
            "--epochs", "1", "--batch-size", "8", "--frames", "16", "--crop", "32", "--device", "cpu",
            "--workers", "1", "--warmup-epochs", "0", "--quiet", *extra])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "metrics.json").read_text())
        assert report["num_samples"] == len(D.read_split(rgb_store, "xsub", "test", need_rgb=True))
    checkpoint = torch.load(tmp_path / "dsfm/last.pt", weights_only=True)
    fresh, pretrained = checkpoint["optimizer"]["param_groups"]
    assert pretrained["lr_scale"] == 0.1 and pretrained["lr"] == pytest.approx(0.1 * fresh["lr"])
    i3d_params = [n for n, _ in model.build("dsfm", 60).named_parameters() if n.startswith("rgb.")]
    assert sorted(checkpoint["pretrained"]) == sorted(n for n in i3d_params if "classifier" not in n)


def test_a_fused_run_logs_the_prediction_loss_apart_from_the_heads_sum(rgb_store, tmp_path):
    """metrics.jsonl of a one-step ccdfarm epoch against that step done again outside `fit` (the same
    initial weights, first batch and dropout seed): `train_loss` is the cross-entropy of the prediction
    (out["logits"]) as `classification_report` computes the test loss, `train_heads_loss` the sum over
    the three heads, which is larger. Catches the two swapped or merged (for HCN they are equal, so only
    a fused model tells them apart) and a train loss on another definition than the test loss."""
    from model.networks.dropout import dropout_keys, sample_keys
    from model.results.reports import classification_report
    from model.training.config import TrainConfig
    from model.training.epoch import step_seed
    from model.training.fit import fit
    from model.training.runtime import Runtime, build_network

    config = TrainConfig.from_options(store=str(rgb_store), protocol="xsub", model="ccdfarm",
                                      out=str(tmp_path / "run"), epochs=1, batch_size=8, frames=16, crop=32,
                                      device="cpu", workers=0, progress=False)
    info = D.read_split(rgb_store, "xsub", "train", need_rgb=True)
    assert len(info) // config.batch_size == 1  # one step: its weights are the initial ones
    fit(config)
    (line,) = [json.loads(text) for text in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]

    cpu = torch.device("cpu")
    torch.manual_seed(config.seed)  # as fit builds the network
    net = build_network("ccdfarm", len(info.class_names), config.model_options(), cpu).train()
    batch = next(D.SplitData(info, config.clip_spec(), cpu, config.seed).batches(0, config.batch_size, True))
    torch.manual_seed(step_seed(config.seed, 0, 0, 0))  # the step's torch generator
    with torch.no_grad(), dropout_keys(net, sample_keys(config.seed, 0, batch.positions)):  # its dropout
        out = Runtime(cpu, config.bf16).forward(net, batch.rgb, batch.skeleton, batch.motion)
    prediction = classification_report(out["logits"], batch.labels, info.class_names)["loss"]
    heads = float(model.heads_loss(out, batch.labels))
    assert set(out) >= {"rgb", "skeleton", "fused", "logits"}
    assert line["train_loss"] == pytest.approx(prediction, rel=1e-5), (line, prediction, heads)
    assert line["train_heads_loss"] == pytest.approx(heads, rel=1e-5), (line, prediction, heads)
    assert line["train_heads_loss"] > line["train_loss"] + 1, line  # two more heads, each ~ln 60 untrained


@pytest.mark.slow
def test_ccdfarm_fits_its_training_clips(learn_store, tmp_path):
    """CC-DFARM (RGB 16 x 32 x 32, TIAM, DSFM, MFFM, three heads) trained for 30 steps on the 12
    training clips of a 3-class store: the training loss falls below 30% of the first epoch's and the
    last epoch's training top-1 reaches 0.75 (chance 1/3). Catches a fused path that does not optimise
    (gradients cut between the streams, a head left out of the loss, inputs that do not reach a
    stream). What it does not show is test accuracy: I3D's BatchNorm keeps running statistics with
    momentum 0.01 (pytorch-i3d's setting), which need a few hundred steps to settle, more than a CPU
    test affords; until then eval-mode predictions sit at chance (measured on 240 samples: chance for
    6 epochs while training top-1 rose to 0.46). The RGB frames' alignment with the skeleton and the
    labels is checked by test_a_flipped_skeleton_lies_on_the_flipped_figure."""
    store = learn_store
    out = tmp_path / "ccdfarm"
    result = CliRunner().invoke(main, [
        "fit", "--store", str(store), "--protocol", "xsub", "--model", "ccdfarm", "--out", str(out),
        "--epochs", "10", "--batch-size", "4", "--frames", "16", "--crop", "32", "--flip", "0",
        "--optimizer", "adam", "--lr", "0.004", "--weight-decay", "0", "--warmup-epochs", "1",
        "--dropout", "0", "--device", "cpu", "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train_loss"] < 0.3 * lines[0]["train_loss"], lines
    assert lines[-1]["train_top1"] >= 0.75, lines


@pytest.mark.slow
def test_the_fused_model_learns_with_its_default_recipe(learn_store, tmp_path):
    """Catches a default recipe for I3D and the fused models that diverges or does not train (as SGD 0.1
    did for HCN): ccdfarm with the CC-DFARM paper's recipe (SGD momentum 0.9, lr 0.1 at batch 32 scaled
    to 0.0125 at 4, weight decay 5e-4, linear warm-up, cosine annealing, clip 40), the warm-up cut from
    5 epochs to 1 and the run to 20 epochs (60 steps) of 16 x 32^2 clips to fit a CPU test. The store
    holds 3 of the 60 classes, 4 training clips each: learning the label prior alone takes the loss from
    ln 60 = 4.09 to ln 3 = 1.10 and leaves top-1 at 1/3, so the run must go below both, over its last 5
    epochs (one epoch is 12 clips: noisy). Measured: loss 0.72, top-1 0.77 on average there (loss 4.09
    in epoch 1). What it cannot show is test accuracy: I3D's BatchNorm statistics (momentum 0.01) need
    hundreds of steps (test_ccdfarm_fits_its_training_clips says more); test top-1 ends at 0.33."""
    from model.training.config import TrainConfig
    from model.training.fit import fit

    out = tmp_path / "run"
    config = TrainConfig.from_options(store=str(learn_store), protocol="xsub", model="ccdfarm", out=str(out),
                                      epochs=20, warmup_epochs=1, batch_size=4, frames=16, crop=32,
                                      device="cpu", workers=0, progress=False)
    assert config.describe_recipe().endswith("; changed: epochs, batch_size, warmup_epochs")
    assert (config.optimizer, config.lr, config.schedule) == ("sgd", 0.1, "cosine")
    fit(config)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [line["train_loss"] for line in lines]
    assert all(np.isfinite(losses)), losses
    last = lines[-5:]
    loss, top1 = np.mean([x["train_loss"] for x in last]), np.mean([x["train_top1"] for x in last])
    labels = D.read_split(learn_store, "xsub", "train", need_rgb=True).labels
    counts = np.unique(labels, return_counts=True)[1]
    classes, majority = len(counts), counts.max() / counts.sum()
    assert (classes, majority) == (3, 1 / 3)
    prior = np.log(classes)  # the cross-entropy of the best guess from the labels' frequencies alone
    assert loss < prior, f"train loss {loss:.3f} (last 5 epochs), the label prior's {prior:.3f}; {lines}"
    assert top1 >= 1.5 * majority, f"train top-1 {top1:.3f} (last 5 epochs), majority class {majority:.3f}"
