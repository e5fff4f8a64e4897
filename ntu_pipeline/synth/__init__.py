"""A synthetic NTU corpus in the exact download formats (`ntu-prep synth`; corpus.py's docstring).

Imports run one way: scene.py (the types) <- skeleton.py (the scenes, by class), skeleton_text.py
(`.skeleton` text) and video.py (`_rgb.avi`) <- corpus.py (the files on disk)."""
