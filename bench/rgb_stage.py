"""How fast the RGB stage's decoding is, on one core, against the decoder's own limit and a naive path.

Usage:
    .venv/bin/python bench/rgb_stage.py [--passes 20] [--videos DIR] [--mean-frames 85]

Pinned to one CPU (the stage runs one worker process per core). Each path reads every video of
`--videos` (the real samples in ../shared/ntu_samples/videos by default) `--passes` times; frames/s
counts source frames covered per second (a video's whole length, however few frames a path keeps),
so every row compares per-video throughput. The paths take turns within each pass and are timed in
this process's CPU time (wall time is printed too): the machine this was written on is shared. Rows:

    PyAV decode-only           decode every frame, convert nothing: the decoder's limit (the baseline)
    PyAV decode-only lowres=1  the same at half resolution (FFmpeg's `lowres`; H.264 ignores it)
    decode_clip T=32           ntu_pipeline.video.decode_clip, 32 frames at 256x256 (the default)
    decode_clip T=32 no skip   the same with the MPEG-4 GOP skip turned off
    decode_clip all frames     decode_clip(frames=None)
    naive OpenCV               cv2.VideoCapture reads every frame (BGR), crop, resize, to RGB

then the memory (RSS after the first and the last pass: flat means no growth with the number of
videos), the quality table (PSNR in dB of the stored crops against the full-quality path: every frame
converted to RGB by swscale, cropped, one INTER_AREA resize) and projected core-hours.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "threads;1")  # before cv2 opens any capture

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ntu_pipeline.skeleton.actors import select_actors  # noqa: E402
from ntu_pipeline.skeleton.parse import parse_skeleton  # noqa: E402
from ntu_pipeline.store import Status  # noqa: E402
from ntu_pipeline.store.jpeg_codec import encode_frame  # noqa: E402
from ntu_pipeline.video import decode  # noqa: E402
from ntu_pipeline.video.crop import (  # noqa: E402
    COLOR_FRAME_SIZE,
    fallback_crop_box,
    person_crop_box,
    scale_box,
)
from ntu_pipeline.video.decode import decode_clip, snap_box  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("NTU_SAMPLES", REPO.parent / "shared" / "ntu_samples"))
NTU60_VIDEOS, NTU120_VIDEOS = 56_880, 114_480
SIZE = 256


def sample_box(video: Path, stand_in: np.ndarray) -> tuple[np.ndarray, str]:
    """The person box of the video's own skeleton (colour pixels), else `stand_in`; and where it came from."""
    skeleton = SAMPLES / "skeletons" / (video.name.removesuffix("_rgb.avi") + ".skeleton")
    box = None
    if skeleton.exists():
        box = person_crop_box(select_actors(parse_skeleton(skeleton)).color_xy)
    return (box, "its skeleton") if box is not None else (stand_in, "A001's box (no skeleton of its own)")


def _open(path: Path, lowres: int = 0):
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    stream.codec_context.thread_type = "NONE"
    if lowres:
        stream.codec_context.options = {"lowres": str(lowres)}
    return container, stream


def pyav_decode_only(path: Path, box: np.ndarray, lowres: int = 0) -> int:
    """Decode every frame and convert nothing; returns frames decoded."""
    container, stream = _open(path, lowres)
    with container:
        return sum(1 for _ in container.decode(stream))


def pyav_decode_only_lowres(path: Path, box: np.ndarray) -> int:
    return pyav_decode_only(path, box, lowres=1)


def clip_32(path: Path, box: np.ndarray) -> int:
    return decode_clip(path, box, SIZE, 32).num_source_frames


@contextmanager
def gop_skip_off() -> Iterator[None]:
    """decode_clip without its GOP skip inside the block: every packet up to the last frame needed is
    decoded (the reference the skip must equal, bit for bit)."""
    saved = decode._GOP_SKIP_CODECS
    decode._GOP_SKIP_CODECS = frozenset()
    try:
        yield
    finally:
        decode._GOP_SKIP_CODECS = saved


def clip_32_no_skip(path: Path, box: np.ndarray) -> int:
    with gop_skip_off():
        return decode_clip(path, box, SIZE, 32).num_source_frames


def clip_all(path: Path, box: np.ndarray) -> int:
    return decode_clip(path, box, SIZE, None).num_source_frames


def full_quality_crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(S, S, 3): the box of an (H, W, 3) image, padded black past the image, one INTER_AREA resize."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    pad = ((max(-y0, 0), max(y1 - h, 0)), (max(-x0, 0), max(x1 - w, 0)), (0, 0))
    crop = np.pad(rgb[max(y0, 0): y1, max(x0, 0): x1], pad)
    return cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def naive_opencv(path: Path, box: np.ndarray) -> int:
    """cv2.VideoCapture: every frame to BGR, then crop, resize and convert to RGB; returns frames read."""
    capture = cv2.VideoCapture(str(path))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    video_box = snap_box(scale_box(box, COLOR_FRAME_SIZE, size))
    n = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        cv2.cvtColor(full_quality_crop(bgr, video_box), cv2.COLOR_BGR2RGB)
        n += 1
    capture.release()
    return n


def stage_32(path: Path, box: np.ndarray) -> int:
    """What the stage's worker does per sample: decode_clip, then one JPEG q90 per stored frame."""
    clip = decode_clip(path, box, SIZE, 32)
    for frame in clip.frames:
        encode_frame(frame, 90)
    return clip.num_source_frames


PATHS = {
    "PyAV decode-only": pyav_decode_only,
    "stage T=32 (decode+JPEG)": stage_32,
    "PyAV decode-only lowres=1": pyav_decode_only_lowres,
    "decode_clip T=32": clip_32,
    "decode_clip T=32 no skip": clip_32_no_skip,
    "decode_clip all frames": clip_all,
    "naive OpenCV": naive_opencv,
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_paths(videos: list[tuple[Path, np.ndarray]], passes: int) -> tuple[dict, list[float]]:
    """Per path and video: [frames, CPU seconds, wall seconds] over all passes; and RSS MB after each pass.

    The paths take turns within every pass, so load from other processes on this shared machine
    falls on all of them alike; CPU time (this process's user + system) is the figure that projects
    to core-hours and is the one less disturbed by that load.
    """
    for fn in PATHS.values():  # warm the page cache and any lazy set-up
        for path, box in videos:
            fn(path, box)
    totals = {name: {path: [0, 0.0, 0.0] for path, _ in videos} for name in PATHS}
    rss = []
    for _ in range(passes):
        for name, fn in PATHS.items():
            for path, box in videos:
                cpu, wall = time.process_time(), time.perf_counter()
                frames = fn(path, box)
                total = totals[name][path]
                total[0] += frames
                total[1] += time.process_time() - cpu
                total[2] += time.perf_counter() - wall
        rss.append(rss_mb())
    return totals, rss


def rates(per_video: dict) -> tuple[list[float], float, float]:
    """(CPU frames/s of each video, CPU frames/s of all, wall frames/s of all)."""
    each = [f / cpu for f, cpu, _ in per_video.values()]
    frames, cpu, wall = (sum(v[k] for v in per_video.values()) for k in range(3))
    return each, frames / cpu, frames / wall


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def reference_crops(path: Path, box: np.ndarray, index: np.ndarray, lowres: int = 0) -> np.ndarray:
    """(T, S, S, 3): the full-quality path at `index`: every frame to RGB by swscale, crop, one INTER_AREA."""
    container, stream = _open(path, lowres)
    wanted = set(index.tolist())
    crops = {}
    with container:
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                video_box = snap_box(scale_box(box, COLOR_FRAME_SIZE, (frame.width, frame.height)))
                crops[k] = full_quality_crop(frame.to_ndarray(format="rgb24"), video_box)
    return np.stack([crops[int(k)] for k in index])


def quality(videos: list[tuple[Path, np.ndarray]]) -> None:
    print("\nquality: PSNR (dB) of 32 stored crops against the full-quality path")
    print(f"{'video':30s} {'decode_clip':>12s} {'no GOP skip':>12s} {'lowres=1':>10s}")
    for path, box in videos:
        clip = decode_clip(path, box, SIZE, 32)
        ref = reference_crops(path, box, clip.frame_index)
        no_skip = clip_frames_no_skip(path, box)
        low = reference_crops(path, box, clip.frame_index, lowres=1)
        scores = [psnr(clip.frames, ref), psnr(no_skip, ref), psnr(low, ref)]
        print(f"{path.name:30s} {scores[0]:12.1f} {scores[1]:12.1f} {scores[2]:10.1f}")
        same = np.array_equal(no_skip, clip.frames)
        print(f"{'':30s} GOP skip bit-identical to decoding every frame: {same}")


def clip_frames_no_skip(path: Path, box: np.ndarray) -> np.ndarray:
    with gop_skip_off():
        return decode_clip(path, box, SIZE, 32).frames


def whole_extract(paths: list[Path], copies: int) -> float:
    """`extract --skeletons --videos` (jobs=1, in this pinned process) over `copies` copies of each real
    pair under distinct sample names: the stage end to end, store writes and bookkeeping included."""
    import shutil
    import tempfile

    from ntu_pipeline.stages.runner import ExtractConfig, extract

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "raw")
        raw.mkdir()
        for k in range(copies):
            for path in paths:
                name = f"S{1 + k % 17:03d}C00{1 + k // 17}P{k + 1:03d}{path.name[12:20]}"  # distinct names
                (raw / f"{name}_rgb.avi").symlink_to(path)
                skeleton = SAMPLES / "skeletons" / (path.name.removesuffix("_rgb.avi") + ".skeleton")
                if skeleton.exists():
                    shutil.copy(skeleton, raw / f"{name}.skeleton")
        cpu, wall = time.process_time(), time.perf_counter()
        summary = extract(ExtractConfig(skeletons=raw, videos=raw, out=Path(tmp, "s.zarr"), dataset="ntu60",
                                        progress=False), say=lambda _: None)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        import zarr

        frames = int(zarr.open_group(str(Path(tmp, "s.zarr")), mode="r")["rgb/num_source_frames"][:].sum())
        size = sum(f.stat().st_size for f in Path(tmp, "s.zarr/rgb").rglob("*") if f.is_file())
    rgb = next(s for s in summary.stages if s.name == "rgb")
    ok = rgb.counts[Status.OK]
    print(f"\nwhole extract (skeletons + videos, jobs=1): {len(paths) * copies} videos, "
          f"{ok} ok, {frames / cpu:.1f} source frames/s of CPU ({frames / wall:.1f} wall), "
          f"rgb arrays {size / ok / 1024:.0f} KB per sample")
    return frames / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=Path, default=SAMPLES / "videos")
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--mean-frames", type=float, default=None,
                        help="mean frames per NTU video for the projection (default: mean of the inputs)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    paths = sorted(args.videos.glob("*.avi"))
    if not paths:
        raise SystemExit(f"no .avi under {args.videos}")
    a001 = SAMPLES / "skeletons" / "S001C001P001R001A001.skeleton"
    stand_in = person_crop_box(select_actors(parse_skeleton(a001)).color_xy) if a001.exists() else None
    stand_in = fallback_crop_box() if stand_in is None else stand_in
    boxes = [sample_box(p, stand_in) for p in paths]
    videos = [(p, box) for p, (box, _) in zip(paths, boxes, strict=True)]
    counts = [pyav_decode_only(p, b) for p, b in videos]
    print(f"{len(videos)} videos, {args.passes} passes, one core, {SIZE}x{SIZE} crops:")
    for i, ((p, box), (_, source), n) in enumerate(zip(videos, boxes, counts, strict=True)):
        print(f"  [{i}] {p.name}: {n} frames, box side {box[2] - box[0]:.0f} px from {source}")

    results, rss = time_paths(videos, args.passes)
    table = {name: rates(per_video) for name, per_video in results.items()}
    base = table["PyAV decode-only"]
    heads = "".join(f"{f'[{i}] fr/s':>10s} {'x':>5s}" for i in range(len(videos)))
    print("\nframes/s of CPU time (x = against PyAV decode-only of the same video)")
    print(f"{'path':27s}{heads} {'all fr/s':>9s} {'x':>5s} {'x wall':>7s}")
    for name, (each, cpu, wall) in table.items():
        cells = "".join(f"{v:10.1f} {v / b:5.2f}" for v, b in zip(each, base[0], strict=True))
        print(f"{name:27s}{cells} {cpu:9.1f} {cpu / base[1]:5.2f} {wall / base[2]:7.2f}")
    ratio = table["decode_clip T=32"][1] / table["naive OpenCV"][1]
    print(f"decode_clip T=32 is {ratio:.2f}x the naive OpenCV path (CPU time)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS after pass 1: {rss[0]:.0f} MB, after pass {len(rss)}: {rss[-1]:.0f} MB; peak {peak:.0f} MB")

    whole = whole_extract(paths, args.passes)
    print(f"whole extract is {whole / base[1]:.2f}x PyAV decode-only (CPU time)")
    quality(videos)

    mean = args.mean_frames or float(np.mean(counts))
    source = "--mean-frames" if args.mean_frames else "the mean of these inputs"
    print(f"\nprojected core-hours at {mean:.0f} frames per video ({source}):")
    for name, fps in (("whole extract T=32", whole), ("decode_clip T=32", table["decode_clip T=32"][1]),
                      ("decode_clip all frames", table["decode_clip all frames"][1])):  # CPU: core-hours
        hours = [n * mean / fps / 3600 for n in (NTU60_VIDEOS, NTU120_VIDEOS)]
        print(f"  {name:24s} NTU60 {hours[0]:6.1f}  NTU120 {hours[1]:6.1f}")


if __name__ == "__main__":
    main()
