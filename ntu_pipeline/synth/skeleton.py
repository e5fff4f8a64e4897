"""Synthetic NTU RGB+D scenes, motion by class: who moves which limbs how, seen from where.

Usage:
    sample_names(240, 6)                         # the corpus's names, S001C001P002R001A001, ...
    scene = synth_sample("S001C002P003R001A004", num_classes=6)   # a SyntheticSample (synth/scene.py)
    scene.bodies[0].joints                       # (F_b, 25, 3) metres, camera coordinates
    format_skeleton(scene)                       # its `.skeleton` text (synth/skeleton_text.py)
    write_corpus(Path("demo_raw"), 240, 6)       # the files, and videos with videos=True (synth/corpus.py)

Writes nothing: this module makes the scenes, synth/skeleton_text.py and synth/video.py write them.

Every sample is a pure function of (name, num_classes, seed): a `SyntheticSample` holding, per body
and frame, the 3D joints and their projections into the 1920x1080 colour frame (`COLOR_CAMERA`) and
the 512x424 depth frame (`DEPTH_CAMERA`), so a renderer can draw the same scene without the text.

The rules:
- Class `label` (0-based) moves limb group label % 8 (right arm, left arm, both arms, arms in
  antiphase, right leg, left leg, trunk, right arm + trunk) in pattern label % 3 (forward swing,
  circle, sideways swing) at tempo label % 5 (0.45 to 1.8 Hz): distinct for all 120 classes. Each
  sample jitters tempo, amplitude, phase, onset, body size (by performer), position, view (camera
  C001 +45 deg, C002 0, C003 -45, plus up to 12 deg) and camera height and pitch (by setup), and adds
  a small fidget of a random limb group.
- Twin classes make the two modalities complementary, as in real NTU (where A001 "drink water" and
  A002 "eat meal" differ mostly in what is held, and a reach towards the camera is plainer in depth
  than in the image), so only a model using both gets every class right. A twin performs its
  partner's motion instead of its own (`twin_classes` says which pairs a corpus has):
  - object twins, classes 0 and 1 (num_classes >= 2): class 1 performs class 0's motion exactly
    (the same ClassMotion but for `held`: identical skeleton distributions); class 0 holds a red ball
    in the right hand, class 1 a blue ball. The ball is drawn only in the video.
  - depth twins, classes 2 and 3 (num_classes >= 5, so that both are one-person classes): class 3
    performs class 2's motion and also brings the hands of the moving limbs up to PUSH_M (times the
    amplitude) towards the colour camera along its viewing rays, in step with the motion; elbows and
    shoulders move in proportion to their distance along the arm. A point moved along a viewing ray
    projects to the same pixel, so class 3's colour projections, hence its video, are distributed
    exactly as class 2's; its joints' depth is not. The price: no rigid motion keeps every
    projection, so class 3's arm bones change length as they push (by 2-7% in the median frame, up to
    ~45% where a bone points at the camera; real Kinect bone lengths wander too, not with the motion).
  Every other class keeps its own motion.
- Two-person classes are the last num_classes // 3 (as NTU's mutual actions A050-A060 come last):
  actor 1 performs the class motion facing actor 2, who answers with limb group (label + 3) % 8, a
  quarter cycle later; actor 1 steps towards actor 2 (even labels) or actor 2 backs away (odd).
- Noise the denoiser must remove: 30% of samples get a short body (1-11 frames), 12% a lying "wide"
  body (14-45 frames, x-range > 0.8 x y-range in every frame). 20% start with 1-8 empty frames,
  10% end with 1-5; 15% of files use CRLF line ends. Frames: 40-150 per sample at 30 fps.
- Body IDs are 2**56 + a few thousand, as the Kinect writes them; bodies of a file differ in the
  last digits (the text keeps them exact, and writes numbers as the Kinect SDK does:
  synth/skeleton_text.py).
- The video of a scene (synth/video.py) shows the actors drawn at their colour-frame joints and the
  held object, nothing of the noise bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ConfigError
from ..manifests import get_protocol
from ..sample_id import SampleId
from .scene import COLOR_CAMERA, DEPTH_CAMERA, FPS, ClassMotion, SyntheticBody, SyntheticSample

MIN_FRAMES, MAX_FRAMES = 40, 150
MAX_CLASSES = 120
MAX_SETUP, NUM_CAMERAS, NUM_PERFORMERS = 17, 3, 40
BODY_ID_BASE = 2**56

LIMB_GROUPS = ("right arm", "left arm", "both arms", "arms antiphase", "right leg", "left leg", "trunk",
               "right arm + trunk")
PATTERNS = ("forward", "circle", "sideways")
TEMPOS_HZ = (0.45, 0.7, 1.0, 1.35, 1.8)
HELD_OBJECTS = ("red ball", "blue ball")  # held by the object twins, classes 0 and 1
PUSH_M = 0.25  # metres the depth twin's hands come towards the camera at full amplitude

# Kinect v2 joints, 0-based; a standing body 1.70 m tall, feet on the floor (y = 0), facing the
# camera (-z); its left side at -x, as in the real files.
REST_POSE = np.array([
    [0, .98, 0], [0, 1.25, .01], [0, 1.52, 0], [0, 1.64, -.01],            # spine base .. head
    [-.18, 1.42, 0], [-.22, 1.14, .02], [-.24, .90, 0], [-.245, .83, -.01],  # left arm .. hand
    [.18, 1.42, 0], [.22, 1.14, .02], [.24, .90, 0], [.245, .83, -.01],      # right arm .. hand
    [-.08, .93, 0], [-.09, .52, -.02], [-.09, .10, .01], [-.09, .04, -.10],  # left hip .. foot
    [.08, .93, 0], [.09, .52, -.02], [.09, .10, .01], [.09, .04, -.10],      # right hip .. foot
    [0, 1.45, 0], [-.25, .75, -.01], [-.22, .80, -.04], [.25, .75, -.01], [.22, .80, -.04],
])  # (25, 3)
# the bone each joint's orientation follows (joint -> child); -1: a leaf, written as 0 0 0 0
_CHILD = np.array([1, 20, 3, -1, 5, 6, 7, 21, 9, 10, 11, 23, 13, 14, 15, -1, 17, 18, 19, -1, 2,
                   -1, -1, -1, -1])
_EXTREMITIES = [7, 11, 14, 15, 18, 19, 21, 22, 23, 24]  # often "inferred" (tracking state 1)


@dataclass(frozen=True)
class _Limb:
    pivot: int
    joints: tuple[int, ...]  # rotated about the pivot
    hinge: int  # elbow or knee; -1 none
    distal: tuple[int, ...]  # rotated about the hinge
    side: int  # +1 right, -1 left: mirrors sideways motion
    swing: float  # radians at full amplitude, forward (about x)
    spread: float  # radians, sideways (about z)
    flex: float  # radians, hinge


_UPPER = (1, 2, 3, 20, 4, 5, 6, 7, 8, 9, 10, 11, 21, 22, 23, 24)
_LIMBS = {
    "arm_r": _Limb(8, (9, 10, 11, 23, 24), 9, (10, 11, 23, 24), 1, 1.75, 0.8, 1.2),
    "arm_l": _Limb(4, (5, 6, 7, 21, 22), 5, (6, 7, 21, 22), -1, 1.75, 0.8, 1.2),
    "leg_r": _Limb(16, (17, 18, 19), 17, (18, 19), 1, 0.8, 0.45, -1.0),
    "leg_l": _Limb(12, (13, 14, 15), 13, (14, 15), -1, 0.8, 0.45, -1.0),
    "trunk": _Limb(0, _UPPER, -1, (), 1, -0.6, 0.35, 0.0),
}
# LIMB_GROUPS as (limb, phase offset) lists, the trunk last because it carries the arms
_GROUP_LIMBS = (
    (("arm_r", 0.0),), (("arm_l", 0.0),), (("arm_r", 0.0), ("arm_l", 0.0)),
    (("arm_r", 0.0), ("arm_l", np.pi)), (("leg_r", 0.0),), (("leg_l", 0.0),), (("trunk", 0.0),),
    (("arm_r", 0.0), ("trunk", np.pi / 2)),
)


def class_motion(label: int, num_classes: int) -> ClassMotion:
    """The motion of 0-based class `label` in a corpus of `num_classes` classes."""
    _check_classes(num_classes)
    if not 0 <= label < num_classes:
        raise ValueError(f"class label {label} outside 0..{num_classes - 1}")
    twins = twin_classes(num_classes)
    if label in twins.get("object", ()):  # class 0's motion, told apart by the object in the video
        return replace(_own_motion(0, num_classes), held=HELD_OBJECTS[label])
    if label in twins.get("depth", ()):  # class 2's motion, told apart by depth in the skeleton
        return replace(_own_motion(2, num_classes), push_m=PUSH_M if label == 3 else 0.0)
    return _own_motion(label, num_classes)


def twin_classes(num_classes: int) -> dict[str, tuple[int, int]]:
    """The twin pairs of a corpus of `num_classes` classes: {"object": (0, 1), "depth": (2, 3)} where
    they exist (see the module docstring)."""
    _check_classes(num_classes)
    one_person = num_classes - num_classes // 3
    return {kind: pair for kind, pair, need in (("object", (0, 1), 2), ("depth", (2, 3), 4))
            if one_person >= need}


def _own_motion(label: int, num_classes: int) -> ClassMotion:
    return ClassMotion(label % 8, PATTERNS[label % 3], TEMPOS_HZ[label % 5],
                       label >= num_classes - num_classes // 3)


def _check_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"num_classes must be 1..{MAX_CLASSES}, got {num_classes}")


def max_samples(num_classes: int) -> int:
    """How many distinct names `sample_names` can draw for `num_classes` classes: the j-th sample of a
    class takes camera 1 + j % 3 and the xsub side j % 2, so each of those 6 groups of a class holds
    MAX_SETUP setups x 20 performers of its side x 2 replications names (past that it would draw for ever)."""
    side = min(sum(get_protocol("xsub").is_train(p) for p in range(1, NUM_PERFORMERS + 1)),
               sum(not get_protocol("xsub").is_train(p) for p in range(1, NUM_PERFORMERS + 1)))
    return num_classes * 2 * NUM_CAMERAS * MAX_SETUP * side * 2


def sample_names(num_samples: int, num_classes: int, seed: int = 0) -> list[str]:
    """Distinct NTU names, sorted; sample i has class i % K (balanced).

    The j-th sample of a class has camera 1 + j % 3 and a performer from the xsub train list when j is
    even, else from its test list, so with num_samples >= 2 K every class has train and test samples
    under both xsub and xview. Setups (1-17) and replications (1-2) are drawn at random.
    """
    _check_classes(num_classes)
    most = max_samples(num_classes)
    if not 1 <= num_samples <= most:
        raise ConfigError(f"--samples must be 1..{most} for {num_classes} classes (each class has "
                          f"{most // num_classes} distinct names here), got {num_samples}")
    train = [p for p in range(1, NUM_PERFORMERS + 1) if get_protocol("xsub").is_train(p)]
    test = [p for p in range(1, NUM_PERFORMERS + 1) if p not in train]
    rng = np.random.default_rng([seed, 0x5A3E])
    names: set[str] = set()
    for i in range(num_samples):
        label, j = i % num_classes, i // num_classes
        performers = train if j % 2 == 0 else test
        while True:
            sid = SampleId(int(rng.integers(1, MAX_SETUP + 1)), 1 + j % NUM_CAMERAS,
                           int(rng.choice(performers)), int(rng.integers(1, 3)), label + 1)
            if sid.name not in names:
                names.add(sid.name)
                break
    return sorted(names)


def _rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """(T,) angles -> (T, 3, 3) rotations about coordinate axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = np.zeros((len(angle), 3, 3))
    R[:, axis, axis] = 1.0
    R[:, i, i], R[:, i, j], R[:, j, i], R[:, j, j] = c, -s, s, c
    return R


def _rotate(pose: np.ndarray, joints, pivot: int, axis: int, angle: np.ndarray) -> None:
    """In place: pose[:, joints] (T, n, 3) rotated about pose[:, pivot] by (T,) angles."""
    root = pose[:, pivot:pivot + 1]  # (T, 1, 3)
    pose[:, joints] = root + np.einsum("tij,tnj->tni", _rotation(axis, angle), pose[:, joints] - root)


def _animate(pose: np.ndarray, group: int, pattern: str, phase: np.ndarray, amp: float) -> np.ndarray:
    """Body-frame poses (T, 25, 3) moved by limb group `group`; phase (T,) radians; amp scales angles."""
    pose = pose.copy()
    for name, offset in _GROUP_LIMBS[group]:
        limb = _LIMBS[name]
        lift = amp * (0.5 - 0.5 * np.cos(phase + offset))  # (T,) 0..amp
        if pattern == "sideways":
            swing, spread = np.zeros_like(lift), lift
        else:
            swing = lift
            spread = amp * 0.5 * np.sin(phase + offset) if pattern == "circle" else np.zeros_like(lift)
        if limb.hinge >= 0:
            _rotate(pose, list(limb.distal), limb.hinge, 0, limb.flex * lift)
        _rotate(pose, list(limb.joints), limb.pivot, 0, limb.swing * swing)
        _rotate(pose, list(limb.joints), limb.pivot, 2, limb.side * limb.spread * spread)
    return pose


def _to_camera(pose: np.ndarray, yaw: float, position: np.ndarray, view: tuple[float, float]) -> np.ndarray:
    """Body frame (T, 25, 3) -> camera coordinates: turn by yaw, stand at position (T, 3) on the floor,
    seen from a camera `view` = (height, downward pitch)."""
    world = np.einsum("ij,tnj->tni", _rotation(1, np.array([yaw]))[0], pose) + position[:, None]
    height, pitch = view
    world[..., 1] -= height
    return np.einsum("ij,tnj->tni", _rotation(0, np.array([-pitch]))[0], world)  # (T, 25, 3)


def _bone_quaternions(joints: np.ndarray) -> np.ndarray:
    """(F, 25, 3) -> (F, 25, 4) (w, x, y, z): a turn about +y by the body's facing (from its hips),
    then the shortest turn of +y onto each joint's bone; 0 at leaves."""
    bone = joints[:, np.maximum(_CHILD, 0)] - joints  # (F, 25, 3)
    d = bone / np.linalg.norm(bone, axis=-1, keepdims=True).clip(1e-9)
    w, x, z = 1.0 + d[..., 1], d[..., 2], -d[..., 0]  # shortest turn, its y part is 0
    hips = joints[:, 16] - joints[:, 12]  # (F, 3) left to right
    half = 0.5 * np.arctan2(-hips[:, 2], hips[:, 0])[:, None]  # (F, 1)
    c, s = np.cos(half), np.sin(half)
    q = np.stack([w * c, x * c - z * s, w * s, x * s + z * c], axis=-1)  # (w, x, 0, z) * (c, 0, s, 0)
    q /= np.linalg.norm(q, axis=-1, keepdims=True).clip(1e-9)
    q[:, _CHILD < 0] = 0.0
    return q


def _push_along_rays(joints: np.ndarray, push: np.ndarray) -> np.ndarray:
    """joints (F, 25, 3) moved push (F, 25) metres towards the colour camera along its viewing rays:
    COLOR_CAMERA.project gives the same pixels (to rounding), the depth changes."""
    lens = np.array([-COLOR_CAMERA.shift_x, 0.0, 0.0])  # the colour camera's centre
    ray = joints - lens  # (F, 25, 3)
    return joints - push[..., None] * ray / np.linalg.norm(ray, axis=-1, keepdims=True)


def _make_body(rng, body_id: int, first: int, kind: str, joints: np.ndarray,
               push: np.ndarray | None = None) -> SyntheticBody:
    """Add the Kinect's jitter and the fields a file carries to clean joints (F_b, 25, 3); then move
    them push (F_b, 25) metres along the colour camera's rays, if given (after the jitter, so that the
    colour projections are exactly those of the unpushed body)."""
    F = len(joints)
    p_inferred = np.full(25, 0.03)
    p_inferred[_EXTREMITIES] = 0.3 if kind == "actor" else 0.6
    tracking = np.where(rng.random((F, 25)) < p_inferred, 1, 2).astype(np.int8)
    sigma = np.where(tracking == 1, 0.012, 0.004)[..., None]
    joints = joints + sigma * rng.standard_normal(joints.shape)
    if push is not None:
        joints = _push_along_rays(joints, push)
    hands = np.array([[1, 1], [0, 0], [1, 3], [0, 3], [1, 2]])[
        rng.choice(5, size=(F, 2), p=[0.6, 0.25, 0.07, 0.05, 0.03])]  # (F, 2 hands, 2)
    trunk = joints[:, 20] - joints[:, 0]
    trunk /= np.linalg.norm(trunk, axis=-1, keepdims=True)
    info = np.zeros((F, 9))
    info[:, 1:5] = hands.reshape(F, 4)
    info[:, 6], info[:, 7], info[:, 8] = trunk[:, 0], -trunk[:, 2], 2  # leanX, leanY, trackingState
    return SyntheticBody(body_id, first, kind, joints, COLOR_CAMERA.project(joints),
                         DEPTH_CAMERA.project(joints), _bone_quaternions(joints), tracking, info)


_LIMB_ROOT = {"arm_r": 20, "arm_l": 20, "leg_r": 0, "leg_l": 0}  # the joint a limb hangs from


def _hand_push(group: int, phase: np.ndarray, amp: float, push_m: float) -> np.ndarray:
    """(T, 25) metres each joint comes towards the camera: the distal joints of the group's hinged
    limbs (wrist, hand, fingers; ankle, foot) push_m x their lift (as in _animate), the hinge and the
    pivot a share of that in proportion to their distance along the limb from its root, so that each
    bone takes a share of the push in proportion to its length; 0 elsewhere."""
    push = np.zeros((len(phase), 25))
    for name, offset in _GROUP_LIMBS[group]:
        limb = _LIMBS[name]
        if limb.hinge < 0:
            continue
        chain = [_LIMB_ROOT[name], limb.pivot, limb.hinge, limb.distal[0]]
        along = np.cumsum([0.0, *np.linalg.norm(np.diff(REST_POSE[chain], axis=0), axis=-1)])  # (4,)
        lift = amp * (0.5 - 0.5 * np.cos(phase + offset))  # (T,)
        push[:, list(limb.distal)] = push_m * lift[:, None]
        push[:, limb.pivot] = push_m * lift * along[1] / along[3]
        push[:, limb.hinge] = push_m * lift * along[2] / along[3]
    return push


def synth_sample(name: str, num_classes: int, seed: int = 0) -> SyntheticSample:
    """The scene of sample `name` (a pure function of its arguments); see the module docstring."""
    sid = SampleId.parse(name)
    return synth_scene(sid, class_motion(sid.label, num_classes), seed)


def synth_scene(sid: SampleId, motion: ClassMotion, seed: int = 0) -> SyntheticSample:
    """The scene of sample `sid` performing `motion` instead of its class's: synth_sample is
    synth_scene(sid, class_motion(sid.label, num_classes), seed). Everything random is drawn from
    (seed, sid) alone, so two motions give scenes that differ only where the motions differ."""
    rng = np.random.default_rng([seed, sid.setup, sid.camera, sid.performer, sid.replication, sid.action])
    setup_rng = np.random.default_rng([seed, 0x5E7, sid.setup])
    view = (setup_rng.uniform(0.7, 1.25), setup_rng.uniform(0.0, 0.15))  # camera height, pitch
    depth = setup_rng.uniform(2.9, 3.4) + rng.uniform(-0.15, 0.3)
    scale = np.random.default_rng([seed, 0xB0D, sid.performer]).uniform(0.85, 1.1)

    F = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
    lead = int(rng.integers(1, 9)) if rng.random() < 0.2 else 0
    trail = int(rng.integers(1, 6)) if rng.random() < 0.1 else 0
    t = np.arange(F - lead - trail) / FPS  # (T,) seconds while the actors are tracked
    freq = motion.tempo_hz * rng.uniform(0.85, 1.15)
    amp = rng.uniform(0.75, 1.1)
    onset = rng.uniform(0.0, 0.5)
    phase = 2 * np.pi * freq * np.clip(t - onset, 0, None) + rng.uniform(-0.3, 0.3)
    yaw = np.radians({1: 45.0, 2: 0.0, 3: -45.0}[sid.camera] + rng.uniform(-12, 12))
    centre = np.array([rng.uniform(-0.4, 0.4), 0.0, depth])
    sway = 0.015 * np.sin(2 * np.pi * rng.uniform(0.15, 0.4, (1, 3)) * t[:, None] + rng.uniform(0, 6, 3))
    sway[:, 1] = 0.0  # (T, 3) the body drifts, feet stay on the floor

    base_id = BODY_ID_BASE + int(rng.integers(1_000, 60_000))
    # a fidget: some other limb moving a little, at its own pace, so that no limb is still
    fidget = rng.uniform(0, 2 * np.pi) + 2 * np.pi * rng.uniform(0.2, 1.5) * t
    rest = _animate(np.repeat(REST_POSE[None] * scale, len(t), axis=0), int(rng.integers(8)),
                    PATTERNS[rng.integers(3)], fidget, rng.uniform(0.0, 0.3))  # (T, 25, 3)
    bodies = []
    if not motion.two_person:
        pose = _animate(rest, motion.group, motion.pattern, phase, amp)
        push = _hand_push(motion.group, phase, amp, motion.push_m) if motion.push_m else None
        bodies.append(_make_body(rng, base_id, lead, "actor", _to_camera(pose, yaw, centre + sway, view),
                                 push))
    else:
        gap = rng.uniform(1.1, 1.5)
        across = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])  # the scene's x axis after the turn
        step = np.clip(t / t[-1], 0, 1)  # (T,)
        approach = 0.35 * step * step * (3 - 2 * step) if sid.label % 2 == 0 else 0 * t
        recoil = 0.25 * (0.5 - 0.5 * np.cos(phase)) if sid.label % 2 == 1 else 0 * t
        first = _animate(rest, motion.group, motion.pattern, phase, amp)
        second = _animate(rest * rng.uniform(0.92, 1.08), (motion.group + 3) % 8,
                          motion.pattern, phase - np.pi / 2, amp * 0.7)
        where1 = centre + sway + across * (approach[:, None] - gap / 2)
        where2 = centre - sway + across * (recoil[:, None] + gap / 2)
        bodies.append(_make_body(rng, base_id, lead, "actor",
                                 _to_camera(first, yaw - np.pi / 3, where1, view)))
        late = int(rng.integers(1, 9)) if rng.random() < 0.3 else 0  # actor 2 enters a little later
        bodies.append(_make_body(rng, base_id + int(rng.integers(1, 90)), lead + late, "actor",
                                 _to_camera(second[late:], yaw + np.pi / 3, where2[late:], view)))
    next_id = bodies[-1].body_id + int(rng.integers(1, 40))
    if rng.random() < 0.3:  # a short ghost: a jumbled body for a few frames
        n = int(rng.integers(1, 12))
        pose = REST_POSE + 0.06 * rng.standard_normal((n, 25, 3))
        where = np.array([rng.uniform(-1.5, 1.5), 0.0, rng.uniform(3.0, 4.4)])
        bodies.append(_make_body(rng, next_id, int(rng.integers(0, F - n + 1)), "short",
                                 _to_camera(pose, rng.uniform(-1, 1), np.tile(where, (n, 1)), view)))
        next_id += int(rng.integers(1, 40))
    if rng.random() < 0.12:  # something lying flat (a table, a bag) taken for a body
        n = int(rng.integers(14, min(45, F) + 1))
        lying = np.repeat(REST_POSE[None] - [0, 0.98, 0], n, axis=0)
        _rotate(lying, list(range(25)), 0, 2, np.full(n, np.pi / 2))
        where = np.array([rng.uniform(-1.2, 1.2), rng.uniform(0.3, 0.8), rng.uniform(3.4, 4.3)])
        bodies.append(_make_body(rng, next_id, int(rng.integers(0, F - n + 1)), "wide",
                                 _to_camera(lying, rng.uniform(-0.3, 0.3), np.tile(where, (n, 1)), view)))
    bodies.sort(key=lambda b: b.first_frame)  # stable: actors first on ties
    return SyntheticSample(sid.name, F, tuple(bodies), crlf=bool(rng.random() < 0.15), motion=motion)
