"""Prediction on recordings: a trained checkpoint on a user's own `.skeleton` and video files.

    recordings = find_recordings(skeleton=Path("my.skeleton"), video=Path("my_rgb.avi"))  # or folders
    for p in predict_recordings("runs/ccdfarm/best.pt", recordings, clips=10):
        print(p.describe())          # my: drink water 0.912, eat meal 0.041, ...

The recordings are prepared by the stages themselves (`ntu-prep extract`: parse, denoise, select the
actors, crop around them, sample the frames, encode them as the checkpoint's store did, its RGB
options being recorded in the checkpoint) into a throwaway store in memory (/dev/shm where the
machine has it), and predicted through the evaluation path (`evaluate.predict`). So a recording gets
the logits `ntu-train eval` gives the same files in a store, JPEG round trip included: one code path,
nothing to drift. The temporary store is deleted at the end; the user's files are only read.

Names: the stages take NTU sample names, so each recording is linked there under a placeholder NTU name
(one that no missing-skeleton list holds: nothing in the preparation depends on the name but the label,
which prediction ignores). A recording named like an NTU sample (S001C001P001R001A001) shows its true
class. In folders, a skeleton and a video are one recording when their names agree once `.skeleton`,
the video extension and an `_rgb` suffix are removed.

What differs from a store's sample is said in the prediction's `notes`, never silently: a skeleton
longer than the 300 frames a store holds is sampled down to them (`model.predict.sampling`, where the
stages would refuse it); a video longer than that in a store of every frame keeps its first 300; a
video whose crop could not be placed around the person (no skeleton given, or none usable) is cropped
to the centred square of its frames, where the model was trained on person-centred crops.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.data.split import SplitData, samples_info
from model.predict.picture import prediction_picture
from model.predict.sampling import frames_to_keep, sampled_skeleton
from model.training.checkpoint import check_checkpoint_fits, load_checkpoint
from model.training.evaluate import evaluation_config, predict, trained_network
from ntu_pipeline.errors import ConfigError, NTUPrepError
from ntu_pipeline.images import write_image
from ntu_pipeline.manifests import all_samples, missing_samples
from ntu_pipeline.sample_id import NAME_PATTERN
from ntu_pipeline.skeleton.actors import select_actors
from ntu_pipeline.skeleton.parse import parse_skeleton
from ntu_pipeline.stages.rgb import skeleton_box
from ntu_pipeline.stages.rgb_options import RgbOptions
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import MAX_FRAMES, open_store, read_strings
from ntu_pipeline.store.splits import usable_samples
from ntu_pipeline.store.status import Status

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov")
STAGE_COLUMNS = {"skeleton": ("samples/status", "samples/error"), "rgb": ("rgb/status", "rgb/error")}


@dataclass(frozen=True)
class Recording:
    """One recording: its name (the files' common stem) and its files (None: not given)."""

    name: str
    skeleton: Path | None = None
    video: Path | None = None


@dataclass(frozen=True)
class Prediction:
    """What the model says of one recording: `logits` (K,) averaged over the clips, their softmax as
    `probabilities`, the class names, the true class where the name is an NTU one, and `notes`: how its
    preparation differs from a store's sample (one line each)."""

    name: str
    logits: np.ndarray
    class_names: tuple[str, ...]
    true_class: str | None
    picture: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def probabilities(self) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits).double(), 0).numpy()

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        p = self.probabilities
        return [(self.class_names[i], float(p[i])) for i in np.argsort(-p, kind="stable")[:k]]

    def describe(self) -> str:
        top = ", ".join(f"{name} {p:.3f}" for name, p in self.top())
        return f"{self.name}: {top}" + (f" (true class: {self.true_class})" if self.true_class else "")

    def to_json(self) -> dict:
        return {"name": self.name, "top5": [[c, p] for c, p in self.top()],
                "logits": [float(x) for x in self.logits], "true_class": self.true_class,
                "notes": list(self.notes)}


@dataclass(frozen=True)
class Failure:
    """A recording the model could not be given: which, and why (one line)."""

    name: str
    reason: str

    def describe(self) -> str:
        return f"{self.name}: {self.reason}"


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".skeleton")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        name = path.stem.removesuffix("_rgb")
    return name


def _files(path: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if path is None:
        return {}
    if not path.is_dir():
        return {_stem(path): path}
    return {_stem(f): f for f in sorted(path.iterdir())
            if f.suffix.lower() in suffixes and not f.name.startswith(".")}


def find_recordings(skeleton: Path | None = None, video: Path | None = None) -> list[Recording]:
    """The recordings of a skeleton and/or a video, each a file or a folder of them. A file each is one
    recording (named after the skeleton); folders pair their files by name. ConfigError when none."""
    if skeleton is None and video is None:
        raise ConfigError("give --skeleton, --video or both")
    skeletons, videos = _files(skeleton, (".skeleton",)), _files(video, VIDEO_SUFFIXES)
    if skeleton is not None and video is not None and not skeleton.is_dir() and not video.is_dir():
        return [Recording(_stem(skeleton), skeleton, video)]
    names = sorted(set(skeletons) | set(videos))
    if not names:
        raise ConfigError(f"no .skeleton file or video ({', '.join(VIDEO_SUFFIXES)}) in "
                          f"{', '.join(str(p) for p in (skeleton, video) if p is not None)}")
    return [Recording(n, skeletons.get(n), videos.get(n)) for n in names]


def placeholder_names(dataset: str, n: int) -> list[str]:
    """n NTU names of `dataset` that no missing-skeleton list holds, in order."""
    missing = missing_samples(dataset)
    names = [name for name in all_samples(dataset) if name not in missing][:n]
    if len(names) < n:
        raise ConfigError(f"at most {len(names)} recordings at once, got {n}")
    return names


def true_class(name: str, class_names: tuple[str, ...]) -> str | None:
    """The class of an NTU sample name (the action number), None for any other name."""
    match = NAME_PATTERN.match(name)
    if not match or not 1 <= int(match.group(5)) <= len(class_names):
        return None
    return class_names[int(match.group(5)) - 1]


def _memory_dir() -> str | None:
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def rgb_extract_options(options: dict) -> dict:
    """ExtractConfig's RGB fields from a store's recorded RGB options (a checkpoint's `inputs["rgb"]`)."""
    if not options:
        return {}
    rgb = RgbOptions.from_record(options)
    return {"rgb_frames": rgb.frames, "rgb_size": rgb.size, "rgb_codec": rgb.codec,
            "rgb_quality": rgb.quality}


def _failure(group, index: int, stages: tuple[str, ...], rec: Recording, links: dict[Path, Path]) -> Failure:
    """Why stored sample `index` (recording `rec`) is not usable, its error naming the user's files, not
    the links (`links`: link -> the user's file) the stages read."""
    for stage in stages:
        status_path, error_path = STAGE_COLUMNS[stage]
        status = Status(int(group[status_path][index]))
        if status != Status.OK:
            what = "skeleton" if stage == "skeleton" else "video"
            error = str(group[error_path][index] or "no file given")
            for link, given in links.items():
                error = error.replace(str(link), str(given))
            return Failure(rec.name, f"{what} {status.label}: {error}")
    return Failure(rec.name, "not usable")  # never expected: usable_samples kept every ok sample


def _link(folder: Path, files: dict[str, Path], suffix: str, links: dict[Path, Path]) -> Path | None:
    """`folder` of links named `<NTU name><suffix>` to `files` ({NTU name: file}), each recorded in
    `links` (link -> file); None when there are no files."""
    if not files:
        return None
    folder.mkdir()
    for ntu_name, path in files.items():
        link = folder / f"{ntu_name}{suffix}"
        link.symlink_to(path.resolve())
        links[link] = path
    return folder


@dataclass(frozen=True, eq=False)
class Sampled:
    """A skeleton file sampled down to a store's frames: its text, the frames with an actor in the whole
    file (`kept`, sorted), its frame count, and the note that says so."""

    data: bytes
    kept: np.ndarray
    num_frames: int
    note: str


def sample_long_skeleton(path: Path, rgb: bool, rgb_frames: int | None) -> Sampled | None:
    """The skeleton file at `path` sampled to MAX_FRAMES frames with an actor (`model.predict.sampling`)
    where it has more, else None (also for a file that does not parse: the stage says what is wrong)."""
    try:
        record = parse_skeleton(path)
        actors = select_actors(record)
    except (NTUPrepError, OSError):
        return None
    if actors.num_frames <= MAX_FRAMES:
        return None
    frames, note = frames_to_keep(actors.frame_index, record.num_frames, rgb, rgb_frames)
    bodies = set(actors.actor_ids[0]) | set(actors.actor_ids[1])
    return Sampled(sampled_skeleton(path.read_bytes(), frames, bodies), actors.frame_index, record.num_frames,
                   note)


def _sample_notes(group, index: int, rec: Recording, sampled: Sampled | None, config,
                  every_frame: bool) -> list[str]:
    """What differs from a store's sample for prepared recording `index` (`rec`): its skeleton sampled,
    video frames left without their skeleton by it, a long video cut to its first frames in a store of
    every frame (`every_frame`: the checkpoint's store keeps every frame, up to MAX_FRAMES), a crop not
    placed around the person."""
    notes = [sampled.note] if sampled is not None else []
    held = int(group["rgb/num_source_frames"][index]) if config.uses_rgb else 0
    if sampled is None and every_frame and held > MAX_FRAMES:
        notes.append(f"the video has {held} frames, more than the {MAX_FRAMES} a store holds: kept its first "
                     f"{MAX_FRAMES}, as a store of every frame does")
    if sampled is not None and config.uses_rgb and config.uses_skeleton:
        source = group["rgb/frame_index"][index]
        source = source[source >= 0]
        prepared = group["skeleton/frame_index"][index][:int(group["samples/num_frames"][index])]
        lost = int((np.isin(source, sampled.kept) & ~np.isin(source, prepared)).sum())
        if lost:
            notes.append(f"{lost} of the {len(source)} video frames kept have no skeleton frame prepared "
                         f"(the video has {int(group['rgb/num_source_frames'][index])} frames, its skeleton "
                         f"file {sampled.num_frames}): the model sees no actor there")
    if config.uses_rgb and skeleton_box(group, index)[0] is None:
        why = "no skeleton given" if rec.skeleton is None else skeleton_box(group, index)[1]
        notes.append(f"the video was cropped to the centred square of its frames ({why}), where the model "
                     "was trained on crops around the person (its skeleton's box)"
                     + ("; give --skeleton for that crop" if rec.skeleton is None else ""))
    return notes


def predict_recordings(checkpoint: str | Path, recordings: list[Recording], clips: int = 1,
                       device: str | None = None, batch_size: int = 16, workers: int = 0,
                       progress: bool = False, picture: Path | None = None) -> list[Prediction | Failure]:
    """One Prediction (or Failure, saying why) per recording, in order, by the checkpoint's network
    averaged over `clips` clips (the multi-clip test of `ntu-train eval`). The checkpoint's model decides
    which files a recording needs: hcn the skeleton, i3d the video (a skeleton, where given, places the
    crop, as in the store), the fused models both. `picture`: draw each prediction there
    (`prediction_picture`; with several recordings, one file each, named `<stem>_<recording><suffix>`)."""
    path = Path(checkpoint)
    saved = load_checkpoint(path)
    config = evaluation_config(saved, device, workers)
    stages = config.stages  # heatmaps are drawn from the skeleton file's 2D joints
    need_rgb, need_skeleton = config.data.clip.needs
    results: dict[str, Prediction | Failure] = {}
    usable = []
    for rec in recordings:
        needs = (("skeleton", need_skeleton, rec.skeleton), ("video", need_rgb, rec.video))
        lacking = [what for what, need, given in needs if need and not given]
        if lacking:
            results[rec.name] = Failure(rec.name, f"{saved.model_name} needs the "
                                                  f"{' and the '.join(lacking)}, and none was given")
        else:
            usable.append(rec)
    if usable:
        with tempfile.TemporaryDirectory(prefix="ntu-predict-", dir=_memory_dir()) as tmp:
            results.update(_predict_prepared(saved, path, config, usable, stages, Path(tmp), clips,
                                             batch_size, progress, picture, len(recordings) > 1))
    return [results[rec.name] for rec in recordings]


def _predict_prepared(saved, path: Path, config, recordings: list[Recording], stages: tuple[str, ...],
                      tmp: Path, clips: int, batch_size: int, progress: bool, picture: Path | None,
                      several: bool) -> dict[str, Prediction | Failure]:
    store = tmp / "recordings.zarr"
    names = dict(zip(placeholder_names(saved.dataset, len(recordings)), recordings, strict=True))
    links: dict[Path, Path] = {}
    skeletons = _link(tmp / "skeletons", {n: r.skeleton for n, r in names.items() if r.skeleton}, ".skeleton",
                      links)
    videos = _link(tmp / "videos", {n: r.video for n, r in names.items() if r.video and config.uses_rgb},
                   "_rgb.avi", links)
    options = rgb_extract_options(saved.inputs.get("rgb", {}))
    sampled: dict[str, Sampled] = {}
    for ntu_name, rec in names.items():
        long = sample_long_skeleton(rec.skeleton, config.uses_rgb,
                                    options.get("rgb_frames", RgbOptions().frames)) if rec.skeleton else None
        if long is not None:  # the file itself in place of the link: the stage reads the sampled frames
            sampled[ntu_name] = long
            (skeletons / f"{ntu_name}.skeleton").unlink()
            (skeletons / f"{ntu_name}.skeleton").write_bytes(long.data)
    extract(ExtractConfig(out=store, skeletons=skeletons, videos=videos, dataset=saved.dataset,
                          progress=progress, **options), say=lambda _: None)
    group = open_store(store)
    order = read_strings(group["samples/name"])
    indices, _ = usable_samples(group, np.arange(len(order)), stages)
    results: dict[str, Prediction | Failure] = {}
    for i in sorted(set(range(len(order))) - set(indices.tolist())):
        rec = names[order[i]]
        results[rec.name] = _failure(group, i, stages, rec, links)
    if len(indices) == 0:
        return results
    info = samples_info(group, store, indices, "", "recordings", config.uses_rgb, {})
    check_checkpoint_fits(saved, path, None, info.class_names)
    net, runtime = trained_network(saved, path, config)
    data = SplitData(info, config.clip_spec(), runtime.device, config.seed, config.workers)
    logits, positions = predict(net, data, batch_size, runtime, clips, average=config.run.test_average,
                                flip_test=config.run.flip_test)
    seen = first_clip_frames(data, clips) if picture is not None else None
    caption = f"what {saved.model_name} saw: " + (f"clip 1 of {clips}" if clips > 1 else "its clip")
    for row, position in zip(logits.numpy(), positions.tolist(), strict=True):
        ntu_name = order[int(indices[position])]
        rec = names[ntu_name]
        notes = _sample_notes(group, int(indices[position]), rec, sampled.get(ntu_name), config,
                              config.uses_rgb and options.get("rgb_frames", RgbOptions().frames) is None)
        result = Prediction(rec.name, row.astype(np.float32), info.class_names,
                            true_class(rec.name, info.class_names), notes=tuple(notes))
        if picture is not None:
            out = picture.with_name(f"{picture.stem}_{rec.name}{picture.suffix}") if several else picture
            image = prediction_picture(group, int(indices[position]), seen[position], rec.name, result.top(),
                                       config.uses_rgb, result.true_class, caption)
            write_image(out, image)
            result = dataclasses.replace(result, picture=out)
        results[rec.name] = result
    return results


def first_clip_frames(data: SplitData, clips: int) -> np.ndarray:
    """(n, T) the positions of each sample's first test clip, as the data path takes them (`Batch.frames`):
    stored RGB frames for models with RGB, kept skeleton frames (rounded) for skeleton models."""
    return data.clip_frames(0, train=False, clip=0, clips=clips)
