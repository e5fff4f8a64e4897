"""`ntu-train`: train and evaluate CC-DFARM and its baselines on a prepared store.

    ntu-train fit --store ntu60.zarr --protocol xsub --model ccdfarm --out runs/ccdfarm
    ntu-train fit ... --resume                       # continue runs/ccdfarm/last.pt exactly
    ntu-train eval --checkpoint runs/ccdfarm/best.pt --store ntu60.zarr --protocol xsub --out runs/eval
    torchrun --nproc-per-node 8 -m cli.train fit ... # DDP: one process per GPU (gloo on CPU)

Options map onto `model.config.TrainConfig` (fit) and `evaluate_checkpoint` (eval); errors about the
input are one-line messages.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from cli.errors import CONTEXT, user_errors
from model import MODEL_NAMES
from model.config import OPTIMIZERS, TrainConfig, default_device, default_workers
from model.train import evaluate_checkpoint, fit
from model.transforms import NORMALIZATIONS
from ntu_pipeline.errors import Interrupted
from ntu_pipeline.manifests import protocols

STORE = click.option("--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="A store prepared by ntu-prep (with RGB for every model but hcn).")
PROTOCOL = click.option("--protocol", required=True, type=click.Choice(sorted(protocols())),
                        help="The split to use (`ntu-prep split` writes it).")


@click.group(context_settings=CONTEXT)
def main():
    """Train and evaluate CC-DFARM and its baselines on a prepared NTU RGB+D store."""


@main.command("fit")
@STORE
@PROTOCOL
@click.option("--model", "model_name", required=True, type=click.Choice(MODEL_NAMES))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: config, checkpoints, metrics, confusion matrix.")
@click.option("--epochs", default=50, show_default=True)
@click.option("--batch-size", default=32, show_default=True, help="Global batch, over all processes.")
@click.option("--lr", default=0.1, show_default=True, help="Learning rate at batch 32; scaled by batch/32.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True,
              help="sgd (the paper's), or adam (HCN's own recipe: --lr 0.001 --weight-decay 1e-4).")
@click.option("--momentum", default=0.9, show_default=True, help="SGD momentum.")
@click.option("--weight-decay", default=5e-4, show_default=True)
@click.option("--warmup-epochs", default=5.0, show_default=True, help="Linear warm-up, then cosine to 0.")
@click.option("--clip-norm", default=40.0, show_default=True, help="Gradient norm clipping; 0: off.")
@click.option("--seed", default=0, show_default=True, help="Data order, augmentation and dropout.")
@click.option("--frames", default=32, show_default=True, help="Frames per clip (a multiple of 16 with HCN).")
@click.option("--crop", default=224, show_default=True, help="RGB crop side, from the stored frames.")
@click.option("--flip", default=0.5, show_default=True,
              help="Horizontal flip probability (RGB and skeleton); 0 where classes are handed.")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="spine_axes", show_default=True,
              help="Skeletons: centre on actor 1's spine, and rotate to its body axes.")
@click.option("--dropout", type=float, default=None, help="Every dropout layer (default: the model's).")
@click.option("--bn-momentum", type=float, default=None,
              help="I3D's BatchNorm momentum (default 0.01 as pytorch-i3d; 0.1 for short runs from scratch).")
@click.option("--i3d-checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start I3D from a pytorch-i3d file (rgb_imagenet.pt); it trains at --pretrained-lr x lr.")
@click.option("--init-from", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Start a stream from an hcn or i3d ntu-train checkpoint (repeatable: both streams of a "
                   "fused model).")
@click.option("--pretrained-lr", default=0.1, show_default=True,
              help="Learning-rate factor of the --i3d-checkpoint parameters.")
@click.option("--device", default=default_device, show_default="cuda if available",
              help="cpu or cuda (under torchrun: cuda:LOCAL_RANK).")
@click.option("--workers", default=default_workers, type=int, show_default="min(8, CPUs)",
              help="RGB decoding processes per training process.")
@click.option("--bf16/--no-bf16", default=True, show_default=True, help="bf16 autocast (CUDA only).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--sync-bn", is_flag=True, help="SyncBatchNorm across DDP processes (CUDA).")
@click.option("--half-skeletons", is_flag=True, help="Keep the loaded skeletons in float16.")
@click.option("--checkpoint-every", default=0, show_default=True,
              help="Also write last.pt every N steps (0: after each epoch only).")
@click.option("--resume", is_flag=True, help="Continue OUT/last.pt (same options) where it stopped.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def fit_command(store, protocol, model_name, out, epochs, batch_size, lr, optimizer, momentum, weight_decay,
                warmup_epochs, clip_norm, seed, frames, crop, flip, normalize, dropout, bn_momentum,
                i3d_checkpoint, init_from, pretrained_lr, device, workers, bf16, compile_, sync_bn,
                half_skeletons, checkpoint_every, resume, quiet):
    """Train MODEL on the train split, evaluating the test split after every epoch.

    Recipe: SGD (momentum 0.9), lr 0.1 at batch 32 scaled linearly with the batch, weight decay 5e-4,
    5 warm-up epochs then cosine annealing, 50 epochs, gradient norm clipped at 40; bf16 autocast on
    CUDA. The run ends with metrics.json and confusion.png of its final weights on the test split.
    """
    config = TrainConfig(
        store=str(store), protocol=protocol, model=model_name, out=str(out), epochs=epochs,
        batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, clip_norm=clip_norm, seed=seed, frames=frames, crop=crop, flip=flip,
        normalize=normalize, dropout=dropout, bn_momentum=bn_momentum, i3d_checkpoint=i3d_checkpoint,
        init_from=tuple(init_from), pretrained_lr=pretrained_lr,
        device=device, workers=workers, bf16=bf16, compile=compile_, sync_bn=sync_bn,
        half_skeletons=half_skeletons, checkpoint_every=checkpoint_every, progress=not quiet)
    try:
        report = fit(config, resume=resume)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {out}/last.pt holds the last checkpoint: continue with the same "
                          "command and --resume") from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from the first process
        click.echo(f"{model_name} {protocol}: test top1 {report['top1']:.4f} top5 {report['top5']:.4f} "
                   f"({report['num_samples']} samples); {out}/metrics.json, {out}/confusion.png")


@main.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A last.pt or best.pt written by `ntu-train fit`.")
@STORE
@PROTOCOL
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write metrics.json and confusion.png here.")
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default=None,
              help="Refuse a checkpoint of another model.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--device", default=default_device, show_default="cuda if available")
@click.option("--workers", default=default_workers, type=int, show_default="min(8, CPUs)")
@user_errors
def eval_command(checkpoint, store, protocol, out, model_name, batch_size, device, workers):
    """Top-1, top-5 and per-class accuracy of CHECKPOINT on the test split of PROTOCOL."""
    report = evaluate_checkpoint(checkpoint, store, protocol, out, model=model_name, batch_size=batch_size,
                                 device=device, workers=workers)
    click.echo(f"{report['model']} {protocol}: test top1 {report['top1']:.4f} top5 {report['top5']:.4f} "
               f"({report['num_samples']} samples)" + (f"; {out}/metrics.json, {out}/confusion.png" if out
                                                       else ""))


RUNS = click.argument("runs", nargs=-1, required=True,
                      type=click.Path(exists=True, file_okay=False, path_type=Path))


@main.command("summary")
@RUNS
@user_errors
def summary_command(runs):
    """A table of finished runs: model, protocol, epochs, test top-1 and top-5, confusion matrix."""
    import json

    click.echo(f"{'run':28s} {'model':10s} {'protocol':8s} {'epochs':>6s} {'top1':>7s} {'top5':>7s}  "
               "confusion")
    for run in runs:
        metrics, config = run / "metrics.json", run / "config.json"
        if not metrics.is_file() or not config.is_file():
            raise click.ClickException(f"{run}: no metrics.json and config.json (not a finished run)")
        report, settings = json.loads(metrics.read_text()), json.loads(config.read_text())
        click.echo(f"{str(run)[-28:]:28s} {settings['model']:10s} {settings['protocol']:8s} "
                   f"{settings['epochs']:6d} {report['top1']:7.4f} {report['top5']:7.4f}  "
                   f"{run / 'confusion.png'}")


if __name__ == "__main__":
    main()
