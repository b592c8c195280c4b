"""Images in and out: any picture Pillow reads -> uint8 RGB, and atomic writes by the output's extension."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.errors import BadInputFile, OutputError, UsageError
from realtime.files import atomic_output

IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def read_image(path: Path) -> np.ndarray:
    """Any image Pillow reads -> (H, W, 3) uint8 RGB, EXIF orientation applied, the picture kept: 16-bit and 32-bit
    integer pixels scaled to 8 bits (not clipped), float pixels in [0, 1] (or [0, 255]) scaled, transparency
    composited over white, palette/grey/CMYK/LAB converted, an embedded ICC profile converted to sRGB. Not an image, or
    pixels that cannot be read as a picture (floats out of range, NaN) -> :class:`BadInputFile` (one line)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = to_rgb8(im, str(path))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadInputFile(f"{path} is not a readable image ({type(e).__name__})") from e
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise BadInputFile(f"{path}: image too small ({arr.shape[1]}x{arr.shape[0]})")
    return arr


def _scale_high_depth(im: object, name: str) -> np.ndarray:
    """A one-channel image of 16/32-bit integers or floats -> (H, W) uint8, scaled from its bit depth (never clipped)."""
    mode = im.mode  # type: ignore[attr-defined]
    a = np.asarray(im)
    if mode.startswith("I;16") or a.dtype.kind in "ui" and a.dtype.itemsize == 2:
        a = a.astype(np.float64) / 65535.0
    elif mode == "F" or a.dtype.kind == "f":
        a = a.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
            raise BadInputFile(f"{name}: float pixels from {lo:g} to {hi:g}, expected 0..1: not a picture stylecam "
                               "can read (save it as 8- or 16-bit)")
        if hi > 255:
            raise BadInputFile(f"{name}: float pixels up to {hi:g} (HDR?), expected 0..1: save it as 8- or 16-bit")
        a = a if hi <= 1.0 else a / 255.0
    else:  # "I": 32-bit signed; Pillow reads 16-bit greyscale (PNG, TIFF, PGM) as this too
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise BadInputFile(f"{name}: 32-bit pixels from {lo} to {hi}: not a picture stylecam can read (save it as "
                               "8- or 16-bit)")
        a = a.astype(np.float64) / 65535.0
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def _to_srgb(im: object) -> object:
    """``im`` converted from its embedded ICC profile to sRGB (RGB or RGBA); unchanged without one or on any error."""
    icc = getattr(im, "info", {}).get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):  # type: ignore[attr-defined]
        return im
    try:
        import io

        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if "A" in im.mode else "RGB"  # type: ignore[attr-defined]
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode=out_mode) or im
    except Exception:  # noqa: BLE001 - a broken profile: the pixels as they are
        return im


def to_rgb8(im: object, name: str = "image") -> np.ndarray:
    """A Pillow image of any mode -> (H, W, 3) uint8 RGB that shows the same picture (see :func:`read_image`)."""
    from PIL import Image

    mode = im.mode  # type: ignore[attr-defined]
    if mode.startswith("I") or mode == "F":
        grey = _scale_high_depth(im, name)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "La":  # premultiplied grey + alpha: Pillow converts it only to LA
        im = im.convert("LA")  # type: ignore[attr-defined]
    im = _to_srgb(im)
    mode = im.mode  # type: ignore[attr-defined]
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("P", "L", "RGB") and "transparency" in
                                                                 im.info)  # type: ignore[attr-defined]
    if not has_alpha:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)  # type: ignore[attr-defined]
    rgba = im.convert("RGBA")  # type: ignore[attr-defined]
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)


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
