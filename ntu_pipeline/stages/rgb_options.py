"""What shapes the RGB stage's output: frames per sample, crop side, codec. One place for their defaults
and their checks (the `extract` options, the stage, and `predict` preparing a recording as a store did).

    options = RgbOptions(frames=16, size=64)          # ConfigError for options the stage cannot honour
    options.record()                                  # what a store's attrs["stages"]["rgb"]["options"] hold
    RgbOptions.from_record(group.attrs["stages"]["rgb"]["options"])   # and back

Light on purpose (no PyAV, no OpenCV): the command line imports it to read the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..errors import ConfigError
from ..video.timeline import DEFAULT_FRAMES, DEFAULT_SIZE, MAX_FRAMES

# The crop is cut from frames at most 1080 pixels high (NTU's 1920x1080): a larger side only upsamples,
# and the bound keeps one clip's pixels (T x S x S x 3) within what a worker can hold (stages/resources.py).
MAX_SIZE = 1080

RgbCodec = Literal["jpeg", "lz4"]
RGB_CODECS: tuple[str, ...] = get_args(RgbCodec)
CROP_RULE = "person box over the clip, 25% margin, square (video.crop)"


@dataclass(frozen=True)
class RgbOptions:
    """frames: T per sample, evenly spread (None: every frame up to 300); size: the square's side, any even
    number in 16..MAX_SIZE; quality: JPEG quality 1..100; codec: jpeg (lossy, ~10x smaller) or lz4
    (lossless)."""

    frames: int | None = DEFAULT_FRAMES
    size: int = DEFAULT_SIZE
    quality: int = 90
    codec: RgbCodec = "jpeg"

    def __post_init__(self):
        if self.frames is not None and not 1 <= self.frames <= MAX_FRAMES:
            raise ConfigError(f"--frames must be 1..{MAX_FRAMES} or 'all', got {self.frames}")
        if not 16 <= self.size <= MAX_SIZE or self.size % 2:
            raise ConfigError(f"--size must be an even number in 16..{MAX_SIZE} (the videos' height: a "
                              f"larger crop only upsamples), got {self.size}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1..100, got {self.quality}")
        if self.codec not in RGB_CODECS:
            raise ConfigError(f"--rgb-codec must be one of {RGB_CODECS}, got {self.codec!r}")

    def record(self) -> dict:
        """The stage's options as the store records them (what a resumed run must match)."""
        codec = ({"name": "jpeg", "quality": self.quality, "subsampling": "420"} if self.codec == "jpeg"
                 else {"name": "blosc", "cname": "lz4", "shuffle": "shuffle"})
        return {"frames": "all" if self.frames is None else self.frames, "size": self.size, "codec": codec,
                "crop": CROP_RULE}

    @classmethod
    def from_record(cls, options: dict) -> RgbOptions:
        """The options a store recorded (`record()`'s output), as RgbOptions."""
        codec = dict(options.get("codec", {}))
        frames = options.get("frames", DEFAULT_FRAMES)
        return cls(frames=None if frames == "all" else int(frames),
                   size=int(options.get("size", DEFAULT_SIZE)),
                   quality=int(codec.get("quality", cls.quality)),
                   codec="jpeg" if codec.get("name", "jpeg") == "jpeg" else "lz4")
