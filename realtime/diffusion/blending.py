"""Prompt and seed blending: interpolated prompt embeddings and noises (StreamDiffusionTD's weighted prompt and seed
blending, after the usual slerp of diffusion samplers).

- :func:`slerp` interpolates along the great circle between two tensors, row by row over the last dimension
  (``dim=-1``: each token's embedding) or over the whole tensor (``dim=None``: a noise tensor), with the norm
  interpolated linearly; it falls back to the linear mix where the two are (nearly) parallel. ``t=0`` and ``t=1``
  return the endpoints exactly.
- :func:`mix_embeddings`: a weighted mix of several prompt embeddings, ``slerp`` (the default: keeps the embeddings'
  norm, no washed-out middle) or ``linear``; weights are normalised; one non-zero weight returns that embedding exactly.
- :func:`blend_noise`: slerp between two Gaussian noises (keeps their statistics, unlike a linear mix).

Tensors: any float dtype; maths in float32, the result in the first input's dtype and device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from realtime.errors import UsageError


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, dim: int | None = -1) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1); see the module docstring."""
    if t <= 0.0:
        return a.clone()
    if t >= 1.0:
        return b.to(a.dtype).clone()
    x, y = a.float(), b.float()
    if dim is None:
        x, y = x.reshape(1, -1), y.reshape(1, -1)
    na, nb = x.norm(dim=-1, keepdim=True), y.norm(dim=-1, keepdim=True)
    ua, ub = x / na.clamp_min(1e-12), y / nb.clamp_min(1e-12)
    omega = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0).acos()
    so = omega.sin()
    parallel = so.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(so), so)
    wa = torch.where(parallel, torch.full_like(so, 1.0 - t), ((1.0 - t) * omega).sin() / safe)
    wb = torch.where(parallel, torch.full_like(so, t), (t * omega).sin() / safe)
    direction = wa * ua + wb * ub
    norm = (1.0 - t) * na + t * nb
    unit = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = torch.where(parallel, (1.0 - t) * x + t * y, unit * norm)
    return out.reshape(a.shape).to(a.dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    if t <= 0.0:
        return a.clone()
    if t >= 1.0:
        return b.to(a.dtype).clone()
    return ((1.0 - t) * a.float() + t * b.float()).to(a.dtype)


def interpolate(a: torch.Tensor, b: torch.Tensor, t: float, method: str = "slerp") -> torch.Tensor:
    if method == "slerp":
        return slerp(a, b, t)
    if method == "linear":
        return lerp(a, b, t)
    raise UsageError(f"prompt blend {method!r}: expected slerp or linear")


def mix_embeddings(embeds: Sequence[torch.Tensor], weights: Sequence[float], method: str = "slerp") -> torch.Tensor:
    """The weighted mix of prompt embeddings (each ``(B, 77, D)``; with CFG ``B=2`` = [negative, positive] and only
    the positive row is mixed). Slerp of several is sequential: ``acc = slerp(acc, e_i, w_i / (w_0 + ... + w_i))``."""
    if len(embeds) != len(weights) or not embeds:
        raise UsageError("a prompt mix needs one weight per prompt")
    pairs = [(e, float(w)) for e, w in zip(embeds, weights, strict=True) if w > 0]
    if not pairs:
        raise UsageError("a prompt mix needs at least one positive weight")
    acc, total = pairs[0][0].clone(), pairs[0][1]
    for e, w in pairs[1:]:
        total += w
        acc[-1:] = interpolate(acc[-1:], e[-1:], w / total, method)
    return acc


def blend_noise(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Slerp between two noise tensors over all their elements (``t=0``: ``a``, ``t=1``: ``b``, exactly)."""
    return slerp(a, b, t, dim=None)
