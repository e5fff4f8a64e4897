"""What a synthetic sample is: its bodies' joints in camera coordinates and where the two Kinect v2
cameras see them. Writes nothing.

Usage:
    scene = synth_sample("S001C002P003R001A004", num_classes=6)   # synth/skeleton.py makes scenes
    scene.bodies[0].joints                       # (F_b, 25, 3) metres, camera coordinates
    scene.bodies[0].color_xy                     # (F_b, 25, 2) == COLOR_CAMERA.project(joints)
    scene.bodies_per_frame()                     # (num_frames,) the body count line of each frame

The types every part of synth/ shares: synth/skeleton.py builds them by its rules, synth/skeleton_text.py
writes them as `.skeleton` text, synth/video.py draws them as `_rgb.avi`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPS = 30


@dataclass(frozen=True)
class Pinhole:
    """u = cx + fx (x + shift_x) / z, v = cy - fy y / z: pixels from camera coordinates in metres.

    shift_x is the lens's offset from the depth sensor along x. Fitted to the real samples (residual
    about 0.4 px colour, 0.1 px depth).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    shift_x: float = 0.0

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """xyz (..., 3) -> (..., 2) pixel coordinates."""
        z = xyz[..., 2]
        return np.stack([self.cx + self.fx * (xyz[..., 0] + self.shift_x) / z,
                         self.cy - self.fy * xyz[..., 1] / z], axis=-1)


COLOR_CAMERA = Pinhole(fx=1058.0, fy=1056.0, cx=960.0, cy=568.0, shift_x=0.056)  # 1920 x 1080
DEPTH_CAMERA = Pinhole(fx=368.0, fy=367.0, cx=256.0, cy=208.0)  # 512 x 424


@dataclass(frozen=True)
class ClassMotion:
    """How one class moves (the rules are synth/skeleton.py's docstring)."""

    group: int  # index into skeleton.LIMB_GROUPS
    pattern: str  # one of skeleton.PATTERNS
    tempo_hz: float
    two_person: bool
    held: str = ""  # one of skeleton.HELD_OBJECTS, in actor 1's right hand (video only); "" nothing
    push_m: float = 0.0  # how far the moving hands come towards the colour camera, along its rays


@dataclass(frozen=True, eq=False)
class SyntheticBody:
    """One tracked body over frames first_frame .. first_frame + F_b - 1.

    kind:         "actor", "short" (noise, <= 11 frames) or "wide" (noise, lying flat)
    joints:       (F_b, 25, 3) float64 camera coordinates in metres (x right, y up, z depth)
    color_xy:     (F_b, 25, 2) COLOR_CAMERA.project(joints)
    depth_xy:     (F_b, 25, 2) DEPTH_CAMERA.project(joints)
    orientation:  (F_b, 25, 4) unit quaternions (w, x, y, z) of each joint's bone; 0 at leaves
    tracking:     (F_b, 25) int8 joint tracking state (1 inferred, 2 tracked)
    info:         (F_b, 9) float64, the body line after bodyID (skeleton.BODY_FIELDS[1:] in order)
    """

    body_id: int
    first_frame: int
    kind: str
    joints: np.ndarray
    color_xy: np.ndarray
    depth_xy: np.ndarray
    orientation: np.ndarray
    tracking: np.ndarray
    info: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.joints)


@dataclass(frozen=True, eq=False)
class SyntheticSample:
    """One sample's scene: bodies in order of first appearance (actors first on ties), and the motion
    its actors perform (what the video needs beyond the joints: the held object). Its text is
    `skeleton_text.format_skeleton(sample)`, its video `video.render_video(sample, path)`."""

    name: str
    num_frames: int
    bodies: tuple[SyntheticBody, ...]
    crlf: bool
    motion: ClassMotion

    def bodies_per_frame(self) -> np.ndarray:
        """(num_frames,) int: the body count line of each frame."""
        counts = np.zeros(self.num_frames, int)
        for body in self.bodies:
            counts[body.first_frame:body.first_frame + body.num_frames] += 1
        return counts
