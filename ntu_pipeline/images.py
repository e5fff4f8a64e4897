"""Pictures written whole: the one writer of every PNG or JPEG the project makes (contact sheets, previews,
confusion matrices, training curves, prediction pictures).

    write_image(Path("sheet.png"), image)    # image (H, W, 3) uint8 BGR, as OpenCV draws it

The format is the file's suffix (`.png`, `.jpg`, anything OpenCV encodes; no suffix: PNG). An unknown
suffix is a ConfigError naming the file, raised before anything is written. The encoded bytes go through
`atomic_write_bytes`: a kill leaves the old file or none, never half a picture.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_write_bytes
from .errors import ConfigError


def write_image(path: Path, image: np.ndarray) -> None:
    """Write `image` (H, W, 3) uint8 BGR (or (H, W) grey) whole, in the format of path's suffix.

    ConfigError for a suffix OpenCV cannot encode; OSError (naming `path`) where the system refuses the
    file (a missing folder, no permission)."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
    except cv2.error:
        ok = False
    if not ok:
        raise ConfigError(f"{path}: OpenCV cannot write images of type {path.suffix or '(none)'!r}; "
                          "name it .png or .jpg")
    try:
        atomic_write_bytes(path, encoded.tobytes())
    except OSError as e:  # named after the temporary file beside it: name the file asked for
        raise OSError(e.errno, e.strerror, str(path)) from e
