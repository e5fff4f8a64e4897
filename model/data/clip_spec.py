"""What a model is fed: `ClipSpec`, the frozen, validated description of a clip that both data paths
(`split.SplitData`, ntu-train's; `dataset.NTUDataset`, the public one) cut by (`sampling.ClipRule`).

    spec = ClipSpec(frames=16, skeleton=True, rgb=True, crop=112)             # a fused model's clips
    spec = ClipSpec(skeleton=False, heatmaps=True, **reference_clip("posec3d"))   # clip_recipes.py
    info = read_split(store, "xsub", "train", *spec.needs)                     # the stages it reads

The defaults are the clips of the project's own models (HCN's windows, I3D's crops); the reference
models' settings (sampling, heatmaps, rgb_crop, rgb_norm, rotation, stream) change them field by field,
and a combination the inputs cannot take is refused here in one line (ConfigError). It is saved whole
in a run's config.json (`dataclasses.asdict`), so a field added later needs a default that keeps what
older runs did.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.data.ctrgcn_sampling import STREAMS
from model.data.sampling import HEATMAP_BOXES, RGB_CROPS, SAMPLINGS
from model.data.transforms import NORMALIZATIONS, RGB_NORMS
from ntu_pipeline.errors import ConfigError


@dataclass(frozen=True)
class ClipSpec:
    """What a model is fed. frames: T per clip (a multiple of 16 for HCN; the RGB frames where the clip
    has RGB); skeleton / rgb / heatmaps: the inputs it takes; crop: RGB side after cropping; flip:
    probability of the horizontal flip at training; normalize: "none", "spine" (centre on actor 1's
    spine), "spine_axes" (and rotate to its body axes, PYSKL's pre-normalisation) or "spine_first"
    (actor 1's spine in its first frame, CTR-GCN's); half: keep the resident skeletons in float16.

    The reference models' settings (the defaults keep the clips above; `clip_recipes.reference_clip`):
    sampling "window" (HCN's windows), "uniform" (PYSKL's UniformSampleFrames) or "crop_resize"
    (CTR-GCN's valid_crop_resize); heatmap_size H of the H x H heatmaps at training, heatmap_test_size
    at test (None: H; PoseC3D 64, its whole box where it trains on crops of it); heatmap_frames: T of the
    heatmaps beside RGB (None: frames; RGBPose 32 for 8 RGB frames); heatmap_box "pose" (the box around
    the clip's 2D joints, PoseC3D: needs no RGB stage) or "rgb" (the RGB crop, RGBPose); sigma: of the
    heatmaps' gaussians in their pixels; rgb_crop "views" (area 50-100%, views at test) or "resized"
    (PYSKL's RandomResizedCrop, area 56-100%); rgb_norm "i3d" ([-1, 1]) or "imagenet"; rotation:
    CTR-GCN's random rotation at training (radians, 0: none); stream: CTR-GCN's input stream ("joint",
    "bone", "joint_motion", "bone_motion"), what `Batch.skeleton` becomes."""

    frames: int = 32
    skeleton: bool = True
    rgb: bool = False
    crop: int = 224
    flip: float = 0.5
    normalize: str = "spine_axes"
    half: bool = False
    sampling: str = "window"
    heatmaps: bool = False
    heatmap_size: int = 56
    heatmap_test_size: int | None = None
    heatmap_frames: int | None = None
    heatmap_box: str = "pose"
    sigma: float = 0.6
    rgb_crop: str = "views"
    rgb_norm: str = "i3d"
    rotation: float = 0.0
    stream: str = "joint"

    def __post_init__(self):
        if self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        if not (self.skeleton or self.rgb or self.heatmaps):
            raise ConfigError("a clip needs the skeleton, the RGB frames, the heatmaps or some of them")
        if self.crop < 1:
            raise ConfigError(f"crop must be >= 1, got {self.crop}")
        if not 0.0 <= self.flip <= 1.0:
            raise ConfigError(f"flip must be a probability in [0, 1], got {self.flip}")
        for name, known in (("normalize", NORMALIZATIONS), ("sampling", SAMPLINGS),
                            ("heatmap_box", HEATMAP_BOXES), ("rgb_crop", RGB_CROPS), ("rgb_norm", RGB_NORMS),
                            ("stream", STREAMS)):
            if getattr(self, name) not in known:
                raise ConfigError(f"{name} must be one of {known}, got {getattr(self, name)!r}")
        sizes = (self.heatmap_size, self.heatmap_test_size or 1, self.heatmap_frames or 1)
        if min(sizes) < 1 or self.sigma <= 0 or self.rotation < 0:
            raise ConfigError(f"heatmap_size, heatmap_test_size, heatmap_frames must be >= 1, sigma > 0 and "
                              f"rotation >= 0, got {sizes}, {self.sigma}, {self.rotation}")
        self._check_inputs()

    def _check_inputs(self) -> None:
        """One line for each setting that the clip's inputs cannot take."""
        if self.sampling == "crop_resize" and (not self.skeleton or self.rgb or self.heatmaps):
            raise ConfigError("sampling 'crop_resize' (CTR-GCN's) cuts the skeleton alone: give it only")
        if self.heatmaps and self.sampling != "uniform":
            raise ConfigError("heatmaps are sampled as PYSKL samples them: give sampling='uniform'")
        if self.heatmaps and self.heatmap_box == "rgb" and not self.rgb:
            raise ConfigError("heatmap_box 'rgb' draws the heatmaps on the RGB crop: the clip needs rgb")
        if self.heatmap_box == "rgb" and self.heatmap_test_size not in (None, self.heatmap_size):
            raise ConfigError("heatmap_test_size is the pose box's; heatmaps on the RGB crop follow the crop")
        if self.heatmap_frames not in (None, self.frames) and not (self.heatmaps and self.rgb):
            raise ConfigError("heatmap_frames other than frames need heatmaps beside rgb (RGBPose: 32 for 8)")
        if (self.rgb_crop != "views" or self.rgb_norm != "i3d") and not self.rgb:
            raise ConfigError("rgb_crop and rgb_norm are the RGB frames': the clip needs rgb")
        if (self.rotation != 0 or self.stream != "joint") and not self.skeleton:
            raise ConfigError("rotation and stream turn the 3D skeleton: the clip needs skeleton")

    @property
    def needs(self) -> tuple[bool, bool]:
        """(need_rgb, need_skeleton), `read_split`'s: heatmaps need the skeleton stage (its 2D joints),
        never the RGB stage unless they are drawn on the RGB crop, which the clip then takes."""
        return self.rgb, self.skeleton or self.heatmaps
