"""`ntu-prep export`: write a prepared store in the format another toolbox reads.

    ntu-prep export ntu60.zarr --format pyskl -o ntu60_3danno.pkl          # PYSKL PoseDataset pickle
    ntu-prep export ntu60.zarr --format ctrgcn -o data/ntu/                 # NTU60_CS.npz, NTU60_CV.npz
    ntu-prep export ntu60.zarr --format hdf5 -o ntu60.h5 [--no-rgb]        # the whole store, h5py
    ntu-prep export ntu120.zarr --format pyskl -o ntu120.pkl --protocol xsub120

What each file holds: ntu_pipeline/export/{pyskl,ctrgcn,hdf5}.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import CONTEXT, user_errors
from ntu_pipeline.errors import ConfigError
from ntu_pipeline.export.common import EXPORT_FORMATS, ExportConfig
from ntu_pipeline.manifests import protocols
from ntu_pipeline.store.lock import hold_store_for_reading


def writer(fmt: str):
    """The export function of a format, imported when used (h5py alone adds ~0.5 s to every command)."""
    if fmt == "pyskl":
        from ntu_pipeline.export.pyskl import write_pyskl
        return write_pyskl
    if fmt == "ctrgcn":
        from ntu_pipeline.export.ctrgcn import write_ctrgcn
        return write_ctrgcn
    if fmt == "hdf5":
        from ntu_pipeline.export.hdf5 import write_hdf5
        return write_hdf5
    raise ConfigError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")


@click.command("export", context_settings=CONTEXT)
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", required=True, type=click.Choice(EXPORT_FORMATS),
              help="pyskl: one pickle; ctrgcn: one .npz per protocol; hdf5: the whole store.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="The file to write (pyskl, hdf5) or the folder of .npz files (ctrgcn).")
@click.option("--protocol", "protocol_names", multiple=True, type=click.Choice(sorted(protocols())),
              help="Repeatable (pyskl, ctrgcn). Default: every protocol of the store's dataset; a split "
                   "the store lacks is computed, missing_skeleton samples excluded.")
@click.option("--no-rgb", is_flag=True,
              help="hdf5: leave out rgb/frames (the other rgb/* arrays are copied).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def export_command(store, fmt, out, protocol_names, no_rgb, overwrite, quiet):
    """Export a store for PYSKL, CTR-GCN or any HDF5 reader."""
    config = ExportConfig(store=store, out=out, format=fmt, protocols=tuple(protocol_names),
                          rgb=not no_rgb, overwrite=overwrite, progress=not quiet)
    write = writer(fmt)
    with hold_store_for_reading(store):  # no extract or split replaces it while it is read
        summary = write(config)
    click.echo(summary.describe())
