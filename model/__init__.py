"""Networks for NTU RGB+D and everything `ntu-train` does with them, one room per job:

    networks/   i3d, hcn, tiam, fusion (MMTM, DSFM, MFFM), ccdfarm; the reference models ctrgcn,
                posec3d (+ slowonly), rgbpose on resnet3d; build.py: every network by name and what it
                takes (`network_spec`); released.py: the references' released weights (`load_released`)
    data/       a split of a prepared store -> batches; packed skeletons, RGB clips, transforms, motion
    results/    scores, reports, ensembles, finished runs (pure numbers and pictures)
    training/   config, fit, epoch, checkpoints, processes, runtime, evaluation of a network on a split
    predict/    a trained checkpoint on one's own recordings, and its picture
Each room imports only rooms listed above it (networks uses data's motion rule alone).

    import model
    net = model.build("ccdfarm", num_classes=60)   # or any of model.MODEL_NAMES
    out = net(rgb=rgb, skeleton=skeleton)           # rgb (B, 3, T, H, W), skeleton (B, 3, 32, 25, 2)
    loss = model.heads_loss(out, labels)            # out["logits"] is the prediction; labels (B,) int64
    model.load_pytorch_i3d(net, "rgb_imagenet.pt")  # optional ImageNet/Charades I3D start

Inputs: rgb any T, H, W; skeleton exactly T = the config's `frames` (32 by default, a multiple of 16),
25 joints, 2 persons; the same batch B in both; float32, float16 or bfloat16. Anything else raises a
ValueError naming the argument and the expected shape.

Motion (paper eq. 2), one definition everywhere: `skeleton_motion(skeleton)`, M_t = S_{t+1} - S_t on the
frames the model is given (after temporal sampling), zero where the actor is absent (its (3, 25) slice
all zero) in frame t or t+1, and zero at the last frame. The networks compute it when `motion` is None;
the store's per-frame `skeleton/motion` follows the same rule at full frame rate.
"""

from model.data.dataset import NTUDataset
from model.data.motion import skeleton_motion
from model.data.transforms import rgb_to_model, skeleton_bones
from model.networks.build import INPUTS, MODEL_NAMES, NetworkSpec, build, network_spec
from model.networks.ccdfarm import TwoStreamConfig, TwoStreamNet, heads_loss, to_channels_last_3d
from model.networks.ctrgcn import CTRGCN, CTRGCNConfig
from model.networks.fusion import DSFM, MFFM, MMTM
from model.networks.hcn import HCN, HCNConfig
from model.networks.i3d import I3D, I3DConfig, load_pytorch_i3d, pytorch_i3d_key_map
from model.networks.posec3d import PoseC3D, PoseC3DConfig, SlowOnly, SlowOnlyConfig
from model.networks.released import load_released
from model.networks.rgbpose import RGBPoseConfig, RGBPoseConv3D
from model.networks.tiam import TIAM

__all__ = [
    "CTRGCN", "CTRGCNConfig", "DSFM", "HCN", "HCNConfig", "I3D", "I3DConfig", "INPUTS", "MFFM", "MMTM",
    "MODEL_NAMES", "NetworkSpec", "PoseC3D", "PoseC3DConfig", "RGBPoseConfig", "RGBPoseConv3D", "SlowOnly",
    "SlowOnlyConfig", "TIAM", "TwoStreamConfig", "TwoStreamNet", "build", "heads_loss", "load_pytorch_i3d",
    "load_released", "network_spec", "pytorch_i3d_key_map", "skeleton_motion", "to_channels_last_3d",
    "NTUDataset", "rgb_to_model", "skeleton_bones",  # the data path's public names (model/data)
]
