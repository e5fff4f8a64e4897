"""A synthetic corpus on disk: `.skeleton` files and, optionally, `_rgb.avi` videos, one folder per setup.

    ntu-prep synth demo_raw/ --samples 240 --classes 6 [--seed 0] [--no-videos] [--jobs 2]
    write_synthetic_corpus(Path("demo_raw"), 240, 6, seed=0)   # what the command runs: both, progress bar
    write_corpus(Path("demo_raw"), 240, 6)      # demo_raw/S001/S001C001P002R001A001.skeleton, ...
    write_corpus(Path("demo_raw"), 240, 6, videos=True)   # and <name>_rgb.avi beside each

It writes `sample_names(...)` (synth/skeleton.py), each as out/Sxxx/<name>.skeleton, the text of its
scene (synth/skeleton_text.py), and with videos out/Sxxx/<name>_rgb.avi beside it (synth/video.py).
`write_synthetic_corpus` is `ntu-prep synth`: it writes into a folder that is new, empty, or one synth
wrote, and leaves MARKER there with its arguments. A folder with files synth did not write is refused
(two corpora mixed in one folder would be extracted as one); a folder synth wrote is replaced.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

from ..errors import NTUPrepError
from ..progress import ProgressBar
from ..stages.resources import check_jobs
from .skeleton import sample_names, synth_sample
from .skeleton_text import format_skeleton
from .video import render_video

MARKER = ".ntu-prep-synth.json"
CHUNK = 16  # samples a task: a skeleton alone takes ~10 ms, too little to send one at a time


def write_sample(out_dir: Path, name: str, num_classes: int, seed: int, videos: bool) -> Path:
    """Write one sample's out_dir/Sxxx/<name>.skeleton (and its _rgb.avi); return the skeleton's path."""
    path = Path(out_dir) / name[:4] / f"{name}.skeleton"
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = synth_sample(name, num_classes, seed)
    path.write_bytes(format_skeleton(scene).encode("ascii"))
    if videos:
        render_video(scene, path.with_name(f"{name}_rgb.avi"))
    return path


def write_corpus(out_dir: Path, num_samples: int, num_classes: int, seed: int = 0,
                 progress=None, videos: bool = False, jobs: int = 1) -> list[Path]:
    """Write `sample_names(...)` as out_dir/Sxxx/<name>.skeleton (one folder per setup); return the paths,
    sorted.

    videos: also render each sample's out_dir/Sxxx/<name>_rgb.avi beside it (synth/video.py). Off by
    default: a video costs ~0.6 ms of CPU a frame (14 s for the 240-sample demo's ~23,000 frames on
    one core, against 2 s for its skeletons), which callers that need only skeletons should not pay.
    jobs: loky processes (each sample is a pure function of its name and the seed, so the files are the
    same for any jobs). progress, if given, is called with 1 after each sample (`ProgressBar.advance`).
    """
    names = sample_names(num_samples, num_classes, seed)
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    task = partial(write_samples, out_dir, num_classes=num_classes, seed=seed, videos=videos)
    if jobs == 1:
        written = map(task, chunks)
    else:
        # loky's own reusable executor, as the stages use it (joblib.Parallel cannot reuse that one)
        from joblib.externals.loky import get_reusable_executor

        written = get_reusable_executor(max_workers=jobs).map(task, chunks)
    paths = []
    for chunk in written:
        paths += chunk
        if progress is not None:
            progress(len(chunk))
    return sorted(paths)


def write_samples(out_dir: Path, names: list[str], num_classes: int, seed: int, videos: bool) -> list[Path]:
    """`write_sample` for each of `names` (one task of a parallel run)."""
    return [write_sample(out_dir, name, num_classes, seed, videos) for name in names]


def write_synthetic_corpus(out: Path, samples: int, classes: int, seed: int = 0, videos: bool = True,
                           progress: bool = True, jobs: int = 1) -> int:
    """Write the corpus; returns the number of samples. Checks every argument before it touches `out`."""
    sample_names(samples, classes, seed)  # ConfigError for a count out of range, before any deletion
    check_jobs(jobs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NTUPrepError(f"{out} is a file, not a folder")
    contents = list(out.iterdir()) if out.is_dir() else []
    if contents and not (out / MARKER).is_file():
        raise NTUPrepError(f"{out} has files that ntu-prep synth did not write; choose a new or empty "
                           "folder (nothing was changed)")
    for child in contents:  # a corpus synth wrote earlier: replaced whole
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"samples": samples, "classes": classes, "seed": seed,
                                          "videos": videos}))
    with ProgressBar(samples, "samples", "synth", enabled=progress) as bar:
        paths = write_corpus(out, samples, classes, seed, progress=bar.advance, videos=videos, jobs=jobs)
    return len(paths)
