"""`ntu-prep`: prepare NTU RGB+D 60/120 for training.

    ntu-prep extract --skeletons nturgb+d_skeletons/ --out ntu60.zarr --jobs 8
    ntu-prep split --protocol xsub ntu60.zarr
    ntu-prep info ntu60.zarr
    ntu-prep verify ntu60.zarr
    ntu-prep protocols
    ntu-prep sheet ntu60.zarr sheet.png
    ntu-prep synth demo_raw/ --samples 240 --classes 6
"""

from __future__ import annotations

from pathlib import Path

import click

from ntu_pipeline import __version__
from ntu_pipeline.errors import NTUPrepError
from ntu_pipeline.manifests import DATASETS, protocol_counts, protocols
from ntu_pipeline.stages.runner import BACKENDS, ExtractConfig, extract
from ntu_pipeline.store import (
    SKELETON_ARRAYS,
    STATUS_CODES,
    open_store,
    read_strings,
    split_indices,
    status_counts,
    store_size_bytes,
    verify_store,
)
from ntu_pipeline.store.splits import make_split

STORE = click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))


def _user_errors(fn):
    """Turn the pipeline's errors about the user's input into one-line messages, not tracebacks."""
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (NTUPrepError, ValueError, OSError) as err:
            raise click.ClickException(str(err)) from err
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@click.group()
@click.version_option(__version__, prog_name="ntu-prep")
def main():
    """Turn the raw NTU RGB+D downloads into an aligned, sharded zarr store."""


@main.command("extract")
@click.option("--skeletons", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder searched recursively for *.skeleton files.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The store to write (a folder).")
@click.option("--dataset", type=click.Choice(DATASETS), default=None,
              help="Default: ntu120 if any file is of setup > 17 or action > 60, else ntu60.")
@click.option("--jobs", default=1, show_default=True, help="Parallel worker processes.")
@click.option("--backend", type=click.Choice(BACKENDS), default="loky", show_default=True)
@click.option("--scheduler", default=None, help="dask.distributed scheduler address (with --backend dask).")
@click.option("--shard-size", default=128, show_default=True, help="Samples per shard (and per task).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store instead of resuming it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def extract_command(skeletons, out, dataset, jobs, backend, scheduler, shard_size, overwrite, quiet):
    """Parse, denoise and store every skeleton; resumes an interrupted run."""
    config = ExtractConfig(skeletons=skeletons, out=out, dataset=dataset, jobs=jobs, backend=backend,
                           scheduler=scheduler, shard_size=shard_size, overwrite=overwrite,
                           progress=not quiet)
    summary = extract(config)
    click.echo(summary.describe())


@main.command("split")
@click.option("--protocol", required=True, type=click.Choice(sorted(protocols())))
@click.option("--keep-missing", is_flag=True, help="Keep samples on the official missing-skeleton list.")
@STORE
@_user_errors
def split_command(protocol, keep_missing, store):
    """Write splits/<protocol>/{train,test} and print the counts."""
    result = make_split(open_store(store, mode="r+"), protocol, keep_missing)
    click.echo(result.describe())


@main.command("protocols")
def protocols_command():
    """Print each protocol's train/test counts over the full dataset, from the manifests alone."""
    for name, protocol in protocols().items():
        train, test = protocol_counts(name, keep_missing=False)
        full_train, full_test = protocol_counts(name, keep_missing=True)
        click.echo(f"{name:8s} {protocol.dataset:6s} by {protocol.field:9s} "
                   f"train {train:6d} test {test:6d} (missing excluded); "
                   f"train {full_train:6d} test {full_test:6d} (full)")


@main.command("info")
@STORE
@_user_errors
def info_command(store):
    """What is in a store."""
    group = open_store(store)
    attrs = dict(group.attrs)
    n = group["samples/name"].shape[0]
    click.echo(f"{store}: {attrs['format']}, {attrs['dataset']}, {n} samples, state {attrs.get('state')}, "
               f"made by ntu-prep {attrs.get('ntu_prep_version')}")
    click.echo("status: " + ", ".join(f"{k} {v}" for k, v in status_counts(group).items()))
    for spec in SKELETON_ARRAYS:
        array = group["skeleton"][spec.name]
        click.echo(f"skeleton/{spec.name}: {array.shape} {array.dtype}, chunk {array.chunks}, "
                   f"shard {array.shards}")
    click.echo(f"options: {attrs.get('options')}")
    click.echo(f"size on disk: {store_size_bytes(store) / 2**20:.1f} MiB")
    for protocol in group["splits"].group_keys():
        train, test = split_indices(group, protocol)
        click.echo(f"split {protocol}: train {len(train)}, test {len(test)}")
    status = group["samples/status"][:]
    failed = [i for i in range(n) if status[i] == STATUS_CODES["failed"]]
    if failed:
        names, errors = read_strings(group["samples/name"]), read_strings(group["samples/error"])
        for i in failed[:20]:
            click.echo(f"failed: {names[i]}: {errors[i]}")
        if len(failed) > 20:
            click.echo(f"... and {len(failed) - 20} more failed samples (samples/error)")
    for item in attrs.get("ignored_files", []):
        click.echo(f"ignored: {item['path']}: {item['reason']}")


@main.command("verify")
@STORE
@_user_errors
def verify_command(store):
    """Check a store's integrity; exit 1 with the list of problems."""
    problems = verify_store(open_store(store))
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}")
        raise SystemExit(1)
    click.echo(f"{store}: ok")


@main.command("sheet")
@STORE
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--samples", default=48, show_default=True, help="Tiles, spread evenly over the store.")
@click.option("--columns", default=8, show_default=True)
@_user_errors
def sheet_command(store, out, samples, columns):
    """Draw a contact sheet (PNG) of the stored actors: one tile per sample."""
    from ntu_pipeline.sheet import write_contact_sheet

    indices = write_contact_sheet(open_store(store), out, samples, columns)
    click.echo(f"wrote {out} ({len(indices)} samples)")


@main.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--samples", default=240, show_default=True, help="Number of samples.")
@click.option("--classes", default=6, show_default=True, help="Number of action classes (A001..).")
@click.option("--seed", default=0, show_default=True)
@_user_errors
def synth_command(out, samples, classes, seed):
    """Write a synthetic corpus of NTU-format .skeleton files whose motion depends on the class."""
    from ntu_pipeline.synth.skeleton import write_corpus

    paths = write_corpus(out, samples, classes, seed)
    click.echo(f"wrote {len(paths)} .skeleton files under {out}")


if __name__ == "__main__":
    main()
