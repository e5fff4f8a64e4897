"""Which codec for the store's `rgb/frames` (N, 32, 256, 256, 3) uint8: size, encode and read speed, PSNR.

    .venv/bin/python bench/rgb_codec.py [--samples 64] [--shard 16] [--size 256] [--reads 128]

Decodes every frame of the two real videos in ../shared/ntu_samples/videos (NTU_SAMPLES overrides; an
H.264 re-encode and a DIVX MPEG-4 Part 2 original), crops a square around the person (A001: the box of
its skeleton's colour-frame joints plus 15%; A046, whose skeleton is not among the samples: a fixed
square on the performer), resizes it to --size, and cycles those frames into --samples samples of 32.
Each codec then stores one frame per inner chunk and --shard samples per shard, written the way the stage
writes (chunks encoded here, shards assembled by `ntu_pipeline.store.shards`), and read back through
zarr one random sample at a time, as a training loader does (wall time, with a ratio to "none" from
the same run). "encode" is the codec alone on one thread (blosc too), in CPU time. PSNR is over every
decoded frame against the frame that was stored.

Projections: bytes per stored frame times frames per sample times the sample count. The default layout
keeps 32 frames; `--frames all` keeps every frame, whose count is assumed to average MEAN_FRAMES (the
real skeleton files here average about that; frames past a clip's end are zero chunks, left out of the
shard, so only the 16-byte index entries of the padding to 300 are paid).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import av
import cv2
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ntu_pipeline.skeleton.parse import parse_skeleton
from ntu_pipeline.store.jpeg_codec import JpegCodec, decode_frame, encode_frame_chunk
from ntu_pipeline.store.shards import assemble_shard, chunk_encoder, encode_chunk, write_shard_file

FRAMES = 32
MEAN_FRAMES = 90  # assumed mean frame count of an NTU sample at 30 fps ("--frames all")
DATASETS = {"NTU60": 56_880, "NTU120": 114_480}
VIDEOS = {  # file -> how to find the person: "skeleton" (its joints' box) or a fixed (cx, cy, side)
    "S001C001P001R001A001_rgb.avi": "skeleton",
    "S004C002P003R002A046_rgb.avi": (930, 580, 640),
}
CANDIDATES = {
    "none": BloscCodec(cname="lz4", clevel=0, shuffle="noshuffle"),
    "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-zstd3-shuffle": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "jpeg-q90-420": JpegCodec(quality=90),
    "jpeg-q95-420": JpegCodec(quality=95),
}


def person_square(samples_dir: Path, video: str, how) -> tuple[int, int, int]:
    """(cx, cy, side) of the square crop in the 1920x1080 frame."""
    if how != "skeleton":
        return how
    record = parse_skeleton(samples_dir / "skeletons" / video.replace("_rgb.avi", ".skeleton"))
    xy = record.joints[..., 5:7].reshape(-1, 2)  # (R * 25, 2) colour-frame pixels
    lo, hi = xy.min(0), xy.max(0)
    cx, cy = (lo + hi) / 2
    return int(cx), int(cy), int(1.15 * (hi - lo).max())


def crop_frames(path: Path, box: tuple[int, int, int], size: int) -> np.ndarray:
    """Every frame of the video, cropped to the square box and resized: (F, size, size, 3) uint8 RGB."""
    cx, cy, side = box
    x0, y0 = cx - side // 2, cy - side // 2
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")  # (1080, 1920, 3)
            padded = np.zeros((side, side, 3), np.uint8)  # the square may leave the frame
            ys = slice(max(y0, 0), min(y0 + side, rgb.shape[0]))
            xs = slice(max(x0, 0), min(x0 + side, rgb.shape[1]))
            padded[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = rgb[ys, xs]
            out.append(cv2.resize(padded, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def encoder_for(codec):
    """frame (H, W, 3) -> bytes | None, as the stage's writer encodes one inner chunk."""
    if isinstance(codec, JpegCodec):
        return lambda frame: encode_frame_chunk(frame, codec)
    blosc = numcodecs.Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle={
        "noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE}[codec.shuffle.value],
        typesize=1)
    return lambda frame: encode_chunk(blosc, frame)


def measure(frames: np.ndarray, samples: int, shard: int, codec, path: Path, reads: int, rng) -> dict:
    """frames (F, S, S, 3): encoded once each (timed), then cycled into `samples` samples of 32 frames."""
    S = frames.shape[1]
    encode = encoder_for(codec)
    start = time.process_time()  # CPU time: the codec's own cost, whatever else the machine runs
    encoded = [encode(f) for f in frames]
    encode_s = time.process_time() - start
    group = zarr.open_group(str(path.parent), mode="a")
    jpeg = isinstance(codec, JpegCodec)
    kwargs = {"serializer": codec, "compressors": None} if jpeg else {"compressors": codec}
    array = group.create_array(path.name, shape=(samples, FRAMES, S, S, 3), dtype="uint8", fill_value=0,
                               chunks=(1, 1, S, S, 3), shards=(shard, FRAMES, S, S, 3), **kwargs)
    if not jpeg:
        chunk_encoder(array)  # the stage's writer accepts this array
    order = [(s * FRAMES + t) % len(frames) for s in range(samples) for t in range(FRAMES)]
    for k, lo in enumerate(range(0, samples * FRAMES, shard * FRAMES)):
        chunks = [encoded[i] for i in order[lo:lo + shard * FRAMES]]
        write_shard_file(path.parent, array, k, assemble_shard(chunks, shard * FRAMES))
    array = zarr.open_array(str(path), mode="r")
    array[0]  # warm: metadata, codec pipeline
    picks = rng.integers(0, samples, reads)
    start = time.perf_counter()
    for i in picks:
        array[int(i)]
    read_s = time.perf_counter() - start
    decoded = np.stack([decode_frame(e) for e in encoded]) if jpeg else frames
    first = [order[t] for t in range(FRAMES)]
    assert np.array_equal(array[0], decoded[first]), "zarr reads what the codec alone decodes"
    mse = np.mean((decoded.astype(np.float64) - frames) ** 2)
    store_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "zarr.json")
    frame_bytes = np.array([len(e) for e in encoded])
    return {"frame_bytes": frame_bytes, "store_bytes_per_sample": store_bytes / samples,
            "encode_ms_per_sample": encode_s / len(frames) * FRAMES * 1e3, "reads_per_s": reads / read_s,
            "psnr": float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--shard", type=int, default=16, help="samples per shard")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--reads", type=int, default=128, help="random single-sample reads per codec")
    args = parser.parse_args()
    numcodecs.blosc.set_nthreads(1)
    repo = Path(__file__).resolve().parent.parent
    samples_dir = Path(os.environ.get("NTU_SAMPLES", repo.parent / "shared" / "ntu_samples"))
    if not (samples_dir / "videos").is_dir():
        raise SystemExit(f"no real videos under {samples_dir}/videos (set NTU_SAMPLES)")

    start = time.perf_counter()
    per_video = {v: crop_frames(samples_dir / "videos" / v, person_square(samples_dir, v, how), args.size)
                 for v, how in VIDEOS.items()}
    frames = np.concatenate(list(per_video.values()))
    lengths = [len(f) for f in per_video.values()]
    counts = ", ".join(f"{v[:20]}: {n}" for v, n in zip(VIDEOS, lengths, strict=True))
    print(f"decoded and cropped {len(frames)} frames ({counts}) to {args.size}^2 in "
          f"{time.perf_counter() - start:.1f} s; {args.samples} samples of {FRAMES} frames, "
          f"{args.shard} per shard")
    skeleton_frames = [parse_skeleton(p).num_frames
                       for p in sorted((samples_dir / "skeletons").glob("*.skeleton"))]
    print(f"frames per sample: the {len(skeleton_frames)} real skeleton files average "
          f"{np.mean(skeleton_frames):.0f}; --frames all assumes {MEAN_FRAMES}")

    tmp = Path(tempfile.mkdtemp(prefix="rgb-codec-bench-"))
    rng = np.random.default_rng(0)
    results = {}
    try:
        for name, codec in CANDIDATES.items():
            results[name] = measure(frames, args.samples, args.shard, codec, tmp / name, args.reads, rng)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    split = np.cumsum(lengths)[:-1]
    base = results["none"]
    print()
    print(f"{'codec':<20}{'KB/sample':>10}{'A001':>8}{'A046':>8}{'ratio':>7}{'encode ms':>11}"
          f"{'read smp/s':>11}{'x none':>7}{'PSNR dB':>9}")
    for name, r in results.items():
        kb = [b.mean() * FRAMES / 1e3 for b in np.split(r["frame_bytes"], split)]
        print(f"{name:<20}{r['store_bytes_per_sample'] / 1e3:>10.1f}{kb[0]:>8.1f}{kb[1]:>8.1f}"
              f"{base['store_bytes_per_sample'] / r['store_bytes_per_sample']:>7.1f}"
              f"{r['encode_ms_per_sample']:>11.2f}{r['reads_per_s']:>11.1f}"
              f"{r['reads_per_s'] / base['reads_per_s']:>7.2f}{r['psnr']:>9.1f}")
    print("(KB/sample: the store's shard files per sample; A001, A046: each video's encoded frames alone)")
    print()
    header = "".join(f"{f'{d} {k}':>18}" for k in (f"{FRAMES} fr", f"~{MEAN_FRAMES} fr") for d in DATASETS)
    print(f"{'projected size':<20}{header}")
    for name, r in results.items():
        per_frame = r["store_bytes_per_sample"] / FRAMES
        sizes = [per_frame * k * n / 1e9 for k in (FRAMES, MEAN_FRAMES) for n in DATASETS.values()]
        print(f"{name:<20}" + "".join(f"{s:>15.0f} GB" for s in sizes))


if __name__ == "__main__":
    main()
