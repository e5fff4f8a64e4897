"""The video wing: PyAV decoding of `_rgb.avi` at sampled frames, true to the frame numbers and with
damage detected (`decode`), which frames are kept (`timeline`), the stored square of a frame
(`pixels`, pure numpy), the person box (`crop`)."""
