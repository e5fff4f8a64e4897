"""`ntu-train`: train, evaluate and combine CC-DFARM and its baselines on a prepared store, and predict.

    ntu-train fit --store ntu60.zarr --protocol xsub --model ccdfarm --out runs/ccdfarm
    ntu-train fit ... --resume                       # continue runs/ccdfarm/last.pt exactly
    ntu-train eval --checkpoint runs/ccdfarm/best.pt --store ntu60.zarr --protocol xsub --clips 10
    ntu-train ensemble runs/hcn runs/i3d --out runs/late      # late fusion of saved scores
    ntu-train predict --checkpoint runs/ccdfarm/best.pt --skeleton my.skeleton --video my_rgb.avi
    ntu-train summary runs/* --plot curves.png
    python -m cli.torchrun --nproc-per-node 8 -m cli.train fit ...  # DDP: one process per GPU (gloo on CPU)

Options map onto `model.training.config.TrainConfig`'s parts (fit: each option's default is read from the
part that holds it, `FIELDS`, so the two cannot drift; recipe fields default to the model's recipe),
`evaluate_checkpoint` (eval) and `model.predict.recordings` (predict).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from cli.errors import CONTEXT, OptionsError, Program, user_errors
from cli.options import config_default
from cli.predict import predict_command
from cli.results import ensemble_command, summary_command
from model import MODEL_NAMES
from model.data.ctrgcn_sampling import STREAMS
from model.data.transforms import NORMALIZATIONS
from model.training.config import AVERAGES, FIELDS, PARTS, TrainConfig, default_device, default_workers
from model.training.recipes import FAMILY_FIELDS, OPTIMIZERS, SCHEDULES
from ntu_pipeline.errors import Interrupted
from ntu_pipeline.manifests import protocols

STORE = click.option("--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="A store prepared by ntu-prep (with RGB for every model but hcn).")
PROTOCOL = click.option("--protocol", required=True, type=click.Choice(sorted(protocols())),
                        help="The split to use (`ntu-prep split` writes it).")
def _no_meta(device: str) -> str:
    """The meta device is the tests' (TrainConfig takes it); a run of nothing is no command's."""
    if device.partition(":")[0] == "meta":
        raise OptionsError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    return device


RECIPE = "the model's recipe"


def _epochs(value: str | None) -> tuple[int, ...] | None:
    """--milestones 35,55 -> (35, 55)."""
    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise OptionsError(f"--milestones takes epochs separated by commas (35,55), got {value!r}") from None
# what `clip_recipes.reference_clip` may set; the test settings, which `config.TEST_DEFAULTS` may
CLIP_OWN = ("frames", "crop", "flip", "normalize", "stream", "heatmap_size", "heatmap_test_size",
            "test_average", "flip_test")


def config_option(name: str, help: str, flag: bool = False, **options):
    """A `fit` option for the flat name `name` (`FIELDS`), its default the part's (None: the recipe's or
    the model's; `flag`: an --x/--no-x pair all the same)."""
    part, field = FIELDS.get(name, ("", name))
    default = (None if part == "recipe" and field in FAMILY_FIELDS
               else config_default(PARTS.get(part, TrainConfig), field))
    if field in CLIP_OWN:  # a reference model cuts its clips (and tests) as its reference does
        options.setdefault("show_default", f"{default}; reference models: theirs")
        flag, default = flag or isinstance(default, bool), None
    if isinstance(default, bool) or flag:
        flags = f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"
        options.setdefault("show_default", True if default is not None else RECIPE)
        return click.option(flags, name, default=default, help=help, **options)
    options.setdefault("show_default", RECIPE if default is None else True)
    return click.option(f"--{name.replace('_', '-')}", name, default=default, help=help, **options)


@click.group(cls=Program, context_settings=CONTEXT)
def main():
    """Train and evaluate CC-DFARM and its baselines on a prepared NTU RGB+D store."""


FIT_OPTIONS = [
    config_option("epochs", "Epochs.", type=int),
    config_option("batch_size", "Global batch, over all processes.", type=int),
    config_option("lr", "Learning rate at batch 32; scaled by batch/32.", type=float),
    config_option("optimizer", "sgd (CC-DFARM's recipe) or adam (HCN's).", type=click.Choice(OPTIMIZERS)),
    config_option("momentum", "SGD momentum.", type=float),
    config_option("weight_decay", "Weight decay (L2).", type=float),
    config_option("warmup_epochs", "Linear warm-up, then the schedule.", type=float),
    config_option("schedule", "cosine: to 0 at the end; exp: x --lr-decay per epoch; step: x --lr-decay at "
                  "each of --milestones.", type=click.Choice(SCHEDULES)),
    config_option("lr_decay", "Per-epoch factor of the exp schedule, per-milestone of the step one.",
                  type=float),
    config_option("milestones", "The step schedule's epochs, comma-separated (35,55).",
                  callback=lambda ctx, param, value: _epochs(value)),
    config_option("nesterov", "Nesterov momentum (SGD).", flag=True),
    config_option("clip_norm", "Gradient norm clipping; 0: off.", type=float),
    config_option("seed", "Data order, augmentation and dropout."),
    config_option("frames", "Frames per clip (a multiple of 16 with HCN).", type=int),
    config_option("crop", "RGB crop side, from the stored frames.", type=int),
    config_option("flip", "Horizontal flip probability (RGB and skeleton); 0 where classes are handed.",
                  type=float),
    config_option("normalize", "Skeletons: centre on actor 1's spine, and rotate to its body axes.",
                  type=click.Choice(NORMALIZATIONS)),
    config_option("stream", "ctrgcn's input: the joints, the bones, or either's motion (its four runs, "
                  "combined by `ensemble`).", type=click.Choice(STREAMS)),
    config_option("heatmap_size", "Side of the heatmaps at training (posec3d, rgbpose).", type=int),
    config_option("heatmap_test_size", "Side of posec3d's heatmaps at test (its whole pose box).", type=int),
    config_option("dropout", "Every dropout layer.", type=float, show_default="the model's"),
    config_option("bn_momentum", "I3D's BatchNorm momentum (0.01 as pytorch-i3d; 0.1 for short runs from "
                  "scratch).", type=float, show_default="the model's"),
    config_option("i3d_checkpoint", "Start I3D from a pytorch-i3d file (rgb_imagenet.pt); it trains at "
                  "--pretrained-lr x lr.", type=click.Path(exists=True, dir_okay=False), show_default=False),
    config_option("init_from", "Start a stream from an hcn or i3d ntu-train checkpoint (repeatable: both "
                  "streams of a fused model).", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  show_default=False),
    config_option("pretrained_lr", "Learning-rate factor of the --i3d-checkpoint parameters."),
    config_option("device", "cpu or cuda (under torchrun: cuda:LOCAL_RANK).",
                  show_default="cuda if available", callback=lambda ctx, param, value: _no_meta(value)),
    config_option("workers", "RGB decoding processes per training process.", type=int,
                  show_default="min(8, CPUs)"),
    config_option("bf16", "bf16 autocast (CUDA only)."),
    config_option("compile", "torch.compile the model."),
    config_option("sync_bn", "SyncBatchNorm across DDP processes (CUDA)."),
    config_option("half_skeletons", "Keep the loaded skeletons in float16."),
    config_option("checkpoint_every", "Also write last.pt every N steps (0: after each epoch only)."),
    config_option("test_clips", "Clips per test sample of the final evaluation (see `eval --clips`)."),
    config_option("test_average", "What the final evaluation's clips average: logits, or probabilities "
                  "(PYSKL's models).", type=click.Choice(AVERAGES), show_default="logits; PYSKL's: prob"),
    config_option("flip_test", "Average each test clip's heatmaps with their mirror (PoseC3D's test).",
                  show_default="on for posec3d"),
]


def fit_options(fn):
    for option in reversed(FIT_OPTIONS):
        fn = option(fn)
    return fn


@main.command("fit")
@STORE
@PROTOCOL
@click.option("--model", "model_name", required=True, type=click.Choice(MODEL_NAMES),
              help="hcn, ctrgcn (skeletons), posec3d (joint heatmaps), i3d, slowonly (RGB), or a fused "
              "model or rgbpose (both).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: config, checkpoints, metrics, scores, confusion matrix.")
@fit_options
@click.option("--resume", is_flag=True, help="Continue OUT/last.pt (same options; --epochs may grow past the "
              "epochs done) where it stopped.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def fit_command(store, protocol, model_name, out, resume, quiet, **settings):
    """Train MODEL on the train split, evaluating the test split after every epoch.

    Default recipes (printed first; every option overrides its part): hcn, the HCN paper's (Adam, lr
    0.001 at batch 64, weight decay 1e-4, x0.99 per epoch); i3d and the fused models, the CC-DFARM
    paper's (SGD 0.1 at batch 32, cosine, 50 epochs); ctrgcn, posec3d, slowonly, rgbpose, their released
    configs' (the README's table). The run ends with metrics.json, scores.npz and
    confusion.png of its final weights on the test split.
    """
    config = TrainConfig.from_options(store=str(store), protocol=protocol, model=model_name, out=str(out),
                                      progress=not quiet, **settings)
    from model.training.fit import fit, interrupted_message

    try:
        report = fit(config, resume=resume)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(out)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from the first process
        click.echo(f"{model_name} {protocol}: test top1 {report['top1']:.4f} top5 {report['top5']:.4f} "
                   f"({report['num_samples']} samples, {config.run.test_clips} clip"
                   f"{'s' if config.run.test_clips > 1 else ''}); {out}/metrics.json, {out}/confusion.png")


@main.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A last.pt or best.pt written by `ntu-train fit`.")
@STORE
@PROTOCOL
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write metrics.json, scores.npz and confusion.png here: a new or empty folder, or an "
                   "earlier eval or ensemble result (never a run, a store or a folder with other files).")
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default=None,
              help="Refuse a checkpoint of another model.")
@click.option("--clips", default=1, show_default=True, type=click.IntRange(min=1),
              help="Clips per test sample, their logits averaged: skeletons, N samplings of one frame per "
                   "segment (PYSKL's); RGB, N temporal clips, or N views for a store whose frames the model "
                   "takes whole (see the README).")
@click.option("--average", type=click.Choice(AVERAGES), default=None, show_default="the run's",
              help="What the clips average: logits, or probabilities (PYSKL's, MMAction2's 'prob'); a run "
              "tests as it was told at fit (--test-average), by default logits, prob for PYSKL's models.")
@click.option("--flip-test/--no-flip-test", default=None, show_default="the run's (on for posec3d)",
              help="Average each clip's heatmaps with their mirror (PoseC3D's test).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Clips per batch.")
@click.option("--device", default=default_device, show_default="cuda if available", help="cpu or cuda.",
              callback=lambda ctx, param, value: _no_meta(value))
@click.option("--workers", default=default_workers, type=int, show_default="min(8, CPUs)",
              help="RGB decoding processes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def eval_command(checkpoint, store, protocol, out, model_name, clips, average, flip_test, batch_size, device,
                 workers, quiet):
    """Top-1, top-5 and per-class accuracy of CHECKPOINT on the test split of PROTOCOL.

    A store whose RGB frames were prepared otherwise than the checkpoint's training store (frame count,
    side) is refused; another store, codec or protocol than it trained on is a note on stderr.
    """
    from model.training.evaluate import evaluate_checkpoint
    from ntu_pipeline.store.splits import describe_left_out

    report = evaluate_checkpoint(checkpoint, store, protocol, out, model=model_name, batch_size=batch_size,
                                 device=device, workers=workers, clips=clips, progress=not quiet,
                                 say=lambda note: click.echo(f"note: {note}", err=True), average=average,
                                 flip_test=flip_test)
    click.echo(f"{report['model']} {protocol}: test top1 {report['top1']:.4f} top5 {report['top5']:.4f} "
               f"({report['num_samples']} samples, {clips} clip{'s' if clips > 1 else ''})"
               + (f"; {out}/metrics.json, {out}/scores.npz, {out}/confusion.png" if out else ""))
    if report["left_out"]:
        n = sum(report["left_out"].values())
        click.echo(f"test: {n} sample{'s' if n > 1 else ''} left out, not in these numbers "
                   f"({describe_left_out(report['left_out'])})", err=True)


main.add_command(summary_command)
main.add_command(ensemble_command)
main.add_command(predict_command)


if __name__ == "__main__":
    main()
