"""The CC-DFARM model package: I3D and HCN streams, MMTM/DSFM/MFFM/TIAM fusion, variants by name.

    import model
    net = model.build("ccdfarm", num_classes=60)   # or any of model.MODEL_NAMES
    out = net(rgb, skeleton)                        # rgb (B, 3, T, H, W), skeleton (B, 3, 32, 25, 2)
    loss = model.heads_loss(out, labels)            # out["logits"] is the prediction; labels (B,) int64
    model.load_pytorch_i3d(net, "rgb_imagenet.pt")  # optional ImageNet/Charades I3D start

Inputs: rgb any T, H, W; skeleton exactly T = the config's `frames` (32 by default, a multiple of 16),
25 joints, 2 persons; the same batch B in both; float32, float16 or bfloat16. Anything else raises a
ValueError naming the argument and the expected shape.

Motion (paper eq. 2), one definition everywhere: `skeleton_motion(skeleton)`, M_t = S_{t+1} - S_t on the
frames the model is given (after temporal sampling), zero where the actor is absent (its (3, 25) slice
all zero) in frame t or t+1, and zero at the last frame. The networks compute it when `motion` is None;
the store's per-frame `skeleton/motion` follows the same rule at full frame rate.

Files: i3d.py (RGB stream, checkpoint loading), hcn.py (skeleton stream, motion), tiam.py, fusion.py
(MMTM, DSFM, MFFM), ccdfarm.py (the two-stream network, `build`, `heads_loss`).
"""

from model.ccdfarm import MODEL_NAMES, TwoStreamConfig, TwoStreamNet, build, heads_loss, to_channels_last_3d
from model.fusion import DSFM, MFFM, MMTM
from model.hcn import HCN, HCNConfig, skeleton_motion
from model.i3d import I3D, I3DConfig, load_pytorch_i3d, pytorch_i3d_key_map
from model.tiam import TIAM

__all__ = [
    "DSFM", "HCN", "HCNConfig", "I3D", "I3DConfig", "MFFM", "MMTM", "MODEL_NAMES", "TIAM",
    "TwoStreamConfig", "TwoStreamNet", "build", "heads_loss", "load_pytorch_i3d", "pytorch_i3d_key_map",
    "skeleton_motion", "to_channels_last_3d",
]
