"""Prediction on a user's own recordings (`recordings.py`) and its picture (`picture.py`)."""
