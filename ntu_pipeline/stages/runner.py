"""`ntu-prep extract`: raw folders -> a prepared store, one stage after another, in parallel, resumably.

Usage:
    summary = extract(ExtractConfig(skeletons=Path("nturgb+d_skeletons"), videos=Path("nturgb+d_rgb"),
                                    out=Path("ntu60.zarr")))
    print(summary.describe())

How it runs: the inputs are discovered (`inputs.py`: recursively, links followed) and the sample table
is the sorted union of their sample names (or, on an existing store, the table it has). Each stage
(`Stage`: the skeleton stage, then the RGB stage, which crops around the stored skeleton) owns arrays
it declares; its sample i
belongs to shard i // shard_size, and one task per shard prepares those samples, writes that shard's
files and nothing else, records each file's size and crc32c, then marks the shard done. A rerun on the
same input and options skips the shards marked done whose files are intact and re-prepares the rest,
so an interrupted run (Ctrl-C, kill -9) or a damaged file ends in a store identical to an
uninterrupted run's. Tasks run in this process, on loky processes, or on a dask.distributed cluster
(`backends.py`; a cluster's workers must see the input and the store at the same absolute paths). The
whole run holds the store's write lock (`store/lock.py`), and its tasks carry the lock's lease: a worker
whose run was killed writes nothing more. A stage is recorded `extracting` from the moment this run
works on it, and `complete` only once every shard is written (`store/status.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .. import __version__
from ..errors import ConfigError, NTUPrepError, StoreFormatError
from ..manifests import DATASETS, all_samples, class_names, missing_samples
from ..progress import ProgressBar
from ..store.lock import Lease, store_lock
from ..store.schema import (
    MAX_FRAMES,
    clear_store_folder,
    create_stage_arrays,
    create_store,
    is_store,
    meta_columns,
    open_store,
    read_strings,
    stage_info,
)
from ..store.status import STATUS_CODES, State, Status, count_noted, describe_counts, labelled, status_counts
from ..store.verify import damaged_shards
from .backends import BACKENDS, Backend, run_tasks
from .inputs import check_out, discover, infer_dataset, input_digest, outside_dataset
from .interrupt import deferred_interrupts
from .resources import check_extract_memory, check_jobs, check_shard_sizes
from .rgb_options import RgbCodec, RgbOptions
from .stage import SampleEntry, ShardTask, Stage


@dataclass
class StageSummary:
    name: str
    counts: dict[Status, int]
    failures: list[tuple[str, str]]
    shards_written: int
    shards_resumed: int
    shards_repaired: int
    seconds: float
    samples_prepared: int
    noted: int = 0  # ok samples whose note says something (shown as "ok 5 (2 noted)")

    def describe(self) -> list[str]:
        rate = self.samples_prepared / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.name}: {describe_counts(self.counts, self.noted)}",
                 f"{self.name}: shards {self.shards_written} written ({self.shards_repaired} of them "
                 f"repaired), {self.shards_resumed} already done; {self.samples_prepared} samples in "
                 f"{self.seconds:.1f} s ({rate:.0f} samples/s)"]
        lines += [f"{self.name} failed: {name}: {reason}" for name, reason in self.failures]
        return lines


@dataclass
class ExtractSummary:
    store: Path
    dataset: str
    num_samples: int
    stages: list[StageSummary]
    ignored: list[tuple[str, str]]
    seconds: float
    not_in_input: int = 0

    @property
    def failed_stages(self) -> list[str]:
        """The stages in which every sample they had input for failed (what makes `extract` exit 1)."""
        out = []
        for stage in self.stages:
            tried = sum(n for status, n in stage.counts.items() if status != Status.ABSENT)
            if tried and stage.counts[Status.FAILED] == tried:
                out.append(stage.name)
        return out

    def failure_line(self) -> str:
        """The one line that ends a run in which a stage prepared nothing, true to the summary above it:
        "every sample failed" only when no stage stored a sample; else which stage failed whole and what
        the others stored."""
        failed = self.failed_stages
        kept = [f"{s.name} {describe_counts(s.counts, s.noted)}" for s in self.stages if s.name not in failed]
        if not kept:
            return "every sample failed: nothing usable was prepared (reasons above)"
        return (f"every {' and '.join(failed)} sample failed: that stage prepared nothing (reasons above); "
                f"stored: {'; '.join(kept)}")

    def describe(self) -> str:
        lines = [f"store: {self.store} ({self.dataset}, {self.num_samples} samples) in {self.seconds:.1f} s"]
        for stage in self.stages:
            lines += stage.describe()
        if self.not_in_input:
            lines.append(f"{self.not_in_input} samples of {self.dataset} are not in the input folders")
        lines += [f"ignored: {path}: {reason}" for path, reason in self.ignored]
        return "\n".join(lines)


@dataclass(frozen=True)
class ExtractConfig:
    """One `ntu-prep extract` run. Only the stages' `options` shape the store's content."""

    out: Path
    skeletons: Path | None = None
    videos: Path | None = None
    dataset: str | None = None  # ntu60 | ntu120; None: ntu120 if any setup > 17 or action > 60
    jobs: int = 1
    backend: Backend = "loky"
    scheduler: str | None = None  # dask scheduler address; None: a LocalCluster of `jobs` workers
    shard_size: int = 128
    rgb_frames: int | None = RgbOptions.frames  # None: every source frame (up to 300)
    rgb_size: int = RgbOptions.size
    rgb_quality: int = RgbOptions.quality
    rgb_codec: RgbCodec = RgbOptions.codec
    rgb_shard_size: int = 16
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.skeletons is None and self.videos is None:
            raise ConfigError("give --skeletons, --videos or both")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {DATASETS}, not {self.dataset!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, not {self.backend!r}")
        check_jobs(self.jobs)
        check_shard_sizes(self.shard_size, self.rgb_shard_size)
        if self.scheduler and self.backend != "dask":
            raise ConfigError("--scheduler needs --backend dask")
        if self.videos is not None:
            self.rgb_options  # noqa: B018 (checks them before any work is done)

    @property
    def rgb_options(self) -> RgbOptions:
        return RgbOptions(self.rgb_frames, self.rgb_size, self.rgb_quality, self.rgb_codec)


# ---- the store ---------------------------------------------------------------------------------

def _open_or_create(config: ExtractConfig, names: list[str], attrs: dict,
                    say: Callable[[str], None]) -> tuple[zarr.Group, bool]:
    out = config.out
    contents = list(out.iterdir())
    if contents and config.overwrite:
        say(f"replacing the store {out} (--overwrite)")
        clear_store_folder(out)
    elif contents:
        group = open_store(out, mode="r+", check=False)
        if group.attrs.get("state") != State.CREATING:  # else a kill interrupted its creation: start again
            if config.dataset and group.attrs["dataset"] != config.dataset:
                raise StoreFormatError(f"{out} holds {group.attrs['dataset']}, not {config.dataset}; "
                                       "choose another --out, or pass --overwrite to replace it")
            open_store(out, check=True)  # refuses a store missing arrays it recorded
            return group, True
        clear_store_folder(out)
    return create_store(out, names, attrs), False


def _repair_meta(group: zarr.Group, say: Callable[[str], None]) -> None:
    """Rewrite the name-derived columns if they were damaged (the names themselves cannot be)."""
    names = read_strings(group["samples/name"])
    if names != sorted(names) or not all(names):
        raise StoreFormatError(f"{group.store.root}: samples/name is damaged; rebuild the store with "
                               "--overwrite")
    for field_name, values in meta_columns(names).items():
        array = group[f"samples/{field_name}"]
        if not np.array_equal(array[:], values):
            say(f"rewriting samples/{field_name} (it differed from the sample names)")
            array[:] = values


# ---- the stages --------------------------------------------------------------------------------

def warm_parser(say: Callable[[str], None]) -> None:
    """Load the compiled skeleton parser here, compiling it first if this install never has."""
    from ..skeleton.parse import parse_skeleton_bytes, parser_is_compiled

    if not parser_is_compiled():
        say("compiling the skeleton parser (once per install, about 10 s; cached for every later run)")
    parse_skeleton_bytes(b"0\n", "warm-up")


def _set_stage(group: zarr.Group, name: str, **changes) -> None:
    group.attrs["stages"] = {**group.attrs["stages"], name: {**group.attrs["stages"][name], **changes}}


def _check_stage(config: ExtractConfig, stage: Stage, info: dict, source: dict) -> None:
    """Refuse to resume a stage made with other options or from other input."""
    for key, want in (("options", stage.options), ("shard_size", stage.shard_size)):
        if info[key] != want:
            raise StoreFormatError(
                f"{config.out}: its {stage.name} arrays were made with other options ({key}: {info[key]} "
                f"here, {want} now); choose another --out, or pass --overwrite to replace the store")
    if info["source"]["digest"] != source["digest"]:
        raise StoreFormatError(
            f"{config.out}: its {stage.name} arrays were made from other {stage.input_kind} (the "
            f"files, their sizes or times differ from {info['source']['folder']}); choose another "
            "--out, or pass --overwrite to replace the store")


def _shard_tasks(config: ExtractConfig, stage: Stage, names: list[str], files: dict[str, Path],
                 done: np.ndarray, missing: frozenset[str], lease: Lease) -> list[ShardTask]:
    tasks = []
    for shard, start in enumerate(range(0, len(names), stage.shard_size)):
        if done[shard]:
            continue
        chunk = names[start:start + stage.shard_size]
        entries = tuple(SampleEntry(n, start + j, str(files[n]) if n in files else None, n in missing)
                        for j, n in enumerate(chunk))
        tasks.append(ShardTask(str(config.out.resolve()), stage, shard, start, entries, lease))
    return tasks


def _run_stage(group: zarr.Group, stage: Stage, names: list[str], files: dict[str, Path], folder: Path,
               config: ExtractConfig, dataset: str, lease: Lease, say: Callable[[str], None]) -> StageSummary:
    """Create or resume one stage, run its shard tasks, and record it complete."""
    source = {"folder": str(folder.resolve()), "num_files": len(files), "digest": input_digest(files, folder)}
    info = stage_info(group, stage.name)
    if info is not None:
        _check_stage(config, stage, info, source)
    # Unfinished from before the first array of the stage exists until every shard of every stage is
    # written: a reader never takes a half-created stage for a complete store.
    group.attrs["state"] = State.EXTRACTING
    if info is None:
        create_stage_arrays(group, stage.arrays, stage.shard_size, stage.done, stage.digest)
        group.attrs["stages"] = {**group.attrs["stages"], stage.name: stage.record(source)}
    _set_stage(group, stage.name, state=State.EXTRACTING)
    damaged = sorted({shard for shard, _, _ in damaged_shards(group, stage.name)})
    if damaged:
        say(f"{stage.name}: re-preparing {len(damaged)} damaged shard(s): {damaged[:10]}")
        for shard in damaged:
            group[stage.done][shard] = 0
    done = group[stage.done][:]
    missing = missing_samples(dataset) if stage.name == "skeleton" else frozenset()
    tasks = _shard_tasks(config, stage, names, files, done, missing, lease)
    todo = sum(len(t.entries) for t in tasks)
    started = time.monotonic()
    with ProgressBar(todo, "samples", stage.name, enabled=config.progress) as bar:
        for result in run_tasks(tasks, config.jobs, config.backend, config.scheduler):
            bar.advance(result["samples"])
    seconds = time.monotonic() - started
    status = group[stage.status][:]
    counts = status_counts(status)
    pending = counts[Status.PENDING]
    if pending or not group[stage.done][:].all():  # never expected: a task that said done
        raise NTUPrepError(f"{config.out}: {stage.name}: {pending} rows still pending after every shard ran; "
                           "rerun the same command")
    _set_stage(group, stage.name, counts=labelled(counts), state=State.COMPLETE)
    errors = read_strings(group[stage.error])
    failures = [(names[i], errors[i]) for i in np.flatnonzero(status == Status.FAILED)]
    noted = count_noted(status, group[stage.note])
    return StageSummary(stage.name, counts, failures, len(tasks), len(done) - len(tasks), len(damaged),
                        seconds, todo, noted)


def _stages(config: ExtractConfig, inputs: dict[str, tuple[Path, dict[str, Path]]]) -> list[Stage]:
    from .skeleton import skeleton_stage

    stages = []
    if "skeleton" in inputs:
        stages.append(skeleton_stage(config.shard_size))
    if "rgb" in inputs:
        from .rgb import rgb_stage

        stages.append(rgb_stage(config.rgb_options, config.rgb_shard_size))
    return stages


def extract(config: ExtractConfig, say: Callable[[str], None] = print) -> ExtractSummary:
    """Run (or resume) the stages the config has input for; see the module docstring.

    `say` receives the messages a user should see while it runs (not the summary). ConfigError, before
    anything is touched, for a run that would not fit in this machine's memory (`resources.py`)."""
    started = time.monotonic()
    check_extract_memory(config)
    inputs: dict[str, tuple[Path, dict[str, Path]]] = {}
    ignored: list[tuple[str, str]] = []
    for stage_name, folder, suffix in (("skeleton", config.skeletons, ".skeleton"),
                                       ("rgb", config.videos, "_rgb.avi")):
        if folder is None:
            continue
        if not folder.is_dir():
            raise NTUPrepError(f"{folder}: no such folder")
        files, left_out = discover(folder, suffix)
        ignored += left_out
        if not files:
            raise NTUPrepError(f"{folder}: no *{suffix} file with an NTU sample name under it")
        inputs[stage_name] = (folder, files)
    check_out(config.out, [folder for folder, _ in inputs.values()])

    with store_lock(config.out, "extract") as lease, deferred_interrupts():
        existing = is_store(config.out) and not config.overwrite
        every_name = sorted({n for _, files in inputs.values() for n in files})
        if existing and open_store(config.out, check=False).attrs.get("state") != State.CREATING:
            dataset = open_store(config.out, check=False).attrs["dataset"]
        elif config.dataset:
            dataset = config.dataset
        else:
            dataset = infer_dataset(every_name)
            say(f"dataset: {dataset}, inferred from the file names (ntu120 if any setup > 17 or "
                "action > 60); pass --dataset to choose")
        for _, files in inputs.values():
            ignored += outside_dataset(files, dataset)
        names = sorted({n for _, files in inputs.values() for n in files})
        attrs = {"dataset": dataset, "ntu_prep_version": __version__, "status_codes": STATUS_CODES,
                 "max_frames": MAX_FRAMES, "class_names": list(class_names(dataset)), "ignored_files": []}
        group, resumed = _open_or_create(config, names, attrs, say)
        if resumed:
            _repair_meta(group, say)
            table = set(read_strings(group["samples/name"]))
            for _, files in inputs.values():
                for name in sorted(set(files) - table):
                    ignored.append((str(files.pop(name)), "not in this store's sample table (it was made "
                                    "from other input); extract both modalities together into a new --out"))
            names = read_strings(group["samples/name"])
        earlier = [(d["path"], d["reason"]) for d in group.attrs.get("ignored_files", [])]
        ignored = list(dict.fromkeys(earlier + ignored))
        group.attrs["ignored_files"] = [{"path": p, "reason": r} for p, r in ignored]
        skeleton = stage_info(group, "skeleton")
        if "rgb" in inputs and "skeleton" not in inputs and skeleton and skeleton["state"] != State.COMPLETE:
            raise NTUPrepError(f"{config.out}: its skeleton stage is unfinished and the RGB crop needs it; "
                               "rerun with --skeletons as well")
        if "skeleton" in inputs:
            warm_parser(say)
        summaries = []
        for stage in _stages(config, inputs):
            folder, files = inputs[stage.name]
            summaries.append(_run_stage(group, stage, names, files, folder, config, dataset, lease, say))
        states = [info["state"] for info in group.attrs["stages"].values()]
        complete = all(s == State.COMPLETE for s in states)
        group.attrs["state"] = State.COMPLETE if complete else State.EXTRACTING
    return ExtractSummary(
        store=config.out, dataset=dataset, num_samples=len(names), stages=summaries, ignored=ignored,
        seconds=time.monotonic() - started, not_in_input=len(set(all_samples(dataset)) - set(names)),
    )
