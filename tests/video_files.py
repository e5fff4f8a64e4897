"""Video files for the video tests: written, read back, damaged (`from video_files import ...`).

Synthetic videos are written with PyAV (MPEG-4 Part 2 in AVI as the NTU originals, and H.264 with
B-frames as some mirrors); each frame carries its own number as 8 black/white blocks, so the frame a
clip says it stored can be read back from its pixels. Damaged copies are made with fixed random bytes
over chosen chunks or byte ranges (as `dd conv=notrunc` would).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ntu_pipeline.errors import VideoDecodeError

W, H = 96, 64  # synthetic video size
WHOLE = np.array([0, 0, W, H], np.float32)  # a box of the whole synthetic frame, in its own pixels


def frame_image(k: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """(h, w, 3) uint8: k mod 256 as 8 blocks across the top half (bit b white when set), grey below."""
    w, h = size
    img = np.full((h, w, 3), 128, np.uint8)
    bw = w // 8
    for b in range(8):
        img[: h // 2, b * bw: (b + 1) * bw] = 255 if (k >> b) & 1 else 0
    return img


def read_number(rgb: np.ndarray) -> int:
    """The frame number written by frame_image, from a crop of the whole frame (any square size)."""
    s = rgb.shape[0]
    bits = [rgb[s // 4, int((b + 0.5) * s / 8)].mean() > 128 for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_video(path: Path, n: int, codec: str = "mpeg4", size=(W, H), gop: int = 12, fmt: str = "avi"):
    """n frames of frame_image; MPEG-4 without B-frames (the NTU originals) or H.264 with B-frames."""
    if codec == "mpeg4":
        options = {"bf": "0", "qscale": "2", "sc_threshold": "1000000000"}
    else:
        options = {"preset": "veryfast", "crf": "8", "bf": "3", "sc_threshold": "0"}
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for k in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(k, size), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def numbers(clip) -> list[int]:
    return [read_number(f) for f in clip.frames]


def plain_crops(path: Path, index, crop) -> tuple[np.ndarray, int]:
    """(crop(frame) of every frame in `index`, stacked; the video's frame count), by plain PyAV."""
    wanted, count = {}, 0
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(container.streams.video[0])):
            if k in index:
                wanted[k] = crop(frame)
            count = k + 1
    return (np.stack([wanted[int(j)] for j in index]) if len(index) else np.empty(0)), count


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def assert_names_file(error: VideoDecodeError, path: Path):
    assert error.path == str(path) and str(path) in str(error)


def chunk_spans(path: Path) -> list[tuple[int, int]]:
    """(start, stop) bytes of each frame's chunk (8-byte header, then data), in frame order, by its index."""
    with av.open(str(path)) as container:
        return [(e.pos, e.pos + 8 + e.size) for e in container.streams.video[0].index_entries]


def overwrite(path: Path, out: Path, spans, seed: int = 0) -> Path:
    """A copy of `path` with each (start, stop) byte span overwritten by fixed random bytes (as dd would)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for start, stop in spans:
        data[start:stop] = rng.bytes(stop - start)
    out.write_bytes(bytes(data))
    return out
