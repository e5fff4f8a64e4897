"""`ntu-train`: training and evaluation of CC-DFARM on a prepared store (arrives with its own issue).

Until that issue lands, the command says so and exits with status 2; the model package itself
(`model.build`) is ready to use.
"""

from __future__ import annotations

import click


@click.group(invoke_without_command=True)
@click.pass_context
def main(ctx):
    """Train and evaluate CC-DFARM on a prepared store (not built yet)."""
    if ctx.invoked_subcommand is None:
        click.echo("ntu-train is not built yet: training arrives with its own issue. "
                   "Prepare data with `ntu-prep extract` meanwhile.", err=True)
        ctx.exit(2)
