"""The `.skeleton` text of a synthetic scene: the inverse of ntu_pipeline/skeleton/parse.py.

Usage:
    text = format_skeleton(synth_sample("S001C002P003R001A004", num_classes=6))
    path.write_bytes(text.encode("ascii"))       # what synth/corpus.py's write_corpus does per sample

Writes nothing itself; returns the text of the Kinect v2 file: the frame count, then per frame the body
count and per body its line (bodyID and BODY_FIELDS[1:]), "25" and 25 joint lines of 12 numbers.
Numbers are written as the Kinect SDK does: 7 significant digits, `E-05` exponents, never "-0"; body
IDs exactly. Line ends are "\\r\\n" when the scene says `crlf`, else "\\n".
"""

from __future__ import annotations

import numpy as np

from .scene import SyntheticBody, SyntheticSample

_JOINT_LINE = "%.7g " * 11 + "%d\n"
_BODY_TAIL = "%d %d %d %d %d %d %.7g %.7g %d\n25\n" + _JOINT_LINE * 25


def _body_lines(body: SyntheticBody) -> list[str]:
    """Per frame of the body, its body line, "25" and 25 joint lines, as one string."""
    fields = np.concatenate([body.joints, body.depth_xy, body.color_xy, body.orientation,
                             body.tracking[..., None]], axis=-1)  # (F_b, 25, 12)
    rows = np.concatenate([body.info, fields.reshape(len(fields), -1)], axis=1) + 0.0  # no "-0"
    fmt = f"{body.body_id} " + _BODY_TAIL
    return [(fmt % tuple(row)).replace("e", "E") for row in rows.tolist()]


def format_skeleton(sample: SyntheticSample) -> str:
    """The `.skeleton` text of a sample, with "\\r\\n" line ends when sample.crlf."""
    frames: list[list[str]] = [[] for _ in range(sample.num_frames)]
    for body in sample.bodies:
        for k, block in enumerate(_body_lines(body)):
            frames[body.first_frame + k].append(block)
    parts = [f"{sample.num_frames}\n"]
    for blocks in frames:
        parts.append(f"{len(blocks)}\n")
        parts.extend(blocks)
    text = "".join(parts)
    return text.replace("\n", "\r\n") if sample.crlf else text
