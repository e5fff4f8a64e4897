"""How each reference model's own code cuts its clips, as `ClipSpec` field values.

    spec = network_spec("posec3d")                                   # model.networks.build: its inputs
    clip = ClipSpec(skeleton=spec.takes("skeleton"), rgb=spec.takes("rgb"), heatmaps=spec.takes("heatmaps"),
                    **reference_clip("posec3d"))
    train = NTUDataset(store, "xsub", "train", inputs=("heatmaps",), **reference_clip("posec3d"))

The inputs (skeleton, rgb, heatmaps) are the network's to say (`NetworkSpec.inputs`), so they are not
here; the values are how its reference feeds them, each field overridable. The project's own models
(hcn, i3d and the fused ones) take `ClipSpec`'s defaults: {}.

  posec3d   PYSKL configs/posec3d/slowonly_r50_ntu60_xsub/joint.py: UniformSampleFrames(48), PoseCompact
            (hw_ratio 1), Resize(-1, 64), RandomResizedCrop(0.56-1), Resize(56), Flip(0.5) with the Kinect
            sides, GeneratePoseTarget(sigma 0.6); test: the whole box at 64 x 64, 10 seeded clips.
  slowonly  PYSKL configs/rgbpose_conv3d/rgb_only.py: MMUniformSampleFrames(RGB=8), RandomResizedCrop
            (0.56-1) of the 256^2 person crop to 224, Flip(0.5), ImageNet Normalize; test: 10 clips.
  rgbpose   PYSKL configs/rgbpose_conv3d/rgbpose_conv3d.py: RGB=8 and Pose=32 over the same timeline,
            the RGB pipeline above, heatmaps with sigma 0.7 at a quarter of the crop (56 for 224).
  ctrgcn    CTR-GCN config/nturgbd-cross-subject/default.yaml: valid_crop_resize to 64 frames
            (p_interval 0.5-1, test 0.95), random_rot 0.3, no flip, the joint stream (bone, joint_motion,
            bone_motion: its other three); its preprocessing's translation to actor 1's spine in the
            first frame ("spine_first"). What the store cannot give: CTR-GCN's own denoising (the store
            denoises in `ntu_pipeline.skeleton`, and keeps frames with an actor, which is what its
            feeder's valid_frame_num counts) and its 300-frame padding (the resident skeletons are
            packed; the crop reads only the frames kept, as valid_crop_resize does).

Where the store changes what the reference sees (its person crop has 0.25 margin per side where
MMCompact pads 0.125; 32 stored RGB frames; Kinect joints and tracking states for HRNet's keypoints and
scores), `pyskl_sampling`'s module docstring says how.
"""

from __future__ import annotations

REFERENCE_CLIPS: dict[str, dict[str, object]] = {
    "posec3d": dict(frames=48, sampling="uniform", heatmap_box="pose", heatmap_size=56, heatmap_test_size=64,
                    sigma=0.6, flip=0.5),
    "slowonly": dict(frames=8, sampling="uniform", rgb_crop="resized", crop=224, rgb_norm="imagenet",
                     flip=0.5),
    "rgbpose": dict(frames=8, heatmap_frames=32, sampling="uniform", heatmap_box="rgb", heatmap_size=56,
                    sigma=0.7, rgb_crop="resized", crop=224, rgb_norm="imagenet", flip=0.5),
    "ctrgcn": dict(frames=64, sampling="crop_resize", rotation=0.3, flip=0.0, stream="joint",
                   normalize="spine_first"),
}


def reference_clip(model_name: str) -> dict[str, object]:
    """The `ClipSpec` field values (but its inputs) with which model `model_name` is fed as its reference
    feeds it; {} for a model without one (the project's own, which `ClipSpec`'s defaults describe).
    A new dict each call: change it freely."""
    return dict(REFERENCE_CLIPS.get(model_name, {}))
