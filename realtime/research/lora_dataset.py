"""Training data for LoRA fine-tuning: a folder of images with captions.

Captions come from a ``metadata.jsonl`` in the folder (one JSON object per line with ``file_name``, relative to the
folder, and ``text``; the Hugging Face ``imagefolder`` convention), or else from a ``.txt`` file beside each image with the
same stem (``cat.png`` + ``cat.txt``). With a ``metadata.jsonl`` only the images it lists are used. An image without a
caption is an error unless a default caption is given. Images are found recursively (hidden files skipped).

Images are read as RGB uint8 (EXIF orientation applied), resized so the shorter side is the training resolution and
centre-cropped to a square: (resolution, resolution, 3) uint8 RGB.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.errors import BadInputFile, InputNotFound, UsageError

log = logging.getLogger(__name__)

METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class CaptionedImage:
    """One training example: an image file and its caption."""

    path: Path
    caption: str


def _image_files(root: Path) -> list[Path]:
    from realtime.io.images import IMAGE_SUFFIXES

    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _from_metadata(root: Path, meta: Path) -> list[CaptionedImage]:
    items = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInputFile(f"{meta} line {n}: expected a JSON object with file_name and text ({type(e).__name__})") from e
        if not isinstance(name, str) or not isinstance(text, str):
            raise BadInputFile(f"{meta} line {n}: file_name and text must be strings")
        path = root / name
        if not path.is_file():
            raise InputNotFound(f"{meta} line {n}: image {path} not found")
        items.append(CaptionedImage(path, text.strip()))
    return items


def scan_dataset(root: Path, default_caption: str | None = None) -> list[CaptionedImage]:
    """The examples in ``root`` (see the module docstring), sorted by path. No images -> :class:`BadInputFile`."""
    root = Path(root)
    if not root.is_dir():
        raise InputNotFound(f"--data {root}: not a directory")
    meta = root / METADATA
    if meta.is_file():
        items = _from_metadata(root, meta)
        unlisted = len(_image_files(root)) - len({i.path.resolve() for i in items})
        if unlisted > 0:
            log.info("%s lists %d image(s); %d other image(s) in %s are not used", METADATA, len(items), unlisted, root)
    else:
        items = []
        for path in _image_files(root):
            txt = path.with_suffix(".txt")
            if txt.is_file():
                items.append(CaptionedImage(path, txt.read_text(encoding="utf-8").strip()))
            elif default_caption is not None:
                items.append(CaptionedImage(path, default_caption))
            else:
                raise UsageError(
                    f"{path} has no caption: add {txt.name}, a {METADATA} in {root}, or pass --default-caption TEXT"
                )
    if not items:
        raise BadInputFile(f"--data {root}: no images found (png, jpg, webp, bmp, tif)")
    return sorted(items, key=lambda i: str(i.path))


def load_square(path: Path, resolution: int) -> np.ndarray:
    """Read ``path`` and return its centred square, resized to (resolution, resolution, 3) uint8 RGB."""
    from realtime.geometry import Size, centre_window, crop_resize
    from realtime.io.images import read_image

    frame = read_image(path)
    win = centre_window(Size(frame.shape[1], frame.shape[0]), 1.0)
    return crop_resize(frame, win, Size(resolution, resolution))
