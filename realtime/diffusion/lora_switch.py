"""The one LoRA mechanism: LoRA sets switched in place in the resident weights (docs/design.md §12).

:class:`LoraSwitcher` keeps, once, the base values of exactly the weights LoRAs have touched (on the host; pinned when
the model is on CUDA), and applies a LoRA set -- any number of files, each with a scale, in diffusers, kohya or
LyCORIS (LoHa/LoKr) layout -- by writing ``base + sum(scale_i * delta_i)`` into the resident weights with
``param.data.copy_`` (same storage: compiled code and captured CUDA graphs keep reading the same addresses). Weights
the previous set touched and the new one does not go back to their base value. So A -> B -> A gives A's weights byte
for byte, a scale change is the same operation, and no second model copy ever exists.

:meth:`LoraSwitcher.apply` returns the changed weights by name (``unet.<param>``, ``text_encoder.<param>``): the
frame step's engine runner refits the ``unet.`` ones (a no-op for eager and compile, whose module *is* these
weights; onnxruntime and TensorRT set the named initializers). Files are read once and their factors kept (host
memory: the size of the files) so a switch back costs no disk read.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from realtime.config import LoraSpec
from realtime.diffusion.lora import _quiet_libraries, _state_dict, resolve_lora
from realtime.diffusion.lora_keys import COMPONENTS, read_layers
from realtime.diffusion.lora_math import LoraSet, WeightDelta, add_scaled
from realtime.errors import LoraError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwitchStats:
    """What the last :meth:`LoraSwitcher.apply` did: weights written, the host bytes the kept base values use, and the
    seconds the writing took (files already read)."""

    written: int
    base_bytes: int
    seconds: float = 0.0


class LoraSwitcher:
    """In-place LoRA sets for ``modules`` (``{"unet": unet, "text_encoder": text_encoder}``; a missing or None
    component is skipped). ``current``: the set now in the weights. Not thread-safe: call :meth:`apply` between
    frames (the stylizer's thread); :meth:`prepare` (file reading) may run on any thread beforehand."""

    def __init__(self, modules: Mapping[str, Any], *, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle
        self._params: dict[str, torch.Tensor] = {}
        for comp in COMPONENTS:
            module = modules.get(comp)
            if module is not None:
                self._params.update({f"{comp}.{n}": p for n, p in module.named_parameters()})
        self._base: dict[str, torch.Tensor] = {}
        self._files: dict[tuple[str, int, int], dict[str, WeightDelta]] = {}
        self._touched: frozenset[str] = frozenset()
        self.current: tuple[LoraSpec, ...] = ()
        self.last = SwitchStats(0, 0)
        with _quiet_libraries():  # imported now, not on the background thread of a live switch (a GIL-heavy import)
            import diffusers.loaders.lora_pipeline  # noqa: F401

    @classmethod
    def for_components(cls, comps: Any, *, allow_pickle: bool = False) -> "LoraSwitcher":
        return cls({"unet": comps.unet, "text_encoder": comps.text_encoder,
                    "text_encoder_2": getattr(comps, "text_encoder_2", None)}, allow_pickle=allow_pickle)

    @property
    def base_bytes(self) -> int:
        """Host bytes held by the kept base values (the size of the weights any LoRA has touched)."""
        return sum(t.numel() * t.element_size() for t in self._base.values())

    def prepare(self, specs: Sequence[LoraSpec]) -> list[LoraSet]:
        """Read and check every file of the set (cached per file): the slow part, safe off the frame thread.
        A missing, corrupt or misfitting file is one :class:`LoraError` line; nothing is written."""
        out = []
        for spec in specs:
            path = resolve_lora(spec, self.allow_pickle)
            st = os.stat(path)
            key = (str(path), st.st_mtime_ns, st.st_size)
            if key not in self._files:
                self._files[key] = read_layers(path, _state_dict(path, self.allow_pickle), self._params)
                log.info("LoRA %s: %d layers", path, len(self._files[key]))
            out.append((self._files[key], spec.scale))
        return out

    def apply(self, specs: Sequence[LoraSpec]) -> dict[str, torch.Tensor]:
        """Write ``base + sum(scale * delta)`` for the set ``specs`` into the weights in place; returns the weights
        written (by name; every weight the previous or the new set touches)."""
        specs = tuple(specs)
        sets = self.prepare(specs)
        t0 = time.perf_counter()
        new = frozenset(n for layers, scale in sets if scale != 0 for n in layers)
        names = sorted(self._touched | new)
        pin = any(self._params[n].device.type == "cuda" for n in names)
        for n in names:
            if n not in self._base:  # first touch: this weight still holds its base value
                t = self._params[n].detach().to("cpu", copy=True)
                self._base[n] = t.pin_memory() if pin else t
        with torch.no_grad():
            for n in names:
                p = self._params[n]
                if n not in new:
                    p.data.copy_(self._base[n].to(p.device, non_blocking=True))
                    continue
                value = self._base[n].to(p.device, torch.float32, non_blocking=True, copy=True)
                for layers, scale in sets:  # in the set's order: the same set always gives the same bytes
                    if n in layers and scale != 0:
                        add_scaled(value, layers[n], scale)
                p.data.copy_(value)
        self._touched, self.current = new, specs
        if pin:
            torch.cuda.synchronize()
        self.last = SwitchStats(len(names), self.base_bytes, time.perf_counter() - t0)
        return {n: self._params[n] for n in names}


    def switch(self, specs: Sequence[LoraSpec], *, refit: Callable[[dict[str, torch.Tensor]], None] | None = None,
               lock: Any = None) -> dict[str, torch.Tensor]:
        """:meth:`apply` (under ``lock``, e.g. one that keeps the text encoder from being read meanwhile), then
        ``refit`` (an engine runner's) with the changed UNet weights. When the engine cannot refit them
        (:class:`~engines.RefitUnsupported`), the previous set is written back and refitted, and the change is a
        one-line :class:`LoraError`."""
        from engines import RefitUnsupported

        old = self.current
        self.prepare(specs)  # every file read and checked before anything is written
        with lock if lock is not None else contextlib.nullcontext():
            changed = self.apply(specs)
        try:
            if refit is not None and unet_part(changed):
                refit(unet_part(changed))
        except RefitUnsupported as e:
            with lock if lock is not None else contextlib.nullcontext():
                back = self.apply(old)
            with contextlib.suppress(RefitUnsupported):  # an engine that cannot refit at all still holds the old set
                refit(unet_part(back))
            raise LoraError(f"LoRA set [{' '.join(map(str, specs)) or 'none'}] cannot be applied to the running "
                            f"engine: {str(e).splitlines()[0]}") from e
        return changed


def unet_part(changed: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The changed UNet weights, named as in :class:`~realtime.diffusion.stylizer.FrameStep`'s state dict."""
    return {n: t for n, t in changed.items() if n.startswith("unet.")}


def fuse_loras(comps: Any, specs: Sequence[LoraSpec], allow_pickle: bool = False) -> LoraSwitcher:
    """Apply ``specs`` to ``comps`` (UNet and text encoder) in place; returns the switcher that holds their base
    values, for later switches. Raises :class:`LoraError` for a file that is missing, corrupt or does not fit."""
    switcher = LoraSwitcher.for_components(comps, allow_pickle=allow_pickle)
    if specs:
        switcher.apply(specs)
    return switcher


__all__ = ["LoraError", "LoraSwitcher", "SwitchStats", "fuse_loras", "unet_part"]
