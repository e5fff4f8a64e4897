"""The picture of one prediction: what the model saw of a recording, and its five likeliest classes.

    image = prediction_picture(group, index, seen, "my", prediction.top(), rgb=True,
                               caption="what ccdfarm saw: clip 1 of 10")   # BGR uint8
    cv2.imwrite("my.png", image)

What the model saw: with RGB, the stored frames of its first clip (the person-centred crop, at most 8
of them, evenly chosen) with the skeleton of each frame's instant drawn on them, as `ntu-prep preview`
draws them; a skeleton model's input is the skeleton at the frames of its first clip, drawn as the
contact sheet draws a sample (older frames lighter). Beside it, the top 5 as bars of probability
(a full bar is 1).
"""

from __future__ import annotations

import cv2
import numpy as np
import zarr

from ntu_pipeline.preview import draw_frame, skeleton_at_frames
from ntu_pipeline.sheet import draw_tile
from ntu_pipeline.video.crop import project_to_crop

TILES = 8
BAR_WIDTH, ROW = 360, 36


def _rgb_tiles(group: zarr.Group, index: int, seen: np.ndarray) -> np.ndarray:
    shown = np.unique(seen[np.linspace(0, len(seen) - 1, min(TILES, len(seen))).round().astype(int)])
    frame_index = group["rgb/frame_index"][index][shown]
    frames = group["rgb/frames"][index][shown]
    color = (skeleton_at_frames(group, index, frame_index) if "skeleton" in dict(group.attrs["stages"])
             else np.zeros((len(shown), 2, 25, 2), np.float32))
    xy = project_to_crop(color, group["rgb/crop_box"][index], tuple(group["rgb/video_size"][index]),
                         frames.shape[1])
    return np.hstack([draw_frame(frames[k], xy[k], f"frame {frame_index[k]}") for k in range(len(shown))])


def _skeleton_tile(group: zarr.Group, index: int, seen: np.ndarray) -> np.ndarray:
    joints = group["skeleton/joints"][index][np.unique(seen)]  # (t, 2, 25, 3)
    frames = group["skeleton/frame_index"][index][np.unique(seen)]
    return draw_tile(joints, f"frames {frames.min()}-{frames.max()}", frames_drawn=min(TILES, len(joints)))


def _bars(top: list[tuple[str, float]], height: int, title: str, caption: str) -> np.ndarray:
    """The title, the caption, and each class's name and probability over its bar (the full width is 1)."""
    head = 2 * ROW if caption else ROW
    panel = np.full((max(height, head + ROW * len(top) + 8), BAR_WIDTH, 3), 255, np.uint8)
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    cv2.putText(panel, title[:44], (8, 22), font, 0.5, black, 1, cv2.LINE_AA)
    if caption:
        cv2.putText(panel, caption[:56], (8, 22 + ROW - 8), font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    for k, (name, p) in enumerate(top):
        y = head + ROW * k
        cv2.putText(panel, f"{name}"[:44], (8, y + 12), font, 0.42, black, 1, cv2.LINE_AA)
        cv2.putText(panel, f"{p:.3f}", (BAR_WIDTH - 50, y + 12), font, 0.42, black, 1, cv2.LINE_AA)
        cv2.rectangle(panel, (8, y + 17), (BAR_WIDTH - 8, y + 27), (235, 235, 235), -1)
        cv2.rectangle(panel, (8, y + 17), (8 + int(round(p * (BAR_WIDTH - 16))), y + 27), (200, 150, 60), -1)
    return panel


def prediction_picture(group: zarr.Group, index: int, seen: np.ndarray, name: str,
                       top: list[tuple[str, float]], rgb: bool, true_class: str | None = None,
                       caption: str = "") -> np.ndarray:
    """BGR image of sample `index` of the prepared store `group`: `seen` (T,) the positions of its first
    clip (stored RGB frames where `rgb`, kept skeleton frames otherwise) and the top classes as bars,
    under the recording's `name` (its true class where known) and a `caption` (the model, the clips)."""
    tiles = _rgb_tiles(group, index, seen) if rgb else _skeleton_tile(group, index, seen)
    title = name + (f" (true: {true_class})" if true_class else "")
    bars = _bars(top, tiles.shape[0], title, caption)
    if tiles.shape[0] < bars.shape[0]:  # white below the frames, as around the bars
        tiles = np.vstack([tiles, np.full((bars.shape[0] - tiles.shape[0], *tiles.shape[1:]), 255, np.uint8)])
    return np.hstack([tiles, bars])
