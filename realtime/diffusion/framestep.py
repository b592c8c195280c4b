"""FrameStep: the math of one frame as one fixed-shape module (docs/design.md §4), and the names of its inputs.

RGB uint8 image + control map(s) + previous latents + prompt embeddings + fixed noise + every per-frame number as a
tensor in; RGB uint8 image + this frame's input and output latents out. Engines compile this module;
:class:`~realtime.diffusion.stylizer.Stylizer` owns the state around it (``realtime.diffusion.stylizer`` re-exports
these names).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from realtime.diffusion.family import SD, Family
from realtime.errors import UsageError


#: FrameStep's inputs, in order (names are the ONNX graph's input names), for a step with at most one control.
#: ``control`` and ``control_scale`` belong to the step's first control (Canny when it is enabled); each further
#: control appends ``control_<name>`` and ``control_scale_<name>`` (:func:`input_names`, :attr:`FrameStep.input_names`).
INPUT_NAMES = (
    "image",            # (1, H, W, 3) uint8 RGB
    "control",          # (1, H, W) uint8 map (Canny 0/255, depth 0..255) or (1, H, W, 3) uint8 RGB (pose skeleton)
    "prev_in_latent",   # (1, 4, H/8, W/8) previous frame's input latent z (motion estimate)
    "prev_out_latent",  # (1, 4, H/8, W/8) previous frame's output latent z0 (blending)
    "noise",            # (1, 4, H/8, W/8) fixed noise n
    "prompt_embeds",    # (1, 77, D), or (2, 77, D) [negative, positive] with CFG
    "timestep",         # (1,) t
    "sqrt_alpha_bar",   # (1,) sqrt(abar_t)
    "sqrt_one_minus_alpha_bar",  # (1,) sqrt(1 - abar_t)
    "blend",            # (1,) weight a of the current frame; 1 = no blending
    "motion_gain",      # (1,) a rises to 1 where |z - z_prev_in| * gain >= 1; 0 = not motion-adaptive
    "control_scale",    # (1,) ControlNet residual scale; 0 = no ControlNet effect
    "guidance_scale",   # (1,) CFG scale (used only when built with CFG)
)
OUTPUT_NAMES = ("image_out", "in_latent", "out_latent")
#: The per-frame numbers among :data:`INPUT_NAMES` (each a (1,) tensor; a device frame path sends them as one tensor).
NUMBER_NAMES = ("timestep", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "blend", "motion_gain", "control_scale",
                "guidance_scale")
#: Channels of each control's map: Canny and depth are one grey channel, the OpenPose skeleton is RGB.
CONTROL_CHANNELS = {"canny": 1, "pose": 3, "depth": 1}


def input_names(controls: tuple[str, ...] = (), family: Family = SD) -> tuple[str, ...]:
    """FrameStep's input names for ``controls`` (its ControlNets' control types, in order): :data:`INPUT_NAMES`, then
    ``control_<name>``, ``control_scale_<name>`` for every control after the first, then ``family``'s inputs."""
    more = tuple(n for c in controls[1:] for n in (f"control_{c}", f"control_scale_{c}"))
    return INPUT_NAMES + more + family.extra_inputs


def _as_condition(control: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1, H, W) or (1, H, W, 3) uint8 -> (1, 3, H, W) in [0, 1], the ControlNet's conditioning image."""
    cond = control.to(dtype) / 255.0
    return cond.unsqueeze(1).expand(-1, 3, -1, -1) if cond.dim() == 3 else cond.permute(0, 3, 1, 2)


class FrameStep(nn.Module):
    """One SD-Turbo (or SDXL-Turbo) step with ControlNets and TAESD, uint8 image in, uint8 image out.

    Args: ``unet``; ``controlnets``: an ordered mapping {control type: ControlNet} (a single ControlNet is Canny's;
    None or empty: no ControlNet); ``vae`` (AutoencoderTiny or AutoencoderKL); ``prediction_type`` (``epsilon``,
    ``v_prediction`` or ``sample``); ``cfg`` (classifier-free guidance: doubles the UNet batch); ``family`` (SD, or
    SDXL: two more inputs). ``forward`` takes :attr:`input_names` (:data:`INPUT_NAMES`, one control image and one scale
    per further control, the family's inputs) and returns :data:`OUTPUT_NAMES`. The ControlNets' residuals, each
    times its scale input, are summed (diffusers' MultiControlNetModel does the same): 0 is that control left out.
    """

    def __init__(self, unet: Any, controlnets: Any, vae: Any, prediction_type: str, cfg: bool = False,
                 family: Family = SD):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise UsageError(f"prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample")
        if controlnets is not None and not isinstance(controlnets, dict):
            controlnets = {"canny": controlnets}
        self.controlnets = nn.ModuleDict(dict(controlnets or {}))
        self.controls: tuple[str, ...] = tuple(self.controlnets.keys())
        self.input_names = input_names(self.controls, family)
        self.unet, self.vae = unet, vae
        self.prediction_type, self.cfg, self.family = prediction_type, cfg, family
        self.tiny_vae = type(vae).__name__ == "AutoencoderTiny"
        self.vae_scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1, 1] -> scaled latent (B,4,H/8,W/8)."""
        if self.tiny_vae:
            return self.vae.encode(x).latents * self.vae_scale
        return self.vae.encode(x).latent_dist.mode() * self.vae_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> (B,3,H,W) in [-1, 1]."""
        return self.vae.decode(z / self.vae_scale).sample

    def forward(
        self, image: torch.Tensor, control: torch.Tensor, prev_in_latent: torch.Tensor,
        prev_out_latent: torch.Tensor, noise: torch.Tensor, prompt_embeds: torch.Tensor, timestep: torch.Tensor,
        sqrt_alpha_bar: torch.Tensor, sqrt_one_minus_alpha_bar: torch.Tensor, blend: torch.Tensor,
        motion_gain: torch.Tensor, control_scale: torch.Tensor, guidance_scale: torch.Tensor, *more_controls: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = noise.dtype
        x = image.to(dtype).permute(0, 3, 1, 2) / 127.5 - 1.0  # uint8 cast first: TensorRT wants it at the I/O edge
        z = self.encode(x)
        # Motion-adaptive latent blending: a -> 1 where the input latent moved.
        moved = (z - prev_in_latent).abs().mean(dim=1, keepdim=True)
        a = blend + (1.0 - blend) * (moved * motion_gain).clamp(0.0, 1.0)
        z_in = a * z + (1.0 - a) * prev_out_latent
        x_t = sqrt_alpha_bar * z_in + sqrt_one_minus_alpha_bar * noise

        batch = 2 if self.cfg else 1
        sample = x_t.expand(batch, -1, -1, -1) if self.cfg else x_t
        t = timestep.expand(batch)
        k = len(self.family.extra_inputs)  # SDXL: pooled text embeddings and time ids, as added_cond_kwargs
        extra, more_controls = (more_controls[-k:], more_controls[:-k]) if k else ((), more_controls)
        added = {"added_cond_kwargs": dict(zip(self.family.extra_inputs, extra, strict=True))} if k else {}
        down, mid = self._control_residuals(sample, t, prompt_embeds, (control, control_scale, *more_controls), added)
        pred = self.unet(
            sample, t, encoder_hidden_states=prompt_embeds, down_block_additional_residuals=down,
            mid_block_additional_residual=mid, return_dict=False, **added,
        )[0]
        if self.cfg:
            uncond, cond_pred = pred.chunk(2)
            pred = uncond + guidance_scale * (cond_pred - uncond)
        if self.prediction_type == "epsilon":
            z0 = (x_t - sqrt_one_minus_alpha_bar * pred) / sqrt_alpha_bar
        elif self.prediction_type == "v_prediction":
            z0 = sqrt_alpha_bar * x_t - sqrt_one_minus_alpha_bar * pred
        else:
            z0 = pred
        return to_uint8(self.decode(z0)), z, z0

    def _control_residuals(
        self, sample: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor, pairs: tuple[torch.Tensor, ...],
        added: dict[str, Any],
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        """Sum over the ControlNets of their residuals times their scales; ``pairs`` = (image, scale) per control."""
        if len(pairs) != 2 * max(1, len(self.controls)):
            raise UsageError(f"FrameStep with controls {self.controls} takes {len(self.input_names)} inputs")
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for i, net in enumerate(self.controlnets.values()):
            image, scale = pairs[2 * i], pairs[2 * i + 1]
            cond = _as_condition(image, sample.dtype)
            cond = cond.expand(sample.shape[0], -1, -1, -1) if self.cfg else cond
            d, m = net(sample, t, encoder_hidden_states=prompt_embeds, controlnet_cond=cond, conditioning_scale=1.0,
                       return_dict=False, **added)
            d, m = [r * scale for r in d], m * scale
            down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        return down, mid


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 RGB (rounded; the cast last, at the I/O edge)."""
    return ((y.clamp(-1.0, 1.0) + 1.0) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8)
