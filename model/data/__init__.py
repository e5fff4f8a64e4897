"""The data path: a split of a prepared store -> model-ready batches (`split.py`, ntu-train's) or items
(`dataset.py`, `NTUDataset`, the public dataset), both cutting clips by the same rules (`sampling.py`)
for what a model is fed (`clip_spec.py`, `ClipSpec`; the reference models' settings in
`clip_recipes.py`); the resident packed skeletons and 2D joints (`skeletons.py`), RGB clips read in
DataLoader workers (`rgb_clips.py`), and pure tensor transforms (`transforms.py`, `motion.py`,
`heatmaps.py`, `clip_heatmaps.py`; the references' own steps in `pyskl_sampling.py` and
`ctrgcn_sampling.py`). Nothing here imports `model.networks`."""
