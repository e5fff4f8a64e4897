"""The CUDA paths of training, checked without a GPU, and bench/gpu_check.py's rows (gpu_rows.py) run
on the CPU.

The `meta` device stands in for a GPU: it refuses a CPU tensor mixed into its ops (as CUDA does), has no
values to read back (so .item(), .cpu(), bool() and a Python `if` on a tensor fail, as they would wait
on CUDA), and a dispatch mode sees every copy from the host to it (on CUDA a wait unless non-blocking
from pinned memory). The last test needs CUDA and runs steps under the sync debug mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import model.data.split
import model.training.epoch
from model.data import transforms as T
from model.data.skeletons import load_packed
from model.data.split import ClipSpec, SplitData, read_split
from model.training.checkpoint import SUMS
from model.training.epoch import TrainProgress

REPO = Path(__file__).resolve().parent.parent


def _bench(name: str):
    """bench/`name`.py loaded as the module `name` (dataclasses look their module up by name)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _bench("gpu_check")
gpu_rows = sys.modules["gpu_rows"]  # the rows, imported by gpu_check from bench/ (one module: patchable)
model_speed, train_speed, rgb_loader = _bench("model_speed"), _bench("train_speed"), _bench("rgb_loader")

META = torch.device("meta")
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: why one thread


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """gpu_check's own store at its tiny sizes: 12 samples, skeletons and 16 RGB frames of 64^2, xsub."""
    return gpu_rows.synthetic_store(tmp_path_factory.mktemp("gpu_paths"), gpu_check.TINY)


# --- the meta device: device mixing, read-backs and host copies ---------------------------------------

class HostCopies(TorchDispatchMode):
    """Records each op that takes a host tensor (not a 0-d scalar) into `meta` work: on CUDA a copy to
    the device that waits. A non-blocking copy passes (from pinned memory on CUDA: the DataLoader's
    clips), and so does whatever runs while `allowed` (the per-epoch tables `_to_device` sends)."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.allowed = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        non_blocking = kwargs.get("non_blocking", False) or (
            func is torch.ops.aten.copy_.default and len(args) > 2 and args[2])
        if not (self.allowed or non_blocking):
            given = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            made = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            host = [tuple(t.shape) for t in given if t.device.type == "cpu" and t.dim() > 0]
            if host and any(t.device.type == "meta" for t in given + made):
                self.found.append(f"{func}: host tensors {host}")
        return out

    def made_from_host_data(self, what: str, tensor: torch.Tensor) -> None:
        """torch.tensor(data, device=...) and friends copy without passing the dispatcher."""
        if tensor.device.type == "meta" and not self.allowed:
            self.found.append(f"{what}: made from host data on the device")


@contextmanager
def watching_host_copies(monkeypatch) -> Iterator[HostCopies]:
    watch = HostCopies()

    def factory(make, what):
        def made(*args, **kwargs):
            tensor = make(*args, **kwargs)
            watch.made_from_host_data(what, tensor)
            return tensor
        return made

    for name in ("tensor", "as_tensor"):
        monkeypatch.setattr(torch, name, factory(getattr(torch, name), f"torch.{name}"))
    monkeypatch.setattr(torch.Tensor, "new_tensor", factory(torch.Tensor.new_tensor, "Tensor.new_tensor"))
    to_device = model.data.split._to_device

    def per_epoch(array, device):  # pinned and non-blocking on CUDA, once an epoch: allowed
        watch.allowed = True
        try:
            return to_device(array, device)
        finally:
            watch.allowed = False

    monkeypatch.setattr(model.data.split, "_to_device", per_epoch)
    with watch:
        yield watch


def test_the_watch_sees_host_data_sent_in_a_step(monkeypatch):
    """The watch is not blind: a joint index made from the host list inside a step (what the lazily
    cached mirror index did in the first training step) and a host index tensor are both reported;
    the index made ahead (`mirror_index`) and a non-blocking copy are not."""
    skeleton = torch.empty(2, 3, 16, 25, 2, device=META)
    flip = torch.zeros(2, dtype=torch.bool, device=META)
    index = T.mirror_index(META)
    with watching_host_copies(monkeypatch) as watch:
        T.mirror_skeleton(skeleton, flip, index=index)
        torch.ones(4).to(META, non_blocking=True)
        assert watch.found == []
        T.mirror_skeleton(skeleton, flip)
        skeleton[torch.tensor([0, 1])]
    assert len(watch.found) == 2, watch.found


def test_resident_skeletons_load_and_normalise_on_the_device(tiny_store):
    """load_packed normalises each shard's block on the device: catches a tensor made on the CPU and
    mixed in there (align_to_axes' torch.eye(3) without a device: every skeleton model failed to load
    its resident skeletons on CUDA)."""
    info = read_split(tiny_store, "xsub", "train")
    frames = int(np.maximum(info.num_frames, 1).sum())
    for how in T.NORMALIZATIONS:
        packed = load_packed(tiny_store, info.indices, info.num_frames, how, device=META)
        assert packed.frames.device == META and packed.frames.shape == (frames, 2, 25, 3), how
        assert packed.starts.device == packed.lengths.device == META


@pytest.mark.parametrize("name", gpu_rows.VARIANTS)
def test_a_training_epoch_on_the_device_mixes_reads_and_copies_nothing(name, tiny_store, monkeypatch):
    """An epoch of `ntu-train`'s real data path (resident skeletons, the RGB DataLoader, crops and flips
    on the device) and step (Trainer.train_epoch) on `meta`. Catches, in the data path, the models and
    the step: a CPU tensor mixed into device work, any value read back, and any copy from the host after
    the epoch's tables went (the mirror index, cached lazily in the first step, was one: a wait in a
    step on CUDA)."""
    spec = ClipSpec(frames=16, skeleton=name != "i3d", rgb=name != "hcn", crop=32)
    info = read_split(tiny_store, "xsub", "train", spec.rgb, spec.skeleton)
    data = SplitData(info, spec, META)
    trainer = gpu_rows.make_trainer(name, META, data, 2, 16, 32, len(info.class_names))
    monkeypatch.setattr(model.training.epoch, "LOG_EVERY", 10**6)  # the sums' read-back: nothing on meta
    sums = torch.zeros(len(SUMS), dtype=torch.float64, device=META)
    with watching_host_copies(monkeypatch) as watch:
        bar = TrainProgress(trainer.steps, "clips", "meta", enabled=False)
        sums, _ = trainer.train_epoch(0, 0, sums, bar, lambda *_: None)
    assert watch.found == []
    assert trainer.steps >= 2 and sums.device == META


def _crop_clips_converting_first(clips, boxes, flip, crop):
    """crop_clips as it was: the uint8 clip permuted, copied, then converted whole, scaled out of place."""
    b, t, s = clips.shape[:3]
    x = clips.permute(0, 1, 4, 2, 3).reshape(b, t * 3, s, s).float()
    grid = F.affine_grid(T._crop_affine(boxes, flip, s).float(), [b, t * 3, crop, crop], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x.view(b, t, 3, crop, crop).transpose(1, 2) / 127.5 - 1.0


def test_crop_clips_gives_what_converting_the_whole_clip_first_gave():
    """The one-pass conversion and the in-place scaling change no value: random and centre boxes,
    flipped and not, are equal to the old path's to the bit."""
    gen = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (4, 3, 40, 40, 3), dtype=torch.uint8, generator=gen)
    flip = torch.tensor([False, True, True, False])
    random_boxes = T.crop_boxes(torch.rand(4, 4, generator=gen), 4, 40, 24, CPU)
    for boxes in (random_boxes, T.crop_boxes(None, 4, 40, 24, CPU)):
        out = T.crop_clips(clips, boxes, flip, 24)
        assert out.shape == (4, 3, 3, 24, 24) and out.dtype == torch.float32
        assert torch.equal(out, _crop_clips_converting_first(clips, boxes, flip, 24))


# --- bench/gpu_check.py on the CPU --------------------------------------------------------------------

def test_without_cuda_the_check_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA device" in out


def test_the_script_finds_its_rows_and_without_cuda_says_so_in_one_line():
    """`python bench/gpu_check.py` as `make gpu-check` runs it, in a fresh process (CUDA hidden): catches
    the command failing to import its rows (bench/gpu_rows.py) when run as a script."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 2, run.stderr
    assert run.stdout.count("\n") == 1 and "no CUDA device" in run.stdout, run.stdout


def test_a_failed_row_is_tabled_and_fails_the_run(capsys, monkeypatch):
    def broken() -> str:
        raise gpu_rows.CheckFailed("nothing happened")

    monkeypatch.setattr(gpu_check, "checks", lambda *_: [("fine", lambda: "ran"), ("broken", broken)])
    assert gpu_check.main(["--cpu-dry-run"]) == 1
    table = capsys.readouterr().out.split("\n\n")[-1]
    assert "1 failed" in table and "CheckFailed: nothing happened" in table and "fine" in table


def test_step_rates_run_the_trainer_step_in_each_mode_and_halve_a_batch_out_of_memory(monkeypatch):
    """The hcn row through Trainer.train_epoch in fp32, bf16 and compile (eager backend on the CPU),
    ratios to fp32; and a batch that runs out of memory in fp32 is halved for every mode, and said."""
    line = gpu_rows.step_rates("hcn", CPU, gpu_check.TINY)
    assert line.startswith("fp32 ") and "bf16 " in line and "compile " in line and line.count("x)") == 2
    batches = []
    real = gpu_rows._step_rate

    def small_memory(name, mode, device, sizes, batch):
        batches.append((mode, batch))
        if batch > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return real(name, mode, device, sizes, batch)

    monkeypatch.setattr(gpu_rows, "_step_rate", small_memory)
    line = gpu_rows.step_rates("hcn", CPU, dataclasses.replace(gpu_check.TINY, batch=16), ("fp32", "bf16"))
    assert batches == [("fp32", 16), ("fp32", 8), ("fp32", 4), ("bf16", 4)]
    assert line.endswith("at batch 4 (8 ran out of memory)")


def test_memory_and_epoch_rows_run_their_steps():
    assert "2 steps at batch 2 ran" in gpu_rows.peak_memory("hcn", CPU, gpu_check.TINY)
    line = gpu_rows.hcn_epoch(CPU, gpu_check.TINY)
    assert line.startswith("130 clips in ") and "batch 64" in line


def test_the_ddp_row_joins_a_group_and_wraps_the_network(monkeypatch):
    """As torchrun's only process: start_processes joins a process group (gloo on the CPU) although
    the world is one process, the network runs under DistributedDataParallel and its steps move it;
    the group is left and the environment restored afterwards. Catches the row testing nothing (no
    group at world size 1, a model without BatchNorm)."""
    for key in ("RANK", "WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    line = gpu_rows.ddp(CPU, gpu_check.TINY)
    assert line.startswith("gloo, world 1, DistributedDataParallel ccdfarm")
    assert " 0 BatchNorm" not in line and "BatchNorm" in line and "moved 0 " not in line
    assert not dist.is_initialized() and "RANK" not in os.environ and "MASTER_PORT" not in os.environ


def test_the_rgb_row_reads_rgb_alone_with_every_worker_busy(tiny_store):
    """The rgb-data split loads no skeletons and holds rgb_batches_per_worker batches a worker in one
    epoch (the samples repeated), so the workers never restart; the row times them on the CPU."""
    sizes = gpu_check.TINY
    data = gpu_rows.rgb_data_split(tiny_store, CPU, sizes, 2)
    assert data.skeletons is None and data.loader is not None and data.loader.num_workers == 2
    assert len(data) // sizes.rgb_batch >= sizes.rgb_batches_per_worker * 2
    line = gpu_rows.rgb_data(tiny_store, CPU, sizes, 2)
    assert "clips/s with 2 workers" in line and f"{(3 * 2 - 2) * sizes.rgb_batch} clips" in line


def test_the_speed_benches_time_a_step_that_reads_nothing_back():
    """bench/model_speed.py's and bench/train_speed.py's timed steps on `meta` (nothing to read back).
    Catches the per-step label-range check (heads_loss's check_range, a bool read back: on CUDA a
    host-device wait every step) left in a bench: its figures would time a synchronous step that
    `ntu-train` does not run."""
    args = argparse.Namespace(device="meta", num_classes=60, batch=2, frames=16, size=32, warmup=1, steps=1)
    assert model_speed.train_throughput("hcn", "fp32", args) > 0
    skeleton = torch.empty(2, 3, 16, 25, 2, device=META)
    labels = torch.zeros(2, dtype=torch.int64, device=META)
    sample = model.data.split.Batch(None, skeleton, skeleton, labels, torch.arange(2, device=META))
    assert train_speed.model_rate("hcn", sample, 60, 1, META) > 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores: the worker, the main process")
def test_the_loader_bench_counts_one_worker_from_its_own_cpu_time(tiny_store):
    """bench/rgb_loader.py's one-worker figure, through a real DataLoader over RGBClips: each pass is
    counted from the worker's CPU time, which is only there once the exhausted loader has joined its
    worker (read before, it is 0: a division by zero or an infinite rate), and the process is back on
    the measuring core afterwards."""
    from model.data.rgb_clips import ClipRequest

    cores = sorted(os.sched_getaffinity(0))
    requests = [ClipRequest(i, np.arange(16)) for i in range(12)]
    try:
        rates = rgb_loader.one_worker(tiny_store, requests, 2, 0, cores[0], cores[1], batch=2)
        assert os.sched_getaffinity(0) == {cores[0]}
    finally:
        os.sched_setaffinity(0, cores)
    assert len(rates) == 2 and all(0 < wall < np.inf and 0 < cpu < np.inf for wall, cpu in rates), rates


@pytest.mark.slow
def test_every_row_runs_in_the_cpu_dry_run(capsys):
    """`--cpu-dry-run`: every row of the GPU check at tiny sizes (its CUDA-only parts left out), one
    table, exit 0."""
    assert gpu_check.main(["--cpu-dry-run", "--workers", "1"]) == 0
    table = capsys.readouterr().out.split("\n\n")[-1].splitlines()
    every = gpu_rows.VARIANTS + gpu_rows.REFERENCE_VARIANTS
    labels = [line.split()[0] + (" " + line.split()[1] if line.split()[1] in every else "")
              for line in table[1:]]
    rows = [f"{row} {n}" for row in ("memory", "step") for n in every]
    rows += [f"no-sync {n}" for n in gpu_rows.VARIANTS]
    expected = ["store", *rows, "hcn-epoch", "ddp", "rgb-data"]
    assert labels == expected and all(" ok " in line for line in table[1:]), table


# --- CUDA -----------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs CUDA: the sync debug mode reports CUDA's host-device waits")
@pytest.mark.parametrize("name", gpu_rows.VARIANTS)
def test_cuda_steps_never_wait_for_the_device(name, tiny_store):
    """A real epoch of each model under torch.cuda.set_sync_debug_mode("error") (gpu_check's no-sync
    row): a host-device wait anywhere in the data path or the step raises."""
    line = gpu_rows.no_sync(name, tiny_store, torch.device("cuda", 0), gpu_check.TINY, 2)
    assert line.endswith("no host-device wait")
