"""The state of a live session that the user changes while it runs, and how each :class:`~realtime.pipeline.controls.Command`
is applied to the :class:`~realtime.pipeline.processor.FrameProcessor` without stalling more than one frame.

- Style, prompt, strength, scales and temporal settings go through ``FrameProcessor.set_style``: per-frame numbers are
  tensor inputs (no rebuild) and prompts are encoded off the frame path by the stylizer, so the old look keeps flowing
  until the new prompt is ready.
- A guidance on/off change (CFG doubles the batch: the frame step is rebuilt) first encodes the prompt pair on a
  background thread while the current style keeps running, then switches (logged).
- A LoRA change (the ``lora`` / ``lora-scale`` commands, or a preset with other LoRAs) reads and checks the files on a
  background thread while the current style keeps running, then the stylizer writes the new set into the resident
  weights in place between two frames (:class:`~realtime.diffusion.lora_switch.LoraSwitcher`: no second model, no
  rebuild; A -> B -> A gives exactly A). A file that is missing or does not fit is one warning; the running set stays.
- A control change (the ``controls`` command, or a preset with other controls) loads the new ControlNets and
  detectors on a background thread (``controls_loader``) while the current style keeps running, then the frame step is
  rebuilt between two frames (logged: a pause of one build).
- ``region`` and ``background`` change what gets stylized at once (the segmenter loads on the first region that
  needs one).
- Switching to another preset keeps the session's LoRAs and its temporal settings (from the command line or changed
  while running).
"""
from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Future
from typing import Any, Callable

from realtime.config import (REGION_CHOICES, LoraSpec, StyleConfig, builtin_style_names, check_controls, check_seed,
                             check_seed_blend, load_style)
from realtime.errors import InputError, UsageError
from realtime.files import check_input_file
from realtime.pipeline.controls import HELP, Command
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.temporal import blend_toggled
from realtime.pipeline.watchdog import GuardedStylizer, LiveStylizer, Worker

log = logging.getLogger(__name__)

_STYLE_FIELDS = {"negative": "negative_prompt", "strength": "strength", "control": "control_scale",
                 "guidance": "guidance", "prompt-blend": "prompt_blend", "transition": "transition_frames"}
_STICKY = ("prompt_blend", "transition_frames")  # kept across preset switches, like the temporal overrides


class LiveSession:
    """Applies commands to ``processor``. ``style``: the running style; ``temporal_overrides``: TemporalConfig fields
    given on the command line (kept across preset switches); ``style_names``: the presets that ``style next/prev``
    (window keys n/p) cycle through (default: the built-in ones). Flags the loop reads: ``quit``, ``overlay``.
    ``on_stats`` is called by the ``stats`` command. ``controls_loader(style)`` loads what ``style``'s controls need
    (their ControlNets into the running stylizer, their detectors), on the background worker; None refuses control
    changes. Everything runs on the loop's thread, between frames, except the preparation of a change (prompt
    encoding, LoRA file reading, ControlNet loading) on a background worker."""

    def __init__(self, processor: FrameProcessor, style: StyleConfig, *,
                 temporal_overrides: dict[str, Any] | None = None, style_names: list[str] | None = None,
                 on_stats: Callable[[], None] | None = None,
                 controls_loader: Callable[[StyleConfig], Any] | None = None) -> None:
        self.processor = processor
        self.style = style
        self.quit = False
        self.overlay = True
        self.applied = 0
        self.on_stats = on_stats
        #: Called after each :meth:`apply` with the command and None (applied) or the one-line reason it was not (the
        #: web panel answers its request with it).
        self.on_applied: Callable[[Command, str | None], None] | None = None
        self._temporal = dict(temporal_overrides or {})
        self._sticky: dict[str, Any] = {}
        self._names = list(style_names) if style_names is not None else builtin_style_names()
        self._loras = style.loras
        self._remembered_blend: float | None = None
        self._pending: tuple[Future[Any], StyleConfig, str] | None = None  # being prepared: future, style, what
        self._encoder: Worker | None = None
        self._controls_loader = controls_loader

    # -------------------------------------------------------------------------------------------------- helpers
    @property
    def _raw_stylizer(self) -> LiveStylizer | None:
        """The running stylizer itself (inside the watchdog's guard, when there is one)."""
        s = self.processor.stylizer
        return s.stylizer if isinstance(s, GuardedStylizer) else s

    @property
    def pending_style(self) -> StyleConfig | None:
        """A style waiting to be switched in (its prompt encoding for guidance on/off, or its LoRA files being read),
        else None."""
        return None if self._pending is None else self._pending[1]

    def _need_model(self, what: str) -> None:
        if self.processor.stylizer is None:
            raise UsageError(f"{what} needs a model, and none is loaded (started with --style none): restart with "
                             f"--style NAME")

    def _diffusion(self, what: str) -> StyleConfig:
        self._need_model(what)
        if self.style.passthrough:
            raise UsageError(f"{what}: style {self.style.name!r} passes frames through; choose a style first "
                             f"(style NAME)")
        return self.style

    # ---------------------------------------------------------------------------------------------------- apply
    def apply(self, cmd: Command) -> bool:
        """Apply one command; a bad one is logged (one line) and ignored. Returns whether it was applied."""
        try:
            self._apply(cmd)
        except (UsageError, InputError, ValueError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            log.warning("%s%s: %s", f"{cmd.source}: " if cmd.source else "", cmd, reason)
            if self.on_applied is not None:
                self.on_applied(cmd, reason)
            return False
        self.applied += 1
        if self.on_applied is not None:
            self.on_applied(cmd, None)
        return True

    def tick(self) -> None:
        """Called once per frame: switches in a style whose preparation (prompt encoding for guidance on/off, LoRA
        files read) finished in the background."""
        if self._pending is None or not self._pending[0].done():
            return
        fut, style, what = self._pending
        self._pending = None
        exc = fut.exception()
        if exc is not None:
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("%s not applied: %s", what, text)
            running = self._raw_stylizer
            if running is not None and not self.style.passthrough:
                self.style, self._loras = running.style, running.style.loras
            return
        try:
            self.processor.set_style(style)
        except (UsageError, InputError) as e:
            log.warning("style %r not applied: %s", style.name, e)
            return
        log.info("%s: switched in", what)

    def _apply(self, cmd: Command) -> None:
        name, v = cmd.name, cmd.value
        proc = self.processor
        if name == "quit":
            self.quit = True
        elif name == "help":
            log.info("%s", HELP)
        elif name == "stats":
            if self.on_stats is not None:
                self.on_stats()
        elif name == "overlay":
            self.overlay = (not self.overlay) if v is None else bool(v)
        elif name in ("bypass", "blank"):
            on = (proc.mode != name) if v is None else bool(v)
            if on:
                proc.set_mode(name)
            elif proc.mode == name:
                proc.set_mode("stylize")
            log.info("%s %s", name, "on" if on else "off")
        elif name == "mirror":
            proc.set_mirror((not proc.mirror) if v is None else bool(v))
            log.info("mirror %s", "on" if proc.mirror else "off")
        elif name == "framing":
            proc.set_framing((not proc.framing) if v is None else bool(v))
            log.info("framing %s", "on" if proc.framing else "off")
        elif name == "style":
            self._preset(str(v))
        elif name == "lora":
            base = self._diffusion("lora")
            self._loras = tuple(v)
            self._switch(dataclasses.replace(base, loras=self._loras), str(cmd))
        elif name == "lora-scale":
            base = self._diffusion("lora-scale")
            self._loras = scaled_loras(base.loras, tuple(v))
            self._switch(dataclasses.replace(base, loras=self._loras), str(cmd))
        elif name in _STYLE_FIELDS:
            base = self._diffusion(name)
            if _STYLE_FIELDS[name] in _STICKY:
                self._sticky[_STYLE_FIELDS[name]] = v
            self._switch(dataclasses.replace(base, **{_STYLE_FIELDS[name]: v}), f"{name} {v}")
        elif name in ("prompt", "prompt-mix"):
            base = self._diffusion(name)
            mix = () if name == "prompt" else tuple(v)
            text = str(v) if name == "prompt" else mix[0][0]
            self._switch(dataclasses.replace(base, prompt=text, prompt_mix=mix), str(cmd))
        elif name == "seed-blend":
            self._need_model("seed-blend")
            seed = getattr(self._raw_stylizer, "seed", 0)
            proc.stylizer.set_seed(seed, check_seed_blend(v, "seed-blend"))
            log.info("seed %d blended with seed %d by %g", seed, v[0], v[1])
        elif name in ("controls", "region", "background"):
            self._controls_or_region(name, v)
        elif name == "seed":
            self._need_model("seed")
            proc.stylizer.set_seed(check_seed(v))
            log.info("seed %d", v)
        elif name == "blend":
            if v is None or isinstance(v, bool):
                style = self._diffusion("blend")
                is_on = style.temporal.blend < 1.0
                if v is None or bool(v) != is_on:
                    new, self._remembered_blend = blend_toggled(style, self._remembered_blend)
                    self._set_temporal(blend=new.temporal.blend)
                log.info("blending %s", "on" if self.style.temporal.blend < 1.0 else "off")
            else:
                self._set_temporal(blend=float(v))
        elif name == "motion-threshold":
            self._set_temporal(motion_threshold=float(v))
        elif name == "motion-adaptive":
            cur = self._diffusion(name).temporal.motion_adaptive
            self._set_temporal(motion_adaptive=(not cur) if v is None else bool(v))
        elif name == "similarity":
            if isinstance(v, bool):
                self._set_temporal(similarity_filter=v)
            else:
                self._set_temporal(similarity_filter=True, similarity_threshold=float(v))
        elif name == "max-skips":
            self._set_temporal(max_skips=int(v))
        else:
            raise UsageError(f"unknown command {name!r}")

    # ------------------------------------------------------------------------------------------------- changes
    def _set_temporal(self, **changes: Any) -> None:
        base = self._diffusion(" ".join(changes))
        new = dataclasses.replace(base, temporal=dataclasses.replace(base.temporal, **changes))  # validates
        self._temporal.update(changes)
        self._switch(new, ", ".join(f"{k.replace('_', '-')} {v}" for k, v in changes.items()))

    def _preset(self, name: str) -> None:
        if name in ("next", "prev"):
            self._need_model(f"style {name}")
            names = self._names
            i = names.index(self.style.name) if self.style.name in names else -1
            name = names[(i + (1 if name == "next" else -1)) % len(names)] if i >= 0 or name == "next" else names[-1]
        new = load_style(name)
        if not new.passthrough:
            self._need_model(f"style {new.name!r}")
            if not new.loras:
                new = dataclasses.replace(new, loras=self._loras)
            if self._temporal:
                new = dataclasses.replace(new, temporal=dataclasses.replace(new.temporal, **self._temporal))
            if self._sticky:
                new = dataclasses.replace(new, **self._sticky)
        self._switch(new, f"style {new.name}")

    def _switch(self, new: StyleConfig, what: str) -> None:
        raw = self._raw_stylizer
        if new.passthrough or raw is None:
            self._set_now(new, what)
            return
        running = self.pending_style or raw.style
        if new.loras != running.loras:
            if getattr(raw, "loras", None) is None:
                raise UsageError(f"{what}: this stylizer cannot switch LoRAs; restart with the new --lora")
            self._prepare(lambda: raw.loras.prepare(new.loras), new,
                          f"{what} (LoRAs [{_loras_text(new.loras)}], in place)")
        elif new.controls != running.controls:
            loader = self._controls_loader
            if loader is None:
                raise UsageError(f"{what}: a control change needs its ControlNets loaded; restart with --control "
                                 f"{','.join(new.controls)}")
            self._prepare(lambda: loader(new), new,
                          f"{what} (controls {','.join(new.controls)}: ControlNets loaded, the frame step is rebuilt)")
        elif new.uses_cfg != raw.style.uses_cfg:
            prepare = getattr(raw, "prepare_style", None) or raw.conditioning  # the other frame-step variant too
            self._prepare(lambda: prepare(new), new,
                          f"{what} (guidance {'on' if new.uses_cfg else 'off'}: the other frame-step variant)")
        elif self._pending is not None:  # same LoRAs/guidance as the style being prepared: it starts with this one
            fut, _, pending_what = self._pending
            self._pending = (fut, new, pending_what)
            self.style = new
            log.info("%s: applied with the change being prepared", what)
        else:
            self._set_now(new, what)

    def _set_now(self, new: StyleConfig, what: str) -> None:
        self.processor.set_style(new)
        self._pending = None  # a newer request supersedes one still being prepared
        self.style = new
        log.info("%s applied", what)

    def _controls_or_region(self, name: str, value: Any) -> None:
        """``controls LIST``; ``region [all|person|background]`` and ``background [keep|blur|FILE]`` (no value: the
        next choice)."""
        if name == "controls":
            base = self._diffusion("controls")
            self._switch(dataclasses.replace(base, controls=check_controls(str(value), "controls")), f"controls {value}")
            return
        cur = self.processor.region
        image = None
        if name == "region":
            choice = REGION_CHOICES[(REGION_CHOICES.index(cur.region) + 1) % len(REGION_CHOICES)] if value is None else str(value)
            new = dataclasses.replace(cur, region=choice, background=cur.background if choice == "person" else "keep")
        else:
            choice = ("blur" if cur.background == "keep" else "keep") if value is None else str(value)
            new = dataclasses.replace(cur, background=choice)  # validates: a background needs region person
            if new.background_file is not None:
                from realtime.io.images import read_image

                image = read_image(check_input_file(new.background_file, "background image"))
        self.processor.set_region(new, image)
        log.info("region %s, background %s", new.region, new.background)

    def _prepare(self, fn: Callable[[], Any], new: StyleConfig, what: str) -> None:
        """Run ``fn`` (the slow part of a change) on a background worker while the current style keeps running;
        :meth:`tick` switches ``new`` in when it is done."""
        if self._encoder is None:
            self._encoder = Worker("stylecam-prepare")
        self._pending = (self._encoder.submit(fn), new, what)
        self.style = new
        log.info("%s: preparing it while the current style keeps running", what)

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.stop()
            self._encoder = None


def scaled_loras(loras: tuple[LoraSpec, ...], scales: tuple[float, ...]) -> tuple[LoraSpec, ...]:
    """The running LoRAs with new scales: one scale for all, or one per LoRA in order."""
    if not loras:
        raise UsageError("lora-scale: no LoRA is running (set them with lora PATH[:SCALE] ...)")
    if len(scales) not in (1, len(loras)):
        raise UsageError(f"lora-scale: {len(scales)} scales for {len(loras)} LoRAs; give one, or one per LoRA")
    full = scales * len(loras) if len(scales) == 1 else scales
    return tuple(dataclasses.replace(x, scale=float(s)) for x, s in zip(loras, full, strict=True))


def _loras_text(loras: tuple[LoraSpec, ...]) -> str:
    return " ".join(map(str, loras)) or "none"
