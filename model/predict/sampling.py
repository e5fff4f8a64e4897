"""A recording longer than a store holds: which of its skeleton frames `predict` prepares, and the file
that holds only those.

    actors = select_actors(parse_skeleton(path))
    if actors.num_frames > MAX_FRAMES:
        frames, note = frames_to_keep(actors.frame_index, record.num_frames, rgb=True, rgb_frames=32)
        data = sampled_skeleton(path.read_bytes(), frames, set(actors.actor_ids[0] + actors.actor_ids[1]))

NTU's own samples hold at most MAX_FRAMES (300) frames, the store's time axis: the skeleton stage refuses
a longer one, the RGB stage keeps the first 300 frames of a longer video in a store of every frame
(`--frames all`) and T evenly spread frames of any video in a store of T. A user's recording is often
longer, so its skeleton is sampled before the stages see it, the way the model samples it anyway:
- skeleton models: 300 frames evenly spread over those with an actor (the model takes its clip evenly
  over the whole sequence: the same instants, within the spacing of the frames kept);
- models with RGB from a store of T frames: the T frames the video's clip takes (`sample_indices` over
  the skeleton file's frame count, which a Kinect recording's video shares), so that every stored video
  frame has its skeleton, and the rest of the 300 evenly spread;
- models with RGB from a store of every frame: those among the first 300, the frames the video keeps.
The sampled file keeps every frame of the original, those not kept empty (a body count of 0), so each
kept frame keeps its number (`skeleton/frame_index`, what matches it to a video frame) and the RGB
stage's checks see the recording's true length; its bodies are those the denoising chose on the whole
recording (`select_actors`), so that the rule for short tracks is not applied to the sampled frames.
Pure functions of frame numbers and text: `model.predict.recordings` reads and writes the files.
"""

from __future__ import annotations

import numpy as np

from ntu_pipeline.store import MAX_FRAMES
from ntu_pipeline.video.timeline import sample_indices


def _spread(frames: np.ndarray, n: int) -> np.ndarray:
    """n of `frames` (sorted) evenly spread over them; all of them when they are n or fewer."""
    if n <= 0:
        return frames[:0]
    return frames if len(frames) <= n else frames[sample_indices(len(frames), n)]


def frames_to_keep(kept: np.ndarray, num_frames: int, rgb: bool,
                   rgb_frames: int | None) -> tuple[np.ndarray, str]:
    """The frame numbers (k,) sorted, k <= MAX_FRAMES, of `kept` (the recording's frames with an actor,
    sorted; more than MAX_FRAMES) that are prepared, and the note that says so. num_frames: the frame
    count of the skeleton file; rgb: whether the model takes the video; rgb_frames: the frames its store
    keeps of each video (None: every frame, up to MAX_FRAMES)."""
    kept = np.asarray(kept, np.int64)
    said = f"{len(kept)} frames with an actor, more than the {MAX_FRAMES} a store holds: "
    if rgb and rgb_frames is None:
        chosen = kept[kept < MAX_FRAMES]
        return chosen, said + (f"kept those among its first {MAX_FRAMES} frames, the ones its video keeps in "
                               "a store of every frame")
    if rgb:
        clip = np.intersect1d(sample_indices(num_frames, rgb_frames), kept)
        rest = _spread(np.setdiff1d(kept, clip), MAX_FRAMES - len(clip))
        return np.union1d(clip, rest), said + (f"kept the {len(clip)} its video's clip takes and {len(rest)} "
                                               "more evenly spread")
    return _spread(kept, MAX_FRAMES), said + (f"kept {MAX_FRAMES} evenly spread over them (the model takes "
                                              "its clip over the whole recording either way)")


def sampled_skeleton(data: bytes, frames: np.ndarray, body_ids: set[int]) -> bytes:
    """The `.skeleton` file `data` (one the parser read) with every frame but `frames` empty, and in
    those only the bodies of `body_ids`: the same frame count, line ends and numbers, byte for byte."""
    lines = data.splitlines(keepends=True)
    end = b"\r\n" if lines[0].endswith(b"\r\n") else b"\n"
    wanted = set(np.asarray(frames).tolist())
    out, i = [lines[0]], 1
    for frame in range(int(lines[0])):
        count, i = int(lines[i]), i + 1
        bodies: list[bytes] = []
        for _ in range(count):  # a body line (bodyID first), its joint count, its joint lines
            joints = int(lines[i + 1])
            if frame in wanted and int(lines[i].split()[0]) in body_ids:
                bodies.append(b"".join(lines[i:i + 2 + joints]))
            i += 2 + joints
        out.append(str(len(bodies)).encode() + end)
        out.extend(bodies)
    out.extend(lines[i:])  # blank lines after the last frame, as the file had them
    return b"".join(out)
