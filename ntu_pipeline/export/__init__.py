"""Exports of a prepared store to the formats other toolboxes read: `pyskl`, `ctrgcn`, `hdf5`."""
