"""Style adherence by CLIP score: cosine similarity between a CLIP image embedding and a text prompt's embedding.

Weights come from a hub id (default ``openai/clip-vit-base-patch32``) or a local directory saved with
``save_pretrained`` (model + tokenizer), loaded with transformers ``CLIPModel`` and ``CLIPTokenizer``. The image
preprocessing is done here (PIL bicubic resize of the short side, centre crop, CLIP's mean/std), so no image processor
and no torchvision is involved. Only safetensors weights are loaded.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import ModelNotFound, UsageError

log = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def clip_preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """CLIP's preprocessing of one HxWx3 uint8 RGB image: short side to ``size`` (PIL bicubic), centre crop
    ``size x size``, scale to [0, 1] and normalise with CLIP's mean/std. Returns 3 x size x size float32 (CHW, RGB)."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"clip_preprocess: expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    pil = Image.fromarray(image).resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    arr = np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class ClipScorer:
    """CLIP score of images against one prompt: ``score(rgb) -> float`` in [-1, 1] (cosine similarity of the projected,
    L2-normalised embeddings; higher = closer to the prompt). Holds the model on ``device``; ``close()`` releases it.

    ``spec``: hub id or local directory. ``allow_download``: when False (or ``HF_HUB_OFFLINE`` is set), only files
    already on disk are used. Raises :class:`~realtime.errors.ModelNotFound` when the weights cannot be had.
    """

    def __init__(self, spec: str, prompt: str, *, allow_download: bool = False, device: str = "cpu") -> None:
        import torch
        from transformers import CLIPModel, CLIPTokenizer

        if not prompt.strip():
            raise UsageError("--prompt: empty (the CLIP score needs a text to compare with)")
        self.spec, self.prompt, self.device = spec, prompt, device
        local = Path(spec).expanduser()
        source = str(local) if local.is_dir() else spec
        local_only = local.is_dir() or not allow_download or _offline()
        try:
            self.model = CLIPModel.from_pretrained(source, local_files_only=local_only, use_safetensors=True)
            self.tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError, EnvironmentError) as e:
            where = "this directory holds no CLIP model with safetensors weights and a tokenizer" if local.is_dir() else (
                "not cached and downloads are off" if local_only else "cannot be downloaded"
            )
            raise ModelNotFound(
                f"CLIP model {spec!r}: {where}; download it (hf download {spec}) or pass --clip-model DIR"
            ) from e
        self.model.eval().to(device)
        self.image_size = int(self.model.config.vision_config.image_size)
        max_len = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(prompt, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode():
            text = self.model.text_model(
                input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
            ).pooler_output
            text = self.model.text_projection(text)
        self._text = torch.nn.functional.normalize(text.float(), dim=-1)
        log.info("CLIP score with %s (image %dpx) against %r", spec, self.image_size, prompt)

    def score(self, image: np.ndarray) -> float:
        """Cosine similarity between ``image`` (HxWx3 uint8 RGB) and the prompt, in [-1, 1]."""
        import torch

        pixels = torch.from_numpy(clip_preprocess(image, self.image_size))[None].to(self.device)
        with torch.inference_mode():
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            emb = torch.nn.functional.normalize(self.model.visual_projection(pooled).float(), dim=-1)
        return float((emb * self._text).sum())

    def describe(self) -> dict[str, Any]:
        return {"model": self.spec, "prompt": self.prompt, "image_size": self.image_size, "device": self.device}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._text = None  # type: ignore[assignment]

    def __enter__(self) -> "ClipScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
