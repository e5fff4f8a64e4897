"""Contact sheets of a prepared store: each tile one sample's two actors over time, as stick figures.

    ntu-prep sheet ntu60.zarr sheet.png --samples 48

Each tile draws every few frames of the sample seen from the camera (x right, y up), older frames
lighter: actor 1 blue, actor 2 red. The tile's caption is the sample name and its class, and a failed or
missing sample says so. What a user checks with it: that actors were chosen and kept apart sensibly.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import zarr

from .errors import ConfigError
from .images import write_image
from .skeleton.joints import BONES
from .store.schema import read_sample, require_stages
from .store.status import Status

ACTOR_COLOURS = ((200, 90, 20), (40, 40, 210))  # BGR: blue, red
TILE, CAPTION = 200, 30
# Bounds of a sheet (and a preview's rows): 1000 tiles are 138 MB of pixels; a row of 64 is 12,800 pixels.
MAX_TILES, MAX_COLUMNS = 1000, 64


def draw_tile(joints: np.ndarray, caption: str, frames_drawn: int = 8) -> np.ndarray:
    """(TILE + CAPTION, TILE, 3) uint8 image of joints (T, 2, 25, 3), T >= 0."""
    tile = np.full((TILE + CAPTION, TILE, 3), 255, np.uint8)
    present = np.abs(joints).sum(axis=(2, 3)) > 0  # (T, 2)
    if present.any():
        xy = joints[..., :2][present]  # (n, 25, 2)
        lo, hi = xy.reshape(-1, 2).min(axis=0), xy.reshape(-1, 2).max(axis=0)
        scale = 0.8 * TILE / max(float((hi - lo).max()), 1e-6)
        centre = (lo + hi) / 2
        steps = np.unique(np.linspace(0, len(joints) - 1, frames_drawn).round().astype(int))
        for k, t in enumerate(steps):
            fade = 0.25 + 0.75 * (k + 1) / len(steps)  # later frames darker
            for actor in range(2):
                if not present[t, actor]:
                    continue
                points = (joints[t, actor, :, :2] - centre) * scale * [1, -1] + TILE / 2
                colour = tuple(int(255 - fade * (255 - c)) for c in ACTOR_COLOURS[actor])
                for a, b in BONES:
                    cv2.line(tile, tuple(points[a].astype(int)), tuple(points[b].astype(int)), colour, 1,
                             cv2.LINE_AA)
    for row, text in enumerate(caption.split("\n")[:2]):
        cv2.putText(tile, text[:30], (4, TILE + 12 + 13 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return tile


def contact_sheet(group: zarr.Group, indices: list[int], columns: int = 8) -> np.ndarray:
    """A grid of tiles for the given sample indices, read sample by sample."""
    class_names = group.attrs.get("class_names", [])
    tiles = []
    for index in indices:
        sample = read_sample(group, index)
        label = sample["label"]
        caption = f"{sample['name']}\n{class_names[label] if label < len(class_names) else label}"
        if sample["status"] != Status.OK.label:
            caption = f"{sample['name']}\n{sample['status']}"
        tiles.append(draw_tile(sample["joints"], caption))
    rows = -(-len(tiles) // columns)
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (rows * columns - len(tiles))
    grid = [np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(rows)]
    return np.vstack(grid)


def write_contact_sheet(group: zarr.Group, out: Path, num_samples: int = 48, columns: int = 8) -> list[int]:
    """Write the sheet of up to num_samples samples spread evenly over the store, whole, as an image of
    out's suffix (`images.write_image`: PNG, JPEG); returns their indices."""
    if not (1 <= num_samples <= MAX_TILES and 1 <= columns <= MAX_COLUMNS):
        raise ConfigError(f"--samples must be 1..{MAX_TILES} and --columns 1..{MAX_COLUMNS}, got "
                          f"{num_samples} and {columns}")
    require_stages(group, ("skeleton",))
    n = group["samples/name"].shape[0]
    indices = sorted(set(np.linspace(0, n - 1, min(num_samples, n)).round().astype(int).tolist()))
    write_image(out, contact_sheet(group, indices, columns))
    return indices
