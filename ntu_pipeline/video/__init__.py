"""The video wing: PyAV decoding of `_rgb.avi` at sampled frames (`decode`), the person box (`crop`)."""
