"""`ntu-train summary` and `ntu-train ensemble`: what is done with finished runs.

    ntu-train summary runs/hcn runs/i3d runs/ccdfarm --plot curves.png
    ntu-train ensemble runs/hcn runs/i3d [--weights 1 1] --out runs/late   # late fusion of scores.npz
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from cli.errors import CONTEXT, user_errors

RUNS = click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))


@click.command("summary", context_settings=CONTEXT)
@RUNS
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw every run's train and test loss and top-1 per epoch into this PNG.")
@user_errors
def summary_command(runs, plot):
    """A table of finished runs (model, protocol, epochs, clips, test top-1 and top-5), and curves."""
    from model.runs import format_table, plot_curves, read_run

    summaries = [read_run(run) for run in runs]
    for line in format_table(summaries):
        click.echo(line)
    if plot is not None:
        plot_curves(summaries, plot)
        click.echo(f"wrote {plot}")


@click.command("ensemble", context_settings=CONTEXT)
@RUNS
@click.option("--weights", type=str, default=None,
              help="One weight per source, comma- or space-separated (default: 1 each).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write metrics.json, confusion.png and scores.npz of the fused scores here.")
@user_errors
def ensemble_command(runs, weights, out):
    """Late fusion: the weighted sum of saved logits (a run or eval directory, or its scores.npz)."""
    from model.ensemble import ensemble
    from model.reports import classification_report, write_evaluation
    from model.scores import ScoresError, read_scores

    try:
        parsed = None if weights is None else [float(w) for w in weights.replace(",", " ").split()]
    except ValueError:
        raise ScoresError(f"--weights {weights!r}: give numbers, e.g. --weights '1 0.5'") from None
    fused = ensemble([read_scores(run) for run in runs], parsed)
    report = classification_report(torch.from_numpy(fused.logits), torch.from_numpy(fused.labels),
                                   fused.class_names)
    report.update({"model": "ensemble", "sources": [str(r) for r in runs],
                   "weights": parsed or [1.0] * len(runs)})
    click.echo(f"ensemble of {len(runs)}: top1 {report['top1']:.4f} top5 {report['top5']:.4f} "
               f"({report['num_samples']} samples)" + (f"; {out}/metrics.json" if out else ""))
    if out is not None:
        write_evaluation(out, report, fused, f"ensemble top1 {report['top1']:.4f}")
