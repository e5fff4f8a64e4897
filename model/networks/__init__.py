"""The networks: I3D and HCN streams, MMTM/DSFM/MFFM/TIAM fusion, CC-DFARM and its ablations, and the
table of what each takes (`build.py`). Nothing here imports the data path, training or results, but the
shared motion rule (`model.data.motion`)."""
