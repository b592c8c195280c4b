"""``stylecam image``: one picture in, its stylized version out (the seed's single-image stylization)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .errors import BadInputFile, OutputError, UsageError
from .files import atomic_output  # noqa: F401  (re-exported: commands write through it)
from .geometry import Size

log = logging.getLogger(__name__)

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


def stylize_image(args) -> int:  # noqa: ANN001 - argparse namespace from realtime.cli
    """Run ``stylecam image`` from parsed arguments; returns the exit code."""
    from .options import output_size_arg, run_from_args
    from .preflight import image_inputs

    _, dst, frame, style, model = image_inputs(args)  # every input checked before any model loads
    out_size = output_size_arg(args.output_size) or Size(frame.shape[1], frame.shape[0])
    run = run_from_args(args, out_size)
    from .edges import EdgeDetector
    from .pipeline import FrameProcessor, build_stylizer, canny_config

    t0 = time.perf_counter()
    stylizer = build_stylizer(model, style, run)
    t1 = time.perf_counter()
    with FrameProcessor(run.size, out_size, stylizer=stylizer, edges=EdgeDetector(canny_config(style))) as proc:
        result = proc.process(frame)
    t2 = time.perf_counter()
    write_image(dst, result)
    log.info("wrote %s (%s, model %s, style %s): load %.1f s, frame %.2f s", dst, out_size, run.size, style.name, t1 - t0, t2 - t1)
    return 0
