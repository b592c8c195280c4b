"""The math of LoRA-family weight deltas (moved here from ``engines/refit.py``: engines know nothing of LoRA).

One weight ``W`` (Linear ``(out, in)`` or Conv2d ``(out, in, kh, kw)``) gets ``W' = W + sum_i scale_i * delta_i``, every
delta computed in float32 and reshaped to ``W``'s shape:

- LoRA (kohya ``lora_down``/``lora_up``, peft ``lora_A``/``lora_B``): ``delta = (alpha / rank) * up @ down``.
- LoHa (LyCORIS ``hada_w1_a/b``, ``hada_w2_a/b``): ``delta = (w1a @ w1b) * (w2a @ w2b) * (alpha / rank)`` (Hadamard
  product), rank = ``w1b.shape[0]``.
- LoKr (LyCORIS ``lokr_w1`` or ``lokr_w1_a/b``, ``lokr_w2`` or ``lokr_w2_a/b``): ``delta = kron(w1, w2) * scale`` with
  ``w1 = w1a @ w1b`` and ``w2 = w2a @ w2b`` when decomposed; ``scale = alpha / rank`` (rank of the decomposed factor),
  1 when both factors are full matrices (LyCORIS sets alpha = rank then).

``alpha`` None means alpha = rank (factor 1). Formulas: LyCORIS (KohakuBlueleaf/LyCORIS, ``lycoris/modules/loha.py``
and ``lokr.py``) and peft's ``tuners/loha``/``tuners/lokr`` layers. Tucker-decomposed convolutions (``hada_t1``,
``lokr_t2``) are not supported: the key reader refuses them by name.

:func:`fused_weights` is the pure form (a new dict); :class:`~realtime.diffusion.lora_switch.LoraSwitcher` writes the
same values into the resident weights in place.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from realtime.errors import LoraError


class WeightDelta(Protocol):
    """One layer's factors from one file: :meth:`delta` is the float32 change (before the user's scale)."""

    def delta(self, shape: Sequence[int]) -> torch.Tensor: ...


def _fit(d: torch.Tensor, shape: Sequence[int], what: str) -> torch.Tensor:
    if d.numel() != math.prod(shape) or int(d.shape[0]) != int(shape[0]):
        raise LoraError(f"{what} delta {list(d.shape)} does not fit a weight of shape {list(shape)}")
    return d.reshape(tuple(shape))


def _factor(alpha: float | None, rank: int) -> float:
    return 1.0 if alpha is None else float(alpha) / rank


def _mat(t: torch.Tensor) -> torch.Tensor:
    """A factor as a float32 matrix (first dim kept, the rest flattened)."""
    return t.reshape(t.shape[0], -1).float()


@dataclass(frozen=True)
class LoraWeight:
    """``down``: (rank, in) or (rank, in, kh, kw); ``up``: (out, rank) or (out, rank, 1, 1)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None

    def delta(self, shape: Sequence[int]) -> torch.Tensor:
        rank = int(self.down.shape[0])
        if int(_mat(self.up).shape[1]) != rank:
            raise LoraError(f"LoRA up {list(self.up.shape)} and down {list(self.down.shape)} disagree on the rank")
        return _fit((_mat(self.up) @ _mat(self.down)) * _factor(self.alpha, rank), shape, "LoRA")


@dataclass(frozen=True)
class LohaWeight:
    """LyCORIS LoHa: ``w1a``/``w2a`` (out, rank), ``w1b``/``w2b`` (rank, in[*kh*kw])."""

    w1a: torch.Tensor
    w1b: torch.Tensor
    w2a: torch.Tensor
    w2b: torch.Tensor
    alpha: float | None = None

    def delta(self, shape: Sequence[int]) -> torch.Tensor:
        rank = int(self.w1b.shape[0])
        try:
            d = (_mat(self.w1a) @ _mat(self.w1b)) * (_mat(self.w2a) @ _mat(self.w2b))
        except RuntimeError as e:
            raise LoraError(f"LoHa factors {[list(t.shape) for t in (self.w1a, self.w1b, self.w2a, self.w2b)]} "
                            "do not multiply") from e
        return _fit(d * _factor(self.alpha, rank), shape, "LoHa")


@dataclass(frozen=True)
class LokrWeight:
    """LyCORIS LoKr: ``w1`` (a, b) full or ``w1a @ w1b``; ``w2`` (c, d[, kh, kw]) full or ``w2a @ w2b``."""

    w1: torch.Tensor | None = None
    w1a: torch.Tensor | None = None
    w1b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2a: torch.Tensor | None = None
    w2b: torch.Tensor | None = None
    alpha: float | None = None

    def _side(self, full: torch.Tensor | None, a: torch.Tensor | None, b: torch.Tensor | None,
              n: int) -> tuple[torch.Tensor, int | None]:
        if full is not None:
            return _mat(full), None
        if a is None or b is None:
            raise LoraError(f"LoKr factor w{n}: needs lokr_w{n} or both lokr_w{n}_a and lokr_w{n}_b")
        return _mat(a) @ _mat(b), int(b.shape[0])

    def delta(self, shape: Sequence[int]) -> torch.Tensor:
        w1, r1 = self._side(self.w1, self.w1a, self.w1b, 1)
        w2, r2 = self._side(self.w2, self.w2a, self.w2b, 2)
        rank = r2 if r2 is not None else r1
        factor = 1.0 if rank is None else _factor(self.alpha, rank)
        return _fit(torch.kron(w1, w2) * factor, shape, "LoKr")


LoraSet = tuple[Mapping[str, WeightDelta], float]
"""One file's layers (parameter name -> factors) with the user's scale."""


def summed_delta(name: str, shape: Sequence[int], sets: Sequence[LoraSet], device: Any = None) -> torch.Tensor | None:
    """``sum(scale * delta)`` over the sets that touch ``name`` (float32, on ``device``), None when none does. The sum
    runs in the sets' order, so the same sets always give the same bytes."""
    total: torch.Tensor | None = None
    for layers, scale in sets:
        f = layers.get(name)
        if f is None or scale == 0:
            continue
        d = f.delta(shape).to(device) * float(scale)
        total = d if total is None else total + d
    return total


def add_scaled(out: torch.Tensor, f: WeightDelta, scale: float) -> None:
    """``out += scale * delta`` in place (``out``: float32, contiguous, the weight's shape). A LoRA pair goes through one
    ``addmm_`` (no delta tensor is made); LoHa/LoKr add their delta."""
    if isinstance(f, LoraWeight):
        rank = int(f.down.shape[0])
        up, down = _mat(f.up).to(out.device), _mat(f.down).to(out.device)
        if int(up.shape[1]) != rank or up.shape[0] * down.shape[1] != out.numel():
            raise LoraError(f"LoRA up {list(f.up.shape)} and down {list(f.down.shape)} do not fit {list(out.shape)}")
        out.view(out.shape[0], -1).addmm_(up, down, alpha=float(scale) * _factor(f.alpha, rank))
    else:
        out.add_(f.delta(tuple(out.shape)).to(out.device), alpha=float(scale))


def fused_weights(base: Mapping[str, torch.Tensor], sets: Sequence[LoraSet]) -> dict[str, torch.Tensor]:
    """New full weights = base + sum(scale * delta) over every set (float32 maths, cast to the base dtype); ``base`` is
    never modified and the result has exactly its keys (untouched weights are copies of the base), so A -> B -> A gives
    exactly A. A set naming a weight that is not in ``base`` is a :class:`LoraError`."""
    for i, (layers, scale) in enumerate(sets):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise LoraError(f"LoRA set {i}: scale={scale!r} is not a finite number")
        missing = sorted(set(layers) - set(base))
        if missing:
            raise LoraError(f"LoRA set {i} targets {missing[0]!r}, which is not among the base weights")
    out = {}
    for name, w in base.items():
        d = summed_delta(name, tuple(w.shape), sets, w.device)
        out[name] = w.clone() if d is None else (w.float() + d).to(w.dtype)
    return out


def base_weights(module: torch.nn.Module, names: Iterable[str] | None = None,
                 device: str = "cpu") -> dict[str, torch.Tensor]:
    """Copies of ``module``'s current weights (``names``; None: the ``weight`` of every Linear / Conv1d / Conv2d)."""
    params = dict(module.named_parameters())
    if names is None:
        kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
        names = [f"{p}.weight" if p else "weight" for p, m in module.named_modules() if isinstance(m, kinds)]
    out = {}
    for n in names:
        if n not in params:
            raise LoraError(f"the module has no parameter named {n!r}")
        out[n] = params[n].detach().to(device, copy=True)
    return out
