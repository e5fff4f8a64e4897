"""`ntu-train summary` and `ntu-train ensemble`: what is done with finished runs.

    ntu-train summary runs/hcn runs/i3d runs/ccdfarm --plot curves.png
    ntu-train ensemble runs/hcn runs/i3d [--weights 1 0.5] --out runs/late   # late fusion of scores.npz
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import CONTEXT, user_errors
from ntu_pipeline.errors import ConfigError

RUNS = click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))


@click.command("summary", context_settings=CONTEXT)
@RUNS
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw every run's train and test loss and top-1 per epoch into this PNG.")
@user_errors
def summary_command(runs, plot):
    """A table of runs (model, protocol, epochs, clips, test top-1 and top-5), and curves.

    A run that has not finished is listed with its state (running, or stopped after epoch E/T) and
    no numbers; its curves so far are drawn.
    """
    from model.results.runs import format_table, plot_curves, read_run
    from model.training.fit import RUN_LOCK

    summaries = [read_run(run, lock=RUN_LOCK) for run in runs]
    if plot is not None:  # first: a figure that cannot be drawn is the one line of output
        plot_curves(summaries, plot)
    for line in format_table(summaries):
        click.echo(line)
    if plot is not None:
        click.echo(f"wrote {plot}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class WeightsCommand(click.Command):
    """A command whose `--weights` takes the numbers that follow it (`--weights 1 0.5`), as well as one
    argument (`--weights '1 0.5'`, `--weights 1,0.5`): click gives an option one token, and the rest
    would be taken for runs ("Path '0.5' does not exist")."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        if "--weights" in args:
            at = args.index("--weights")
            end = at + 1
            while end < len(args) and _is_number(args[end]):
                end += 1
            if end > at + 2:
                args[at + 1:end] = [" ".join(args[at + 1:end])]
        return super().parse_args(ctx, args)


@click.command("ensemble", cls=WeightsCommand, context_settings=CONTEXT)
@RUNS
@click.option("--weights", type=str, default=None,
              help="One weight >= 0 per source, one at least > 0: --weights 1 0.5 (or '1 0.5', or 1,0.5; "
                   "default: 1 each).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write metrics.json, confusion.png and scores.npz of the fused scores here: a new or "
                   "empty folder, or an earlier eval or ensemble result (never a run, a store, a source or "
                   "a folder with other files).")
@user_errors
def ensemble_command(runs, weights, out):
    """Late fusion: the weighted sum of saved logits (a run or eval directory, or its scores.npz)."""
    from model.results.ensemble import ensemble_report

    given = None if weights is None else weights.replace(",", " ").split()
    if given is not None and not (given and all(_is_number(w) for w in given)):
        raise ConfigError(f"--weights {weights!r}: give numbers, e.g. --weights 1 0.5")
    report = ensemble_report(runs, None if given is None else [float(w) for w in given], out)
    click.echo(f"ensemble of {len(runs)}: top1 {report['top1']:.4f} top5 {report['top5']:.4f} "
               f"({report['num_samples']} samples)" + (f"; {out}/metrics.json" if out else ""))
