"""`ntu-train predict`: a trained model on recordings of one's own, no store to make.

    ntu-train predict --checkpoint runs/ccdfarm/best.pt --skeleton my.skeleton --video my_rgb.avi
    ntu-train predict --checkpoint runs/hcn/best.pt --skeleton recordings/ --clips 10 --json
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.errors import CONTEXT, user_errors
from model.training.config import default_device

FILE_OR_FOLDER = click.Path(exists=True, path_type=Path)


@click.command("predict", context_settings=CONTEXT)
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A best.pt or last.pt written by `ntu-train fit`.")
@click.option("--skeleton", type=FILE_OR_FOLDER, default=None,
              help="A .skeleton file, or a folder of them.")
@click.option("--video", type=FILE_OR_FOLDER, default=None,
              help="A video (.avi, .mp4, ...), or a folder of them (paired with the skeletons by name).")
@click.option("--clips", default=1, show_default=True, type=click.IntRange(min=1),
              help="Clips per recording, their logits averaged (as `eval --clips`).")
@click.option("--picture", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Draw what the model saw and its top 5 here (several recordings: one file each, "
                   "named STEM_RECORDING.png).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per recording: name, top5 [[class, probability]...], logits, true_class, "
                   "notes.")
@click.option("--device", default=default_device, show_default="cuda if available", help="cpu or cuda.")
@user_errors
def predict_command(checkpoint, skeleton, video, clips, picture, as_json, device):
    """The five likeliest classes of each recording, prepared as `ntu-prep extract` prepares a dataset.

    The model decides which files a recording needs: hcn the skeleton, i3d the video, the fused models
    both. A recording that cannot be used is one line on stderr saying why; the exit code is 1 when
    none could be predicted. A file named like an NTU sample shows its true class too. What differs from
    a store's sample is a note on stderr (in --json, the object's `notes`): a skeleton longer than 300
    frames sampled down to them, a video cropped without its person box.
    """
    from model.predict.recordings import Failure, find_recordings, predict_recordings

    recordings = find_recordings(skeleton, video)
    results = predict_recordings(checkpoint, recordings, clips=clips, device=device,
                                 progress=len(recordings) > 1 and not as_json, picture=picture)
    for result in results:
        if isinstance(result, Failure):
            click.echo(f"not predicted: {result.describe()}", err=True)
        elif as_json:
            click.echo(json.dumps(result.to_json()))
        else:
            click.echo(result.describe() + (f"; {result.picture}" if result.picture else ""))
            for note in result.notes:
                click.echo(f"note: {result.name}: {note}", err=True)
    if all(isinstance(result, Failure) for result in results):
        raise click.ClickException(f"no recording could be predicted ({len(results)} given)")
