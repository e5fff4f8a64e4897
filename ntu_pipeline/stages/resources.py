"""What a run may ask of this machine: the bounds of the size options, and the memory an extract will
need, checked before anything is touched (ConfigError: one line, exit 2).

    check_jobs(jobs)                          # 1..max_jobs(): 4 processes per core at most
    check_extract_memory(config)              # ConfigError when the run would not fit in memory
    extract_memory(config)                    # (bytes, how they add up) of a whole extract at its peak

Why: a size past what can work used to be found sample by sample (`--size 100000` failed every video
with "Unable to allocate 894 GiB" and went on), or never (`--jobs 100000` forks until the machine
stops). The estimate is an upper bound of what the run holds at once: per worker process its imports
(WORKER_BYTES, measured: 256 MB), plus the larger of a skeleton task (its shard's encoded arrays, at most
their raw size, and one parsed file) and an RGB task (one decoded clip twice over, three full video
frames, and its shard's encoded frames: JPEG at most half the raw pixels, lz4 at most all of them).
Against MemAvailable (/proc/meminfo): a machine that does not say is not checked, nor a run on a dask
cluster of its own (`--scheduler`: its workers' memory is theirs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from ..store.schema import MAX_FRAMES, SKELETON_ARRAYS

if TYPE_CHECKING:
    from .runner import ExtractConfig

JOBS_PER_CORE = 4  # more processes than this per core only wait for one
MAX_SHARD_SIZE = 4096  # skeleton samples a task: NTU120 in 28 tasks; a Ctrl-C waits for the tasks running
MAX_RGB_SHARD_SIZE = 1024  # RGB samples a task (16 by default)
WORKER_BYTES = 300 * 2**20  # a worker process with numpy, zarr, numba, PyAV, OpenCV loaded (256 MB measured)
SKELETON_FILE_BYTES = 16 * 2**20  # one parsed .skeleton file and its actors (a 300-frame, 4-body file)
VIDEO_FRAME_BYTES = 1920 * 1080 * 3  # one decoded full frame of an NTU video (RGB, 8 bits)
ENCODED_SHARE = {"jpeg": 0.5, "lz4": 1.0}  # encoded bytes per raw byte, at most (q100 JPEG is ~1/3)


def max_jobs() -> int:
    return JOBS_PER_CORE * (os.cpu_count() or 1)


def check_jobs(jobs: int) -> None:
    """ConfigError unless 1 <= jobs <= max_jobs()."""
    if not 1 <= jobs <= max_jobs():
        raise ConfigError(f"--jobs must be 1..{max_jobs()} ({JOBS_PER_CORE} per core of this machine's "
                          f"{os.cpu_count() or 1}; each is a process of ~0.3 GB), got {jobs}")


def check_shard_sizes(shard_size: int, rgb_shard_size: int) -> None:
    if not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise ConfigError(f"--shard-size must be 1..{MAX_SHARD_SIZE} samples, got {shard_size}")
    if not 1 <= rgb_shard_size <= MAX_RGB_SHARD_SIZE:
        raise ConfigError(f"--rgb-shard-size must be 1..{MAX_RGB_SHARD_SIZE} samples, got {rgb_shard_size}")


def available_memory() -> int | None:
    """Bytes the system can give without swapping (MemAvailable), or None where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def extract_memory(config: ExtractConfig) -> tuple[int, str]:
    """(bytes, how they add up): an upper bound of what `extract(config)` holds at once (module docstring)."""
    per_sample = sum(int(np.prod(s.tail)) * np.dtype(s.dtype).itemsize for s in SKELETON_ARRAYS)
    skeleton = config.shard_size * per_sample + SKELETON_FILE_BYTES if config.skeletons else 0
    rgb = 0
    if config.videos:
        options = config.rgb_options
        frames = MAX_FRAMES if options.frames is None else options.frames
        clip = frames * options.size**2 * 3
        encoded = config.rgb_shard_size * clip * ENCODED_SHARE[options.codec]
        rgb = int(2 * clip + 3 * VIDEO_FRAME_BYTES + encoded)
    task = max(skeleton, rgb)
    total = config.jobs * (WORKER_BYTES + task)
    what = "an RGB task" if rgb >= skeleton else "a skeleton task"
    return total, f"{config.jobs} worker(s) x ({_gib(WORKER_BYTES)} each + {_gib(task)} for {what})"


def check_extract_memory(config: ExtractConfig, available: int | None = None) -> None:
    """ConfigError, naming the options to lower, when the run's `extract_memory` exceeds the memory this
    machine has available (`available`: None reads it; a run on a dask `--scheduler` is not checked)."""
    if config.scheduler:
        return
    available = available_memory() if available is None else available
    if available is None:
        return
    need, how = extract_memory(config)
    if need > available:
        raise ConfigError(f"this extract would hold about {_gib(need)} at once ({how}), and this machine has "
                          f"{_gib(available)} available: lower --size, --frames, --rgb-shard-size, "
                          "--shard-size or --jobs")
