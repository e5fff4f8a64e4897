"""Write reference.npz, the oracle of tests/test_net_ctrgcn.py, with the reference CTR-GCN code.

    # the reference repository Uason-Chen/CTR-GCN, checked out at e13d758 in /tmp/CTR-GCN
    # its unit_gcn moves the fixed graph with `.cuda(...)`; on a CPU-only machine make that `.to(x.device)`
    OMP_NUM_THREADS=1 .venv/bin/python tests/data/ctrgcn/make_reference.py /tmp/CTR-GCN

Nothing of this repository's network is used: the reference's Model is built for 60 classes, filled with
`reference_weights` (the test's seeded draw over the reference's own keys and shapes) and run in eval
mode on a seeded input whose sample 1 has no second person. Stored: keys and shapes, the reference's
adjacency, the input, the drawn weights' sum of |w| (a guard against a changed generator), the logits
and each block's mean |output|, with the learned topology and (suffix `_fixed`) with the fixed graph.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def run(net: torch.nn.Module, skeleton: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode logits (N, K) and each block's mean |output| (10,)."""
    means = []
    for i in range(1, 11):
        getattr(net, f"l{i}").register_forward_hook(lambda m, args, out: means.append(out.abs().mean()))
    with torch.no_grad():
        logits = net.eval()(skeleton)
    return logits.numpy(), torch.stack(means).double().numpy()


def main(reference_repo: str) -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    from test_net_ctrgcn import SEED, reference_weights

    # The reference's `model` package would shadow ours: load its ctrgcn.py by path; its `graph` goes on
    # the path, where its import_class finds it loaded.
    sys.path.append(reference_repo)
    import graph.ntu_rgb_d  # noqa: F401
    source = Path(reference_repo, "model", "ctrgcn.py")
    spec = importlib.util.spec_from_file_location("ctrgcn_reference", source)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    Model = reference.Model

    def build(num_classes: int = 60, adaptive: bool = True) -> torch.nn.Module:
        return Model(num_class=num_classes, num_point=25, num_person=2, graph="graph.ntu_rgb_d.Graph",
                     graph_args={"labeling_mode": "spatial"}, adaptive=adaptive)

    for k, adaptive in ((60, True), (120, True), (60, False)):
        count = sum(p.numel() for p in build(k, adaptive).parameters())
        print(f"parameters, {k} classes, adaptive={adaptive}: {count:,}")
    net = build()
    keys = list(net.state_dict())
    shapes = [tuple(v.shape) for v in net.state_dict().values()]
    state = reference_weights(keys, shapes, SEED)
    skeleton = torch.randn(2, 3, 15, 25, 2, generator=torch.Generator().manual_seed(SEED + 1))
    skeleton[1, ..., 1] = 0  # sample 1 has one actor
    net.load_state_dict(state)
    logits, means = run(net, skeleton)
    fixed = build(adaptive=False)
    fixed.load_state_dict({k: v for k, v in state.items() if not k.endswith(".PA")})
    logits_fixed, means_fixed = run(fixed, skeleton)
    np.savez_compressed(
        HERE / "reference.npz", keys=np.array("\n".join(keys)),
        shapes=np.array([s + (-1,) * (4 - len(s)) for s in shapes], dtype=np.int16),
        adjacency=net.graph.A.astype(np.float32), skeleton=skeleton.numpy(),
        weights_abs_sum=np.float64(sum(v.double().abs().sum().item() for v in state.values())),
        logits=logits, block_abs_mean=means, logits_fixed=logits_fixed, block_abs_mean_fixed=means_fixed)
    print(f"wrote {HERE / 'reference.npz'}; block mean |output| {np.round(means, 3).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1])
