"""The rows of bench/gpu_check.py: each checks or measures one CUDA path of training, returns its line.

    from gpu_rows import CheckSizes, step_rates   # bench/ on sys.path; gpu_check imports this, never back
    step_rates("ccdfarm", torch.device("cuda"), CheckSizes())  # "fp32 R, bf16 R (Nx), compile R (Nx) .."

Each row takes the device and a CheckSizes (what it runs at) and returns one result line, or
raises (CheckFailed where it ran but found what it checks for missing); gpu_check.py lists the rows,
runs them and prints the table. What each row runs is described in gpu_check.py's docstring. The rows
share `make_trainer` (the real `ntu-train` step, Trainer.train_epoch) and `run_epoch` (it, timed); on a
CPU every row runs at tiny sizes with its CUDA-only parts left out (tests/test_gpu_paths.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import model as models  # noqa: E402  (the repository on the path first)
from model.data.skeletons import PackedSkeletons  # noqa: E402
from model.data.split import Batch, ClipSpec, SplitData, SplitInfo, read_split  # noqa: E402
from model.training.checkpoint import SUMS  # noqa: E402
from model.training.config import TrainConfig  # noqa: E402
from model.training.distributed import Processes, start_processes, stop_processes  # noqa: E402
from model.training.epoch import Trainer, TrainProgress  # noqa: E402
from model.training.fit import make_optimizer  # noqa: E402
from model.training.recipes import RECIPES  # noqa: E402
from model.training.runtime import Runtime, build_network  # noqa: E402

VARIANTS = ("hcn", "i3d", "ccdfarm")
# The released models: memory and step rows, each at its own clip (`reference_shapes`).
REFERENCE_VARIANTS = ("ctrgcn", "posec3d", "slowonly", "rgbpose")
MODES = ("fp32", "bf16", "compile")


@dataclass(frozen=True)
class CheckSizes:
    """What the rows run at. frames: T of the clips (RGB and skeleton; a multiple of 16); crop: the RGB
    side; batch, warmup, steps: of the step and memory rows (compile_warmup compiles); sync_batch: the
    no-sync row's batch; epoch_clips: the hcn-epoch row's clips; store_*: the synthetic store (samples,
    stored RGB frames and side, extract jobs); ddp_*: the ddp row's clip and batch; rgb_batch and
    rgb_batches_per_worker: the rgb-data row's; backend: torch.compile's."""

    frames: int = 32
    crop: int = 224
    classes: int = 60
    batch: int = 32
    warmup: int = 3
    steps: int = 10
    compile_warmup: int = 2
    compile_steps: int = 5
    sync_batch: int = 4
    epoch_clips: int = 40_091  # NTU60 xsub's train split
    store_samples: int = 96
    store_frames: int = 32
    store_size: int = 256
    store_jobs: int = os.cpu_count() or 1
    ddp_frames: int = 16
    ddp_crop: int = 112
    ddp_batch: int = 4
    ddp_steps: int = 3
    rgb_batch: int = 16
    rgb_batches_per_worker: int = 8
    backend: str = "inductor"

    def __post_init__(self):
        if self.frames % 16 or self.ddp_frames % 16:
            raise ValueError(f"frames must be multiples of 16 (HCN), got {self.frames}, {self.ddp_frames}")
        if min(self.batch, self.sync_batch, self.ddp_batch) < 2:
            raise ValueError("batches must be >= 2 (DSFM's BatchNorm needs two clips in training)")
        if max(self.crop, self.ddp_crop) > self.store_size:
            raise ValueError(f"crops must fit the stored {self.store_size}^2 frames")
        if min(self.steps, self.compile_steps, self.store_jobs) < 1 or self.rgb_batches_per_worker < 2:
            raise ValueError("steps, compile_steps and store_jobs must be >= 1, rgb_batches_per_worker >= 2 "
                             "(the first batch of each worker is not timed)")


class CheckFailed(RuntimeError):
    """A row ran but found what it checks for missing (e.g. no SyncBatchNorm layer under DDP)."""


# --- the pieces the rows share ------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_store(root: Path, sizes: CheckSizes) -> Path:
    """A store with both modalities (store_frames of store_size^2) and the xsub split, from the
    synthetic corpus."""
    from ntu_pipeline.stages.runner import ExtractConfig, extract
    from ntu_pipeline.store import open_store
    from ntu_pipeline.store.splits import make_split
    from ntu_pipeline.synth.corpus import write_corpus

    raw, store = root / "raw", root / "check.zarr"
    write_corpus(raw, sizes.store_samples, 6, videos=True)
    extract(ExtractConfig(skeletons=raw, videos=raw, out=store, dataset="ntu60", jobs=sizes.store_jobs,
                          rgb_frames=sizes.store_frames, rgb_size=sizes.store_size, progress=False),
            say=lambda _: None)
    make_split(open_store(store, mode="r+"), "xsub")
    return store


def reference_shapes(name: str, frames: int, crop: int) -> dict[str, tuple[int, ...]]:
    """Per-clip input shapes of `name`, scaled from the paper's clip (frames, crop) = (32, 224) as the
    references scale theirs: CTR-GCN 2x the frames (64); PoseC3D 1.5x at crop / 4 (48 x 56^2); SlowOnly
    frames / 4 (8 x 224^2); RGBPose both (8 x 224^2 RGB, 32 x 56^2 heatmaps); the others the clip."""
    heat = crop // 4
    shapes = {
        "ctrgcn": {"skeleton": (3, 2 * frames, 25, 2)},
        "posec3d": {"heatmaps": (25, frames * 3 // 2, heat, heat)},
        "slowonly": {"rgb": (3, frames // 4, crop, crop)},
        "rgbpose": {"rgb": (3, frames // 4, crop, crop), "heatmaps": (25, frames, heat, heat)},
    }
    default = {"rgb": (3, frames, crop, crop), "skeleton": (3, frames, 25, 2)}
    return shapes.get(name) or {k: default[k] for k in models.network_spec(name).inputs}


def random_batch(name: str, batch: int, frames: int, crop: int, classes: int, device: torch.device) -> Batch:
    """A Batch of what `name` takes (`reference_shapes`), made on `device`: rgb in [-1, 1], skeleton and
    its motion, heatmaps in [0, 1]; labels (B,) in [0, classes)."""
    shapes = reference_shapes(name, frames, crop)
    rgb = skeleton = motion = heatmaps = None
    if "rgb" in shapes:
        rgb = torch.rand(batch, *shapes["rgb"], device=device) * 2 - 1
    if "skeleton" in shapes:
        skeleton = torch.randn(batch, *shapes["skeleton"], device=device)
        motion = models.skeleton_motion(skeleton)
    if "heatmaps" in shapes:
        heatmaps = torch.rand(batch, *shapes["heatmaps"], device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    return Batch(rgb, skeleton, motion, labels, torch.arange(batch, device=device), heatmaps=heatmaps)


class RepeatedBatch:
    """Stands in for SplitData in a Trainer: one batch, already on the device, `steps` times a call to
    `batches` (so a step is timed without the data path)."""

    def __init__(self, batch: Batch, steps: int):
        self.batch, self.steps = batch, steps

    def batches(self, epoch: int, batch_size: int, train: bool, start_step: int = 0) -> Iterator[Batch]:
        for _ in range(start_step, self.steps):
            yield self.batch


@dataclass(frozen=True)
class ContiguousRuntime(Runtime):
    """Runtime without channels_last_3d for the clip: fp32 eager as bench/model_speed.py's baseline."""

    def forward(self, net: nn.Module, rgb: Tensor | None, skeleton: Tensor | None,
                motion: Tensor | None, heatmaps: Tensor | None = None) -> dict[str, Tensor]:
        extra = {} if heatmaps is None else {"heatmaps": heatmaps}
        with self.autocast():
            return net(rgb=rgb, skeleton=skeleton, motion=motion, **extra)


def make_trainer(name: str, device: torch.device, data, batch: int, frames: int, crop: int, classes: int,
                 mode: str = "bf16", procs: Processes | None = None, sync_bn: bool = False,
                 backend: str = "inductor") -> Trainer:
    """An `ntu-train` Trainer of `name` on `device` (the real step) over `data` (a SplitData or a
    RepeatedBatch). mode: fp32 (contiguous, no autocast), bf16 (autocast on CUDA, channels_last_3d),
    compile (bf16 under torch.compile); procs: under DDP, the network wrapped in it (SyncBatchNorm where
    asked)."""
    config = TrainConfig.from_options(store="synthetic", protocol="xsub", model=name, out="unused",
                                      batch_size=batch, frames=frames, crop=crop, device=device.type,
                                      workers=0, progress=False, bf16=mode != "fp32")
    procs = procs or Processes(0, 1, device)
    if mode == "fp32":
        net, runtime = models.build(name, classes, **config.model_options()).to(device), \
            ContiguousRuntime(device, bf16=False)
    else:
        net, runtime = build_network(name, classes, config.model_options(), device, sync_bn), \
            Runtime(device, bf16=True)
    train_net: nn.Module = net
    if procs.group:
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type ==
                                                        "cuda" else None)
    if mode == "compile":
        train_net = torch.compile(train_net, backend=backend)
    steps = max(data.steps if isinstance(data, RepeatedBatch) else len(data.info) // batch, 1)
    return Trainer(config, procs, net, train_net, make_optimizer(net, config, []), runtime, data, steps)


def run_epoch(trainer: Trainer, epoch: int = 0) -> float:
    """Seconds of one epoch through Trainer.train_epoch, the device waited for before and after."""
    device = trainer.procs.device
    sums = torch.zeros(len(SUMS), dtype=torch.float64, device=device)
    bar = TrainProgress(total=trainer.steps, unit="clips", label="check", enabled=False)
    synchronize(device)
    start = time.perf_counter()
    trainer.train_epoch(epoch, 0, sums, bar, lambda *_: None)
    synchronize(device)
    return time.perf_counter() - start


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- the rows -----------------------------------------------------------------------------------------

def peak_memory(name: str, device: torch.device, sizes: CheckSizes) -> str:
    """Peak memory of two bf16 training steps of `name` at `sizes.batch`, its own inputs only (the
    second step holds the optimizer's state); on a CPU the steps run, nothing is measured."""
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batch = random_batch(name, sizes.batch, sizes.frames, sizes.crop, sizes.classes, device)
    trainer = make_trainer(name, device, RepeatedBatch(batch, 2), sizes.batch, sizes.frames, sizes.crop,
                           sizes.classes)
    run_epoch(trainer)
    if device.type != "cuda":
        return f"2 steps at batch {sizes.batch} ran; memory statistics are CUDA's"
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    del trainer, batch
    _free(device)
    return f"{peak:.1f} GiB at batch {sizes.batch} (bf16, channels_last_3d, optimizer state)"


def step_rates(name: str, device: torch.device, sizes: CheckSizes, modes: tuple[str, ...] = MODES) -> str:
    """Clips/s of Trainer steps of `name` in each of `modes` (fp32 first: the baseline) on one batch
    made on the device; the batch halves (for every mode) while fp32 runs out of memory."""
    batch, rates, note = sizes.batch, {}, ""
    for mode in modes:
        while True:
            try:
                rates[mode] = _step_rate(name, mode, device, sizes, batch)
                break
            except Exception as err:
                if not _is_oom(err) or batch <= 2 or rates:
                    raise
                note, batch = f" ({batch} ran out of memory)", batch // 2
    base = rates[modes[0]]
    parts = [f"{mode} {rate:.1f}" + ("" if mode == modes[0] else f" ({rate / base:.2f}x)")
             for mode, rate in rates.items()]
    return ", ".join(parts) + f" clips/s at batch {batch}{note}"


def _step_rate(name: str, mode: str, device: torch.device, sizes: CheckSizes, batch: int) -> float:
    _free(device)  # here, not in the except clause: its traceback holds the failed try's tensors
    torch.manual_seed(0)
    warmup, steps = (sizes.compile_warmup, sizes.compile_steps) if mode == "compile" else \
        (sizes.warmup, sizes.steps)
    data = RepeatedBatch(random_batch(name, batch, sizes.frames, sizes.crop, sizes.classes, device), warmup)
    trainer = None
    try:
        trainer = make_trainer(name, device, data, batch, sizes.frames, sizes.crop, sizes.classes, mode,
                               backend=sizes.backend)
        if warmup:
            run_epoch(trainer, 0)
        data.steps = steps
        return batch * steps / run_epoch(trainer, 1)
    finally:
        del trainer, data
        if mode == "compile":
            torch._dynamo.reset()  # the compiled graphs hold the network


@contextmanager
def _sync_debug_errors(device: torch.device):
    """torch.cuda.set_sync_debug_mode("error") on CUDA, nothing elsewhere (a CPU has no waits)."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def no_sync(name: str, store: Path, device: torch.device, sizes: CheckSizes, workers: int) -> str:
    """A real epoch of `name` on `store` (its train split at sizes.sync_batch) with the running sums
    read back after every step, under the sync debug mode on CUDA: a host-device wait raises."""
    from model.training import epoch

    config = TrainConfig.from_options(store=str(store), protocol="xsub", model=name, out="unused",
                                      frames=sizes.frames, crop=sizes.crop, device=device.type,
                                      workers=workers, progress=False)
    info = read_split(store, "xsub", "train", config.uses_rgb, config.uses_skeleton)
    data = SplitData(info, config.clip_spec(), device, config.seed, workers)
    trainer = make_trainer(name, device, data, sizes.sync_batch, sizes.frames, sizes.crop,
                           len(info.class_names))
    every, epoch.LOG_EVERY = epoch.LOG_EVERY, 1  # the sums sent and read back in every step
    try:
        with _sync_debug_errors(device):
            sums = torch.zeros(len(SUMS), dtype=torch.float64, device=device)
            bar = TrainProgress(trainer.steps, "clips", "no-sync", enabled=False)
            trainer.train_epoch(0, 0, sums, bar, lambda *_: None)
    finally:
        epoch.LOG_EVERY = every
    synchronize(device)  # after the debug mode: an error of the steps' kernels surfaces here
    checked = "no host-device wait" if device.type == "cuda" else "not checked for waits (CUDA only)"
    return f"{trainer.steps} steps at batch {sizes.sync_batch}, {workers} workers: {checked}"


def hcn_epoch(device: torch.device, sizes: CheckSizes) -> str:
    """An HCN epoch of sizes.epoch_clips resident synthetic clips (NTU-like lengths) at its recipe's
    batch, through the real data path (SplitData.batches) and step."""
    n, batch = sizes.epoch_clips, RECIPES["hcn"].batch_size
    rng = np.random.default_rng(0)
    frames = np.clip(rng.gamma(4.0, 85 / 4.0, n), 30, 300).astype(np.int64)  # NTU: 32-300, ~85 on average
    starts = np.concatenate([[0], np.cumsum(frames)[:-1]])
    packed = PackedSkeletons(torch.randn(int(frames.sum()), 2, 25, 3, device=device),
                             torch.from_numpy(starts).to(device), torch.from_numpy(frames).to(device))
    info = SplitInfo(store=Path("synthetic"), protocol="xsub", part="train", indices=np.arange(n),
                     labels=rng.integers(0, sizes.classes, n), num_frames=frames,
                     class_names=tuple(map(str, range(sizes.classes))), dataset="ntu60")
    data = SplitData(info, ClipSpec(frames=sizes.frames), device, skeletons=packed)
    seconds = run_epoch(make_trainer("hcn", device, data, batch, sizes.frames, sizes.crop, sizes.classes))
    return (f"{n} clips in {seconds:.1f} s ({n // batch * batch / seconds:.0f} clips/s, batch {batch}); "
            f"resident skeletons {packed.frames.numel() * 4 / 2**30:.2f} GiB")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _torchrun_environment():
    """This process as torchrun's only one: RANK 0 of WORLD_SIZE 1 at a free local port; the
    environment as it was afterwards."""
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ddp(device: torch.device, sizes: CheckSizes, name: str = "ccdfarm") -> str:
    """sizes.ddp_steps steps of `name` in one process started as torchrun starts it: the process group
    joined (nccl on CUDA, gloo on a CPU), the network under DistributedDataParallel with SyncBatchNorm
    (CUDA; a CPU keeps BatchNorm, SyncBatchNorm has no CPU kernel). Fails unless all of it happened."""
    import torch.distributed as dist

    with _torchrun_environment():
        procs = start_processes(device.type)
        try:
            if not (procs.group and dist.is_initialized()):
                raise CheckFailed("start_processes joined no process group under torchrun's environment")
            backend = dist.get_backend()
            cuda = procs.device.type == "cuda"
            batch = random_batch(name, sizes.ddp_batch, sizes.ddp_frames, sizes.ddp_crop, sizes.classes,
                                 procs.device)
            trainer = make_trainer(name, procs.device, RepeatedBatch(batch, sizes.ddp_steps),
                                   sizes.ddp_batch, sizes.ddp_frames, sizes.ddp_crop, sizes.classes,
                                   procs=procs, sync_bn=cuda)
            synced = sum(isinstance(m, nn.SyncBatchNorm) for m in trainer.net.modules())
            plain = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
                        for m in trainer.net.modules())
            if not isinstance(trainer.train_net, nn.parallel.DistributedDataParallel):
                raise CheckFailed("the network is not under DistributedDataParallel")
            if cuda and (synced == 0 or plain):
                raise CheckFailed(f"SyncBatchNorm asked for: {synced} SyncBatchNorm, {plain} BatchNorm left")
            before = [p.detach().clone() for p in trainer.net.parameters()]
            run_epoch(trainer)
            moved = sum(not torch.equal(a, p) for a, p in zip(before, trainer.net.parameters(), strict=True))
            if moved == 0:
                raise CheckFailed("the DDP steps changed no parameter")
        finally:
            stop_processes(procs)
    norms = f"{synced} SyncBatchNorm" if cuda else f"{plain} BatchNorm (SyncBatchNorm is CUDA's)"
    return (f"{backend}, world {procs.world}, DistributedDataParallel {name} {sizes.ddp_frames}x"
            f"{sizes.ddp_crop}^2, {norms}, {sizes.ddp_steps} steps moved {moved} parameters")


def ddp_processes(store: Path, tmp: Path, sizes: CheckSizes, processes: int) -> str:
    """`torchrun --nproc-per-node N -m cli.train fit --sync-bn` for one epoch of ccdfarm on `store`."""
    out = tmp / f"ddp{processes}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(processes), "-m", "cli.train", "fit", "--store", str(store), "--protocol", "xsub",
               "--model", "ccdfarm", "--out", str(out), "--epochs", "1", "--batch-size",
               str(sizes.ddp_batch * processes), "--frames", str(sizes.ddp_frames), "--crop",
               str(sizes.ddp_crop), "--device", "cuda", "--sync-bn", "--workers", "2", "--quiet"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if run.returncode != 0:
        raise CheckFailed(f"{processes} processes: exit {run.returncode}: {run.stderr.strip()[-600:]}")
    return f"{processes} processes (nccl, DDP, --sync-bn): a ccdfarm epoch and its evaluation ran"


def rgb_data_split(store: Path, device: torch.device, sizes: CheckSizes, workers: int) -> SplitData:
    """The store's train split for RGB alone (no skeleton loaded), its samples repeated so one epoch
    holds rgb_batches_per_worker batches a worker: every worker stays busy, none restarts."""
    info = read_split(store, "xsub", "train", need_rgb=True, need_skeleton=False)
    wanted = sizes.rgb_batch * sizes.rgb_batches_per_worker * max(workers, 1)
    repeats = math.ceil(wanted / len(info))
    tile = {key: np.tile(getattr(info, key), repeats) for key in ("indices", "labels", "num_frames")}
    info = dataclasses.replace(info, **tile)
    spec = ClipSpec(frames=sizes.store_frames, skeleton=False, rgb=True, crop=sizes.crop)
    return SplitData(info, spec, device, workers=workers)


def rgb_data(store: Path, device: torch.device, sizes: CheckSizes, workers: int) -> str:
    """Clips/s of the RGB path into the device (decoding in `workers` DataLoader workers, crop and flip
    there), timed from the batch after every worker has delivered one to the epoch's end."""
    data = rgb_data_split(store, device, sizes, workers)
    skip = max(workers, 1)
    clips = 0
    start = None
    for k, batch in enumerate(data.batches(0, sizes.rgb_batch, train=True)):
        if k == skip - 1:
            synchronize(device)
            start = time.perf_counter()
        elif k >= skip:
            clips += len(batch.labels)
    synchronize(device)
    rate = clips / (time.perf_counter() - start)
    side = sizes.store_size
    return (f"{rate:.0f} clips/s with {workers} workers ({rate / max(workers, 1):.1f} a worker), "
            f"{clips} clips of {sizes.store_frames} x {side}^2 JPEG frames at batch {sizes.rgb_batch}")
