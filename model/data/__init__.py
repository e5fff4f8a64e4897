"""The data path: a split of a prepared store -> model-ready batches (`split.py`), the resident packed
skeletons (`skeletons.py`), RGB clips read in DataLoader workers (`rgb_clips.py`), and pure tensor
transforms (`transforms.py`, `motion.py`). Nothing here imports `model.networks`."""
