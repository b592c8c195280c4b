"""A tiny captioned image dataset for LoRA training tests: pictures from ``skimage.data`` (no download) with captions,
as ``.txt`` files beside the images or as a ``metadata.jsonl``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# skimage.data name -> caption
PICTURES = {
    "astronaut": "an astronaut in an orange suit, watercolor style",
    "chelsea": "a tabby cat, watercolor style",
    "coffee": "a cup of coffee on a saucer, watercolor style",
    "rocket": "a rocket on a launch pad, watercolor style",
    "hubble_deep_field": "galaxies in deep space, watercolor style",
    "immunohistochemistry": "stained tissue under a microscope, watercolor style",
}


def _picture(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def write_caption_dataset(root: Path, n: int = 4, *, size: int = 96, captions: str = "txt") -> Path:
    """Write ``n`` (<= 6) pictures, each resized to ``size`` on its shorter side (aspect kept, so the loader's centre
    crop is exercised), as PNG files in ``root`` with captions as ``.txt`` files (``captions="txt"``) or in a
    ``metadata.jsonl`` (``captions="jsonl"``). Returns ``root``."""
    from PIL import Image

    if not 1 <= n <= len(PICTURES):
        raise ValueError(f"n={n}: between 1 and {len(PICTURES)}")
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, caption in list(PICTURES.items())[:n]:
        image = Image.fromarray(_picture(name))
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.LANCZOS)
        image.save(root / f"{name}.png")
        if captions == "txt":
            (root / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
        else:
            rows.append(json.dumps({"file_name": f"{name}.png", "text": caption}))
    if captions == "jsonl":
        (root / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
