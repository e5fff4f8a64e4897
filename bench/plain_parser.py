"""The plain line-by-line `.skeleton` reader that the speed target is measured against.

    from plain_parser import read_skeleton_plain   # (run from bench/, or put bench/ on sys.path)
    seq = read_skeleton_plain("S001C001P001R001A001.skeleton")
    seq["frameInfo"][0]["bodyInfo"][0]["jointInfo"][0]["x"]

Written the way the popular reference scripts read the files (CTR-GCN's and NTU's
`read_skeleton_filter`): one `readline()` per line, a dict `{key: float(token)}` per joint line and
per body line, nested in a list of frames. Like them it reads bodyID through a float, so it is not
exact above 2**53; it is a speed yardstick for `bench/skeleton_stage.py`, not a parser to use.
"""

from __future__ import annotations

BODY_KEYS = (
    "bodyID", "clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
    "handRightState", "isResticted", "leanX", "leanY", "trackingState",
)
JOINT_KEYS = (
    "x", "y", "z", "depthX", "depthY", "colorX", "colorY",
    "orientationW", "orientationX", "orientationY", "orientationZ", "trackingState",
)


def read_skeleton_plain(path) -> dict:
    """{'numFrame': F, 'frameInfo': [{'numBody': B, 'bodyInfo': [{..., 'jointInfo': [...]}]}]}."""
    with open(path) as f:
        sequence = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(sequence["numFrame"]):
            frame_info = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame_info["numBody"]):
                body_info = {k: float(v) for k, v in zip(BODY_KEYS, f.readline().split(), strict=False)}
                body_info["numJoint"] = int(f.readline())
                body_info["jointInfo"] = [
                    {k: float(v) for k, v in zip(JOINT_KEYS, f.readline().split(), strict=False)}
                    for _ in range(body_info["numJoint"])
                ]
                frame_info["bodyInfo"].append(body_info)
            sequence["frameInfo"].append(frame_info)
    return sequence
