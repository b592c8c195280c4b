"""Images in and out: any picture Pillow reads -> uint8 RGB, and atomic writes by the output's extension."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.errors import BadInputFile, OutputError, UsageError
from realtime.files import atomic_output

IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def read_image(path: Path) -> np.ndarray:
    """Any image Pillow reads -> (H, W, 3) uint8 RGB, EXIF orientation applied. Not an image -> :class:`BadInputFile`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadInputFile(f"{path} is not a readable image ({type(e).__name__})") from e
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise BadInputFile(f"{path}: image too small ({arr.shape[1]}x{arr.shape[0]})")
    return arr


def image_format(path: Path) -> str:
    fmt = IMAGE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"output {path}: unknown image type {path.suffix!r}; use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    return fmt


def write_image(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    fmt = image_format(path)
    try:
        with atomic_output(path) as tmp:
            Image.fromarray(rgb).save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    except PermissionError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
