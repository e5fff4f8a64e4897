"""NTU RGB+D 60/120 preparation: raw downloads -> aligned, sharded zarr stores.

The data flows one way: raw files -> records (`skeleton.parse.parse_skeleton`; `video.decode.decode_clip`)
-> arrays (`skeleton.actors.select_actors`, `skeleton.actors.motion`; `video.crop.person_crop_box`) ->
store (`store`, written by `stages.runner.extract`, one stage at a time) -> loaders and exports
(`model.data`, `export`). Nothing in `skeleton/`, `video/` or `store/` imports `stages/`, `export/`,
`model/` or `cli/`.
"""

__version__ = "0.1.0"
