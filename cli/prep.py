"""`ntu-prep`: prepare NTU RGB+D 60/120 for training.

    ntu-prep extract --skeletons nturgb+d_skeletons/ --videos nturgb+d_rgb/ --out ntu60.zarr --jobs 8
    ntu-prep split --protocol xsub ntu60.zarr
    ntu-prep info ntu60.zarr
    ntu-prep verify ntu60.zarr
    ntu-prep protocols
    ntu-prep sheet ntu60.zarr sheet.png
    ntu-prep preview ntu60.zarr S001C001P001R001A001 -o preview.png
    ntu-prep synth demo_raw/ --samples 240 --classes 6

Exit codes: 0 done (samples that failed are listed in the summary and the store); 1 an error, a store
that fails `verify`, or an `extract` in which every sample failed; 2 a usage error (an unknown option,
a bad value); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.errors import CONTEXT, Program, user_errors
from cli.export import export_command
from cli.options import config_default
from ntu_pipeline import __version__
from ntu_pipeline.manifests import DATASETS, protocol_counts, protocols
from ntu_pipeline.sheet import MAX_COLUMNS, MAX_TILES
from ntu_pipeline.stages.backends import BACKENDS
from ntu_pipeline.stages.resources import MAX_RGB_SHARD_SIZE, MAX_SHARD_SIZE
from ntu_pipeline.stages.rgb_options import MAX_SIZE, RGB_CODECS
from ntu_pipeline.stages.runner import ExtractConfig, extract
from ntu_pipeline.store import open_store
from ntu_pipeline.store.lock import hold_store_for_reading, store_lock
from ntu_pipeline.store.splits import make_split
from ntu_pipeline.synth.skeleton import MAX_CLASSES

STORE = click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))


def extract_default(name: str):
    return config_default(ExtractConfig, name)


@click.group(cls=Program, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ntu-prep")
def main():
    """Turn the raw NTU RGB+D downloads into an aligned, sharded zarr store.

    Exit codes: 0 done; 1 error (or nothing succeeded, or verify found problems); 2 usage error;
    130 interrupted.
    """


@main.command("extract")
@click.option("--skeletons", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder searched recursively for *.skeleton files.")
@click.option("--videos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder searched recursively for *_rgb.avi files (the RGB stage; with --skeletons, "
                   "or onto an existing store).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The store (a folder): new, empty, or an ntu-prep store to resume or add to.")
@click.option("--dataset", type=click.Choice(DATASETS), default=None,
              help="Default: ntu120 if any file is of setup > 17 or action > 60, else ntu60.")
@click.option("--jobs", default=extract_default("jobs"), show_default=True, type=click.IntRange(min=1),
              help="Parallel worker processes (one per core).")
@click.option("--backend", type=click.Choice(BACKENDS), default=extract_default("backend"),
              show_default=True,
              help="loky: processes on this machine; dask: a dask.distributed cluster (see --scheduler).")
@click.option("--scheduler", default=None,
              help="Address of a running dask scheduler (with --backend dask; default: a local cluster of "
                   "--jobs workers). Its workers must see the input and --out at the same absolute paths.")
@click.option("--shard-size", default=extract_default("shard_size"), show_default=True,
              type=click.IntRange(1, MAX_SHARD_SIZE), help="Skeleton samples per shard (and task).")
@click.option("--frames", default=str(extract_default("rgb_frames")), show_default=True,
              help="RGB frames per sample, spread evenly over the video; 'all': every frame up to 300.")
@click.option("--size", default=extract_default("rgb_size"), show_default=True,
              help=f"Side of the square RGB crop, in pixels: any even number in 16..{MAX_SIZE}.")
@click.option("--rgb-codec", type=click.Choice(RGB_CODECS), default=extract_default("rgb_codec"),
              show_default=True, help="jpeg: quality --quality, ~10x smaller; lz4: lossless (blosc lz4).")
@click.option("--quality", default=extract_default("rgb_quality"), show_default=True,
              help="JPEG quality of the RGB frames, 1..100.")
@click.option("--rgb-shard-size", default=extract_default("rgb_shard_size"), show_default=True,
              type=click.IntRange(1, MAX_RGB_SHARD_SIZE), help="RGB samples per shard (and task).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing ntu-prep store instead of resuming it (other folders are never "
                   "replaced).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def extract_command(skeletons, videos, out, dataset, jobs, backend, scheduler, shard_size, frames, size,
                    rgb_codec, quality, rgb_shard_size, overwrite, quiet):
    """Prepare skeletons and videos into a store (resumable).

    Parses, denoises and stores every skeleton; decodes, crops and stores every video.

    To resume an interrupted run (Ctrl-C, kill -9, a crash), or to repair shards that `verify` reports
    damaged, rerun the same command: finished shards are kept and the rest are prepared again.
    """
    if frames != "all" and not frames.isdigit():
        raise click.BadParameter("a number of frames, or 'all'", param_hint="--frames")
    config = ExtractConfig(
        skeletons=skeletons, videos=videos, out=out, dataset=dataset, jobs=jobs, backend=backend,
        scheduler=scheduler, shard_size=shard_size, rgb_frames=None if frames == "all" else int(frames),
        rgb_size=size, rgb_codec=rgb_codec, rgb_quality=quality, rgb_shard_size=rgb_shard_size,
        overwrite=overwrite, progress=not quiet)
    summary = extract(config, say=lambda line: click.echo(line, err=True))
    click.echo(summary.describe())
    if summary.failed_stages:
        raise click.ClickException(summary.failure_line())


@main.command("split")
@click.option("--protocol", required=True, type=click.Choice(sorted(protocols())),
              help="xsub/xview (NTU60: by performer, by camera), xsub120/xset120 (NTU120: by performer, "
                   "by setup parity).")
@click.option("--keep-missing", is_flag=True, help="Keep samples on the official missing-skeleton list.")
@STORE
@user_errors
def split_command(protocol, keep_missing, store):
    """Write splits/<protocol>/{train,test} and print the counts."""
    with store_lock(store, "split"):
        result = make_split(open_store(store, mode="r+"), protocol, keep_missing)
    click.echo(result.describe())


@main.command("protocols")
@user_errors
def protocols_command():
    """Train/test counts of every protocol, from the official lists."""
    for name, protocol in protocols().items():
        train, test = protocol_counts(name, keep_missing=False)
        full_train, full_test = protocol_counts(name, keep_missing=True)
        click.echo(f"{name:8s} {protocol.dataset:6s} by {protocol.field:9s} "
                   f"train {train:6d} test {test:6d} (missing excluded); "
                   f"train {full_train:6d} test {full_test:6d} (full)")


@main.command("info")
@STORE
@user_errors
def info_command(store):
    """What is in a store: state, stages, failures, splits."""
    from ntu_pipeline.store.describe import describe_store

    for line in describe_store(open_store(store)):
        click.echo(line)


@main.command("verify")
@STORE
@click.option("--deep", is_flag=True, help="Also decode every shard and check the padding (slower).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def verify_command(store, deep, quiet):
    """Check a store's integrity; exit 1 with the list of problems."""
    from ntu_pipeline.progress import ProgressBar
    from ntu_pipeline.store.verify import shards_to_verify, verify_store

    group = open_store(store, check=False)
    with ProgressBar(shards_to_verify(group), "shards", "verify", enabled=not quiet) as bar:
        problems = verify_store(group, deep=deep, advance=bar.advance)
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}")
        sys.exit(1)
    click.echo(f"{store}: ok")


@main.command("sheet")
@STORE
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--samples", default=48, show_default=True, type=click.IntRange(1, MAX_TILES),
              help="Tiles, spread evenly over the store.")
@click.option("--columns", default=8, show_default=True, type=click.IntRange(1, MAX_COLUMNS),
              help="Tiles per row.")
@user_errors
def sheet_command(store, out, samples, columns):
    """Contact sheet (PNG) of the stored actors, a tile per sample."""
    from ntu_pipeline.sheet import write_contact_sheet

    with hold_store_for_reading(store):
        indices = write_contact_sheet(open_store(store), out, samples, columns)
    click.echo(f"wrote {out} ({len(indices)} samples)")


@main.command("preview")
@STORE
@click.argument("sample", required=False)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The PNG to write.")
@click.option("--columns", default=8, show_default=True, type=click.IntRange(1, MAX_COLUMNS),
              help="Frames per row.")
@user_errors
def preview_command(store, sample, out, columns):
    """A sample's stored frames with its skeleton drawn on them (PNG).

    SAMPLE is a sample name; without it, the first sample whose skeleton and RGB are both ok."""
    from ntu_pipeline.preview import first_complete_sample, write_preview

    with hold_store_for_reading(store):
        group = open_store(store)
        sample = sample or first_complete_sample(group)
        write_preview(group, sample, out, columns)
    click.echo(f"wrote {out} ({sample})")


@main.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--samples", default=240, show_default=True, type=click.IntRange(min=1),
              help="Number of samples.")
@click.option("--classes", default=6, show_default=True, type=click.IntRange(1, MAX_CLASSES),
              help="Number of action classes (A001..).")
@click.option("--seed", default=0, show_default=True, help="Seed of the whole corpus: same seed, same files.")
@click.option("--no-videos", is_flag=True, help="Write only the .skeleton files.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Parallel worker processes (the files are the same for any number).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def synth_command(out, samples, classes, seed, no_videos, jobs, quiet):
    """Write a synthetic NTU-format corpus (skeletons, videos)."""
    from ntu_pipeline.synth.corpus import write_synthetic_corpus

    written = write_synthetic_corpus(out, samples, classes, seed, videos=not no_videos, progress=not quiet,
                                     jobs=jobs)
    click.echo(f"wrote {written} samples under {out}")


main.add_command(export_command)


if __name__ == "__main__":
    main()
