"""The math of one frame (docs/design.md §4) and the state around it.

:class:`FrameStep` is a plain ``nn.Module`` with fixed shapes: RGB uint8 image + Canny map + previous latents + prompt
embeddings + fixed noise + every per-frame number as a tensor in; RGB uint8 image + this frame's input and output latents
out. Changing strength, blending or ControlNet scale never changes the module, so a compiled engine is never rebuilt for
them. :class:`Stylizer` owns the state: prompt embedding cache (prompts encoded off the frame path), fixed noise from
the seed, the previous frame's latents, and the runner (eager here; engines through the same inputs and outputs).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from realtime.config import StyleConfig, check_seed, prompt_mix
from realtime.diffusion.blending import blend_noise, interpolate, mix_embeddings
from realtime.diffusion.family import each_conditioning, encode_prompt, time_ids
from realtime.errors import UsageError
from realtime.diffusion.frame_numbers import _NO_CLOCK, FrameNumbers, strength_timestep  # noqa: F401 (re-exported)
from realtime.diffusion.framestep import (CONTROL_CHANNELS, INPUT_NAMES, NUMBER_NAMES, OUTPUT_NAMES,  # noqa: F401
                                          FrameStep, input_names, to_uint8)
from realtime.diffusion.variants import StepVariants, bound
from realtime.geometry import Size

if TYPE_CHECKING:
    from realtime.diffusion.lora_switch import LoraSwitcher
    from realtime.diffusion.models import Components
    from realtime.diffusion.protocols import StageClock

log = logging.getLogger(__name__)

class Stylizer:
    """Owns the per-stream state around :class:`FrameStep` and runs it (eagerly, or through an engine runner).

    ``__call__(image, control)`` takes the model-size RGB uint8 image (H, W, 3) and its Canny map (H, W) uint8 and
    returns the stylized RGB uint8 image (H, W, 3). The first frame is never blended (no brown warm-up frames), and the
    output is this frame's own (no n-1 delay). ``clock``: None, or a :class:`~realtime.diffusion.protocols.StageClock`
    that times each call's ``upload``, ``step`` and ``download`` (``stylecam bench`` sets it).

    Guidance on/off keeps both frame-step variants (:mod:`realtime.diffusion.variants`; :meth:`prepare_style` builds
    the other one off the frame thread). Engine outputs may be static buffers: the image is read before the next call.
    """

    clock: "StageClock | None" = None
    backend_reason: str = ""  # why the frame step runs on its backend (set by build_stylizer / from the runner)

    def __init__(
        self, components: "Components", style: StyleConfig, size: Size, *, device: torch.device,
        dtype: torch.dtype, seed: int = 0, runner_factory: Callable[[Any, tuple[Any, ...]], Callable[..., Any]] | None = None,
        loras: "LoraSwitcher | None" = None,
    ) -> None:

        if style.passthrough:
            raise UsageError("style 'none' is pass-through: it has no stylizer")
        if size.width % 64 or size.height % 64:
            raise UsageError(f"model size {size}: sides must be multiples of 64")
        self.components, self.size, self.device, self.dtype, self.seed = components, size, device, dtype, seed
        self.style = style
        self.prompt_encodes = 0  # how many times the text encoder ran (tests check it is once per prompt)
        self._embeds: dict[tuple[str, str, bool], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._lock = threading.Lock()
        self._pending: Future[Any] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylecam-prompt")
        self._abar = components.alphas_cumprod()
        self._runner_factory = runner_factory
        self.loras = loras  # switches LoRA sets in place (None: a LoRA change is refused)
        self._weights_lock = threading.Lock()  # the text encoder is never read while a LoRA set is written into it
        self._transition: tuple[Any, Any, int, int, str] | None = None  # start, target conditionings, n, k, how
        self._pending_transition: tuple[int, str] = (0, "slerp")  # frames and blend of the pending prompt's change
        self.seed_blend: tuple[int, float] | None = None
        latent_shape = (1, 4, size.height // 8, size.width // 8)
        gen = torch.Generator("cpu").manual_seed(seed)
        self.noise = torch.randn(latent_shape, generator=gen, dtype=torch.float32).to(device, dtype)
        self._prev_in = torch.zeros(latent_shape, device=device, dtype=dtype)
        self._prev_out = torch.zeros(latent_shape, device=device, dtype=dtype)
        self._has_prev = False
        self.variants = StepVariants()  # guidance on/off: each frame-step variant built once (diffusion/variants.py)
        self._build(style)

    # ----------------------------------------------------------------------------------------------------- set-up
    def _variant(self, cfg: bool, cond: Any, numbers: "FrameNumbers") -> tuple[FrameStep, Any]:
        def build() -> tuple[FrameStep, Any]:
            c = self.components
            step = FrameStep(c.unet, self._nets, c.vae, c.prediction_type, cfg=cfg, family=c.family)
            factory = self._runner_factory  # an engine captures its CUDA graph at its first call (the frame thread)
            return step, step if factory is None else factory(step, self.example_inputs(cond, numbers, cfg))

        return self.variants.get(cfg, build)

    def _build(self, style: StyleConfig) -> None:
        comps = self.components
        nets = {c: net for c, net in comps.controlnets.items() if c in style.controls}
        missing = [c for c in style.controls if c != "canny" and c not in nets]
        if missing:
            raise UsageError(f"control {missing[0]} is enabled but its ControlNet is not loaded (load the models "
                             f"with that control)")
        self._nets = nets  # both variants share them; a control change builds new variants (set_style)
        self._controls = tuple(nets)  # FrameStep.controls: the mapping's keys, in order
        self._cfg = style.uses_cfg
        self._prompt_embeds, self._text_embeds = self.conditioning(style)
        self._time_ids = time_ids(self.size, 2 if style.uses_cfg else 1, self.device, self.dtype)
        self._numbers = self.frame_numbers(style)
        self.step, self.runner = self._variant(style.uses_cfg, (self._prompt_embeds, self._text_embeds), self._numbers)
        self.backend_reason = getattr(self.runner, "reason", "") or self.backend_reason

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.variants.close()

    def __enter__(self) -> "Stylizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frame_numbers(self, style: StyleConfig) -> FrameNumbers:
        t = strength_timestep(style.strength, len(self._abar))
        abar = float(self._abar[t])
        scales = [style.scale_of(c) for c in self._controls] or [style.control_scale]
        return FrameNumbers(
            timestep=float(t), sqrt_alpha_bar=abar**0.5, sqrt_one_minus_alpha_bar=(1 - abar) ** 0.5,
            blend=style.temporal.blend, motion_gain=style.temporal.motion_gain, control_scale=scales[0],
            guidance_scale=style.guidance, more_scales=tuple(scales[1:]),
        )

    @property
    def controls(self) -> tuple[str, ...]:
        """The controls the frame step runs (their maps are what :meth:`__call__` takes), in order."""
        return self._controls

    # ---------------------------------------------------------------------------------------------------- prompts
    def encode_prompt(self, prompt: str, negative: str = "", cfg: bool = False) -> torch.Tensor:
        """Prompt embeddings (1, 77, D), or (2, 77, D) = [negative, positive] with CFG; cached per prompt."""
        return self._encode(prompt, negative, cfg)[0]

    def _encode(self, prompt: str, negative: str, cfg: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (prompt, negative if cfg else "", cfg)  # (prompt embeddings, SDXL's pooled ones or None) cached
        with self._lock:
            if key in self._embeds:
                return self._embeds[key]
        with self._weights_lock:
            cond = encode_prompt(self.components, prompt, negative, cfg, self.device, self.dtype)
        with self._lock:
            self.prompt_encodes += 1
            self._embeds[key] = cond
        return cond

    def conditioning(self, style: StyleConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt embeddings, SDXL's pooled embeddings or None) of ``style``: its prompt, or the weighted mix of its
        ``prompt_mix`` (each prompt encoded once and cached; both mixed with ``style.prompt_blend``)."""
        mix = prompt_mix(style)
        conds = [self._encode(text, style.negative_prompt, style.uses_cfg) for text, _ in mix]
        if len(conds) == 1:
            return conds[0]
        weights = [w for _, w in mix]
        return each_conditioning(lambda *es: mix_embeddings(list(es), weights, style.prompt_blend), *conds)  # type: ignore[return-value]

    def set_loras(self, specs: tuple[Any, ...]) -> None:
        """Switch the LoRA set in place (:class:`~realtime.diffusion.lora_switch.LoraSwitcher`): the UNet weights are
        written where they are and the engine refits them; a text-encoder change re-encodes the prompt now, so the
        next frame shows the new set. A set the engine cannot refit is a :class:`LoraError`; the old set stays."""
        if self.loras is None:
            raise UsageError("this stylizer was built without a LoRA switcher: build it with build_stylizer")
        refit = None if self.runner is self.step else self.variants.refit  # every kept variant's engine
        changed = self.loras.switch(specs, refit=refit, lock=self._weights_lock)
        if any(n.startswith("text_encoder") for n in changed):  # text_encoder_2 (SDXL) too
            with self._lock:
                self._embeds.clear()
            self._pending, self._transition = None, None
            self._prompt_embeds, self._text_embeds = self.conditioning(self.style)
        self.style = dataclasses.replace(self.style, loras=tuple(specs))

    def prepare_style(self, style: StyleConfig) -> None:
        """Off the frame thread: ``style``'s prompt, and for guidance on/off its frame-step variant (set_style swaps)."""
        cond = self.conditioning(style)
        if style.uses_cfg != self._cfg and not style.passthrough:
            self._variant(style.uses_cfg, cond, self.frame_numbers(style))

    def set_style(self, style: StyleConfig, *, wait: bool = False) -> None:
        """Switch style. Prompt-only and per-frame-number changes never stall a frame: the prompt is encoded on a
        background thread and swapped in when ready (blended over ``style.transition_frames`` frames). A LoRA
        change is written in place (:meth:`set_loras`). A guidance on/off change swaps in the other frame-step
        variant (built by :meth:`prepare_style`; built here, logged, if it was not prepared)."""
        if style.passthrough:
            raise UsageError("cannot switch a running stylizer to the pass-through style")
        if style.controls != self.style.controls:  # their ControlNets loaded first (models.add_controlnets)
            if style.loras != self.style.loras:
                self.set_loras(style.loras)
            log.info("controls %s: rebuilding the frame step", ",".join(style.controls))
            old, self.variants = self.variants, StepVariants()  # the kept variants have the old ControlNets
            try:
                self._build(style)  # a control whose ControlNet is not loaded: UsageError, the running step stays
            except BaseException:
                self.variants = old
                raise
            old.close()
            self._pending = None
            self.style = style
            return
        if style.loras != self.style.loras:
            self.set_loras(style.loras)
        if style.uses_cfg != self._cfg:
            if style.uses_cfg not in self.variants:
                log.info("guidance %s: building that frame-step variant now (not prepared)", "on" if style.uses_cfg else "off")
            old_cfg, old = self._cfg, (self.step, self.runner)
            self._pending = None  # an encode still pending for the old CFG shape must never be swapped in
            self.style = style
            self._build(style)
            self.variants.switched_away(old_cfg, old)
            return
        same_prompt = (prompt_mix(style), style.negative_prompt, style.prompt_blend) == (
            prompt_mix(self.style), self.style.negative_prompt, self.style.prompt_blend)
        self._numbers = self.frame_numbers(style)
        self.style = style
        if same_prompt:
            return
        frames, how = style.transition_frames, style.prompt_blend
        future = self._executor.submit(self.conditioning, style)
        self._pending = future
        self._pending_transition = (frames, how)
        if wait:
            future.result()
            self._take_pending()

    def _swap_prompt(self) -> None:
        """Between frames: take a prompt encoded in the background, then one step of a running transition."""
        self._take_pending()
        if self._transition is not None:  # one step of a prompt transition per frame; the last one is the target
            start, target, n, k, how = self._transition
            k += 1
            now = target if k >= n else each_conditioning(lambda a, b: interpolate(a, b, k / n, how), start, target)
            self._prompt_embeds, self._text_embeds = now
            self._transition = None if k >= n else (start, target, n, k, how)

    def _take_pending(self) -> None:
        if self._pending is not None and self._pending.done():
            target = self._pending.result()
            frames, how = self._pending_transition
            self._pending = None
            if frames > 0 and target[0].shape == self._prompt_embeds.shape:
                self._transition = ((self._prompt_embeds, self._text_embeds), target, frames, 0, how)
            else:
                (self._prompt_embeds, self._text_embeds), self._transition = target, None

    def _noise(self, seed: int) -> torch.Tensor:
        gen = torch.Generator("cpu").manual_seed(seed)
        return torch.randn(tuple(self.noise.shape), generator=gen, dtype=torch.float32)

    def set_seed(self, seed: int, blend: tuple[int, float] | None = None) -> None:
        """Re-draw the fixed noise from ``seed`` exactly as ``__init__`` does (the model weights stay as they are);
        ``blend=(other, t)``: the noise is slerp(noise(seed), noise(other), t) (seed blending; t=0 is ``seed``'s
        noise, t=1 ``other``'s, exactly). The next frame uses it; an engine takes the noise as an input, so nothing
        is rebuilt."""
        check_seed(seed)
        noise = self._noise(seed)
        if blend is not None:
            noise = blend_noise(noise, self._noise(check_seed(blend[0])), float(blend[1]))
        self.noise = noise.to(self.device, self.dtype)
        self.seed, self.seed_blend = seed, blend

    # ------------------------------------------------------------------------------------------------------ frames
    def reset(self) -> None:
        """Forget the previous frame: the next frame is not blended (use after a cut or a style jump)."""
        self._has_prev = False

    def _map_shape(self, control: str) -> tuple[int, ...]:
        h, w = self.size.height, self.size.width
        return (h, w, 3) if CONTROL_CHANNELS.get(control, 1) == 3 else (h, w)

    def blank_controls(self) -> dict[str, np.ndarray]:
        """All-zero maps for every control of the step (warm-up frames)."""
        return {c: np.zeros(self._map_shape(c), np.uint8) for c in self.controls or ("canny",)}

    def example_inputs(self, cond: Any = None, numbers: "FrameNumbers | None" = None,
                       cfg: bool | None = None) -> tuple[torch.Tensor, ...]:
        """A full set of FrameStep inputs for this stylizer's shapes (what an engine is built from)."""
        h, w = self.size.height, self.size.width
        image = torch.zeros((1, h, w, 3), dtype=torch.uint8, device=self.device)
        maps = [torch.zeros((1, *self._map_shape(c)), dtype=torch.uint8, device=self.device) for c in self.controls or ("canny",)]
        return self._assemble(image, maps, first=True, cond=cond, numbers=numbers, cfg=cfg)

    def _assemble(self, image: torch.Tensor, maps: list[torch.Tensor], first: bool, cond: Any = None,
                  numbers: "FrameNumbers | None" = None, cfg: bool | None = None) -> tuple[torch.Tensor, ...]:
        values = self._number_values(first, numbers)
        flat = torch.tensor(values, dtype=torch.float32).to(self.device, self.dtype)
        return self._order(image, maps, [flat[i : i + 1] for i in range(len(values))], cond, cfg)

    def _order(self, image: Any, maps: list[Any], numbers: list[Any], cond: Any = None,
               cfg: bool | None = None) -> tuple[Any, ...]:
        """FrameStep's inputs in :attr:`input_names` order (the one place that orders them)."""
        more = [t for i, m in enumerate(maps[1:]) for t in (m, numbers[7 + i])]
        emb, text = (self._prompt_embeds, self._text_embeds) if cond is None else cond
        times = self._time_ids if cfg is None else time_ids(self.size, 2 if cfg else 1, self.device, self.dtype)
        extra = (text, times) if text is not None else ()  # the SDXL family's inputs
        return (image, maps[0], self._prev_in, self._prev_out, self.noise, emb, *numbers[:7], *more, *extra)

    def _number_values(self, first: bool, numbers: "FrameNumbers | None" = None) -> tuple[float, ...]:
        """The per-frame numbers in :attr:`number_names` order (the first frame is not blended)."""
        n = self._numbers if numbers is None else numbers
        return (n.timestep, n.sqrt_alpha_bar, n.sqrt_one_minus_alpha_bar, 1.0 if first else n.blend,
                0.0 if first else n.motion_gain, n.control_scale, n.guidance_scale, *n.more_scales)

    @property
    def input_names(self) -> tuple[str, ...]:
        """This step's input names, in order (:func:`input_names` of its controls and family)."""
        return self.step.input_names

    @property
    def number_names(self) -> tuple[str, ...]:
        """The per-frame numbers among :attr:`input_names`, in order."""
        return NUMBER_NAMES + tuple(f"control_scale_{c}" for c in self.controls[1:])

    def frame_state(self) -> tuple[dict[str, torch.Tensor], tuple[float, ...]]:
        """For a frame path that makes the image and the Canny map on the device itself
        (:class:`~realtime.pipeline.framepath.FramePath`): every other FrameStep input by name (device tensors, as
        they are: nothing is copied; a map of another control is None: the path has to supply it) and the per-frame
        numbers as floats in :attr:`number_names` order (they travel in one small tensor with the frame). Swaps in
        a prompt encoded in the background. Call :meth:`accept` with the step's latents afterwards."""
        self._swap_prompt()
        numbers = self._number_values(not self._has_prev)
        maps: list[Any] = [None] * max(1, len(self.controls))
        named = dict(zip(self.input_names, self._order(None, maps, [None] * len(numbers)), strict=True))
        made_by_the_path = {"image", "control", *self.number_names}
        return {k: v for k, v in named.items() if k not in made_by_the_path}, numbers

    def accept(self, in_latent: torch.Tensor, out_latent: torch.Tensor) -> None:
        """This frame's input and output latents (FrameStep's ``in_latent``, ``out_latent``): the next frame blends
        with them."""
        self._prev_in, self._prev_out, self._has_prev = in_latent, out_latent, True
        self._bind_constants()

    def _bind_constants(self) -> None:
        """The noise written once into the runner's static input buffer (``Runner.input_buffers``) and passed as that
        buffer from then on: no copy per frame (a new seed: copied once, then bound). The prompt embeddings are not
        bound: a prompt transition reads its start tensor while the next frame's embeddings are fed."""
        self.noise = bound(self.runner, "noise", self.noise)

    def control_maps(self, control: "np.ndarray | Mapping[str, np.ndarray]") -> list[np.ndarray]:
        """The maps for :attr:`controls`, in order, checked: ``control`` is the one map of a one-control step (or of
        a step without ControlNet), or a mapping {control type: map} holding every control of the step. Canny and
        depth maps are (H, W) uint8, the pose skeleton is (H, W, 3) uint8 RGB."""
        controls = self.controls or ("canny",)
        if not isinstance(control, Mapping):
            if len(controls) > 1:
                raise UsageError(f"this stylizer runs controls {','.join(controls)}: give one map per control")
            control = {controls[0]: control}
        maps = []
        for c in controls:
            m = control.get(c)
            if m is None:
                raise UsageError(f"no {c} map given (the stylizer runs controls {','.join(controls)})")
            want = self._map_shape(c)
            if m.shape != want or m.dtype != np.uint8:
                raise UsageError(f"{c} control map must be {'x'.join(map(str, want))} uint8, got {m.shape} {m.dtype}")
            maps.append(m)
        return maps

    def step_inputs(self, image: np.ndarray, control: "np.ndarray | Mapping[str, np.ndarray]") -> tuple[torch.Tensor, ...]:
        h, w = self.size.height, self.size.width
        if image.shape != (h, w, 3) or image.dtype != np.uint8:
            raise UsageError(f"stylizer input must be {h}x{w}x3 uint8, got {image.shape} {image.dtype}")
        maps = [torch.from_numpy(np.ascontiguousarray(m)).unsqueeze(0).to(self.device, non_blocking=True)
                for m in self.control_maps(control)]
        img = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).to(self.device, non_blocking=True)
        return self._assemble(img, maps, first=not self._has_prev)

    def __call__(self, image: np.ndarray, control: "np.ndarray | Mapping[str, np.ndarray]") -> np.ndarray:
        """(H, W, 3) uint8 RGB at the model size + its control map(s) (:meth:`control_maps`) -> (H, W, 3) uint8 RGB
        stylized."""
        clock = self.clock if self.clock is not None else _NO_CLOCK
        self._swap_prompt()
        with clock.stage("upload", device=True):
            inputs = self.step_inputs(image, control)
        with torch.inference_mode(), clock.stage("step", device=True):
            out, z, z0 = self.runner(*inputs)
        self.accept(z, z0)
        with clock.stage("download", device=True):
            return out[0].cpu().numpy()
