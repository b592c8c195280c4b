"""Text to image with a turbo model (``stylecam generate``): 1-4 steps of the model's own scheduler from pure noise.

The conditioning is the frame step's (:func:`realtime.diffusion.family.encode_prompt`, ``time_ids``), the decode is
the frame step's VAE edge (:meth:`realtime.diffusion.stylizer.FrameStep.decode`, :func:`~realtime.diffusion.stylizer.to_uint8`),
and the sampling loop is diffusers' (its scheduler's ``set_timesteps``/``scale_model_input``/``step``), so the result
equals ``StableDiffusionXLPipeline`` on the same modules, noise and seed (tests/test_generate.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realtime.config import check_seed
from realtime.diffusion.family import encode_prompt, time_ids
from realtime.errors import UsageError
from realtime.geometry import Size

if TYPE_CHECKING:
    import numpy as np
    import torch

    from realtime.diffusion.models import Components

log = logging.getLogger(__name__)

MAX_STEPS = 4


@dataclass(frozen=True)
class GenerateConfig:
    """One text-to-image request: ``steps`` in 1..4, ``guidance`` 0..30 (above 1: classifier-free guidance with
    ``negative``; SDXL-Turbo is trained for 0, one UNet pass), ``size`` the image size (multiples of 64)."""

    prompt: str
    negative: str = ""
    steps: int = 1
    guidance: float = 0.0
    size: Size = Size(512, 512)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise UsageError("generate: the prompt is empty (give PROMPT or a --style with a prompt)")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise UsageError(f"--steps {self.steps!r}: must be an integer in 1..{MAX_STEPS} (a turbo model's range)")
        if not 0.0 <= self.guidance <= 30.0:
            raise UsageError(f"--guidance {self.guidance!r}: must be in [0, 30] (0 = SDXL-Turbo's default, no guidance)")

    @property
    def cfg(self) -> bool:
        return self.guidance > 1.0


def make_scheduler(comps: "Components") -> Any:
    """The model's scheduler (its config's ``_class_name``), else its family's (SDXL-Turbo: Euler ancestral)."""
    import diffusers

    name = str(comps.scheduler_config.get("_class_name") or comps.family.scheduler)
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise UsageError(f"scheduler {name!r} of this model is not a diffusers scheduler")
    return cls.from_config(comps.scheduler_config)


def generate(comps: "Components", cfg: GenerateConfig, seed: int, *, device: "torch.device", dtype: "torch.dtype",
             ) -> "np.ndarray":
    """One image, (H, W, 3) uint8 RGB, from ``seed`` (the same seed gives the same bytes)."""
    import torch

    from realtime.diffusion.stylizer import FrameStep, to_uint8

    latents = sample_latents(comps, cfg, seed, device=device, dtype=dtype)
    with torch.inference_mode():
        image = _decode(FrameStep(comps.unet, None, comps.vae, comps.prediction_type, family=comps.family), latents)
    return to_uint8(image)[0].cpu().numpy()


def sample_latents(comps: "Components", cfg: GenerateConfig, seed: int, *, device: "torch.device",
                   dtype: "torch.dtype") -> "torch.Tensor":
    """The final latents (1, 4, H/8, W/8) (scaled, as the VAE's decode takes them divided by its scaling factor)."""
    import torch

    check_seed(seed, "--seed")
    emb, pooled = encode_prompt(comps, cfg.prompt, cfg.negative, cfg.cfg, device, dtype)
    batch = 2 if cfg.cfg else 1
    added = {} if pooled is None else {"added_cond_kwargs": {"text_embeds": pooled,
                                                             "time_ids": time_ids(cfg.size, batch, device, dtype)}}
    sched = make_scheduler(comps)
    sched.set_timesteps(cfg.steps, device=device)
    gen = torch.Generator("cpu").manual_seed(seed)  # the initial noise and the ancestral steps' noise, in that order
    shape = (1, comps.unet.config.in_channels, cfg.size.height // 8, cfg.size.width // 8)
    latents = torch.randn(shape, generator=gen, dtype=dtype).to(device) * sched.init_noise_sigma
    with torch.inference_mode():
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * batch) if cfg.cfg else latents, t)
            pred = comps.unet(x, t, encoder_hidden_states=emb, return_dict=False, **added)[0]
            if cfg.cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + cfg.guidance * (cond - uncond)
            latents = sched.step(pred, t, latents, generator=gen, return_dict=False)[0]
    return latents


def _decode(step: Any, latents: "torch.Tensor") -> "torch.Tensor":
    """The frame step's decode; a full SDXL VAE in fp16 decodes in fp32 (``force_upcast``: it overflows in fp16)."""
    import torch

    vae = step.vae
    if latents.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae.to(torch.float32)
        try:
            return step.decode(latents.float())
        finally:
            vae.to(torch.float16)
    return step.decode(latents)
