"""NTU RGB+D 60/120 preparation: raw downloads -> aligned, sharded zarr stores.

The data flows one way: raw files -> records (`skeleton.parse_skeleton`) -> arrays
(`actors.select_actors`, `actors.motion`) -> store (`store`, written by `extract`) -> loader.
"""

__version__ = "0.1.0"
