"""The state of a live session that the user changes while it runs, and how each :class:`~realtime.pipeline.controls.Command`
is applied to the :class:`~realtime.pipeline.processor.FrameProcessor` without stalling more than one frame.

- Style, prompt, strength, scales and temporal settings go through ``FrameProcessor.set_style``: per-frame numbers are
  tensor inputs (no rebuild) and prompts are encoded off the frame path by the stylizer, so the old look keeps flowing
  until the new prompt is ready.
- A guidance on/off change (CFG doubles the batch: the frame step is rebuilt) first encodes the prompt pair on a
  background thread while the current style keeps running, then switches (logged).
- A LoRA change (the ``lora`` command, or a preset with other LoRAs) loads a second stylizer with the new LoRAs fused
  into freshly loaded weights (never a delta on top of the fused ones, so A -> B -> A gives exactly A) on a background
  thread, warms it up there, and swaps it in between two frames; the running style keeps flowing meanwhile, and the
  old stylizer is closed after the swap. It needs memory for both copies during the switch (logged). Without a
  ``loader`` (no way to load models) a LoRA change is refused with the fix (restart).
- Switching to another preset keeps the session's LoRAs and its temporal settings (from the command line or changed
  while running).
"""
from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Future
from typing import Any, Callable

from realtime.config import LoraSpec, StyleConfig, builtin_style_names, check_seed, load_style
from realtime.errors import InputError, UsageError
from realtime.pipeline.controls import HELP, Command
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.temporal import blend_toggled
from realtime.pipeline.watchdog import GuardedStylizer, LiveStylizer, Worker

log = logging.getLogger(__name__)

_STYLE_FIELDS = {"prompt": "prompt", "negative": "negative_prompt", "strength": "strength", "control": "control_scale",
                 "guidance": "guidance"}


class LiveSession:
    """Applies commands to ``processor``. ``style``: the running style; ``temporal_overrides``: TemporalConfig fields
    given on the command line (kept across preset switches); ``style_names``: the presets that ``style next/prev``
    (window keys n/p) cycle through (default: the built-in ones). Flags the loop reads: ``quit``, ``overlay``.
    ``on_stats`` is called by the ``stats`` command. ``loader(style) -> stylizer``: builds and warms up a
    :class:`~realtime.pipeline.watchdog.LiveStylizer` for ``style`` (called on a background thread) for LoRA changes;
    None refuses them. Everything but the loader runs on the loop's thread, between frames."""

    def __init__(self, processor: FrameProcessor, style: StyleConfig, *,
                 temporal_overrides: dict[str, Any] | None = None, style_names: list[str] | None = None,
                 on_stats: Callable[[], None] | None = None,
                 loader: Callable[[StyleConfig], LiveStylizer] | None = None) -> None:
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
        self._names = list(style_names) if style_names is not None else builtin_style_names()
        self._loras = style.loras
        self._remembered_blend: float | None = None
        self._pending: tuple[Future[Any], StyleConfig] | None = None
        self._encoder: Worker | None = None
        self._loader = loader
        self._loaded_loras = style.loras  # what the running stylizer has fused
        self._reload: tuple[Future[LiveStylizer], tuple[LoraSpec, ...]] | None = None
        self._reload_target: StyleConfig | None = None  # the latest style asked for with the LoRAs being loaded
        self._reloader: Worker | None = None

    # -------------------------------------------------------------------------------------------------- helpers
    @property
    def _raw_stylizer(self) -> LiveStylizer | None:
        """The running stylizer itself (inside the watchdog's guard, when there is one)."""
        s = self.processor.stylizer
        return s.stylizer if isinstance(s, GuardedStylizer) else s

    @property
    def pending_style(self) -> StyleConfig | None:
        """A style waiting to be switched in (its prompt encoding for guidance on/off, or its LoRAs loading), else
        None."""
        if self._reload is not None:
            return self._reload_target
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
        """Called once per frame: switches in a stylizer whose LoRAs finished loading, or a style whose prompt
        finished encoding, in the background."""
        if self._reload is not None and self._reload[0].done():
            self._finish_reload()
        if self._pending is None or not self._pending[0].done():
            return
        fut, style = self._pending
        self._pending = None
        exc = fut.exception()
        if exc is not None:
            log.warning("style %r not applied: encoding its prompt failed (%s)", style.name, exc)
            return
        try:
            self.processor.set_style(style)
        except (UsageError, InputError) as e:
            log.warning("style %r not applied: %s", style.name, e)
            return
        log.info("guidance %s: style %r switched in", "on" if style.uses_cfg else "off", style.name)

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
        elif name in _STYLE_FIELDS:
            base = self._diffusion(name)
            self._switch(dataclasses.replace(base, **{_STYLE_FIELDS[name]: v}), f"{name} {v}")
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
        self._switch(new, f"style {new.name}")

    def _switch(self, new: StyleConfig, what: str) -> None:
        if not new.passthrough and self.processor.stylizer is not None:
            wanted = self._reload[1] if self._reload is not None else self._loaded_loras
            if new.loras != wanted:
                self._start_reload(new, what)
                return
            if self._reload is not None:  # same LoRAs as the stylizer being loaded: it starts with this style
                self._reload_target = new
                self.style = new
                log.info("%s: applied when the new LoRAs are loaded", what)
                return
        raw = self._raw_stylizer
        if not new.passthrough and raw is not None and new.uses_cfg != raw.style.uses_cfg:
            if self._encoder is None:
                self._encoder = Worker("stylecam-guidance")
            fut = self._encoder.submit(lambda: raw.encode_prompt(new.prompt, new.negative_prompt, new.uses_cfg))
            self._pending = (fut, new)
            self.style = new
            log.info("%s: guidance %s needs a rebuilt frame step; preparing it while the current style keeps running",
                     what, "on" if new.uses_cfg else "off")
            return
        self.processor.set_style(new)
        self._pending = None  # a newer request supersedes one still being prepared
        self.style = new
        log.info("%s applied", what)

    # ------------------------------------------------------------------------------------------------- LoRAs
    def _start_reload(self, new: StyleConfig, what: str) -> None:
        if self._loader is None:
            raise UsageError(f"{what}: a LoRA change needs the models loaded again; restart with the new --lora")
        if self._reloader is None:
            self._reloader = Worker("stylecam-lora")
        if self._reload is not None:  # superseded: never swapped in; its stylizer is closed as soon as it exists
            old = self._reload[0]
            if not old.cancel():
                old.add_done_callback(_close_result)
        loader = self._loader
        self._reload = (self._reloader.submit(lambda: loader(new)), new.loras)
        self._reload_target = new
        self._pending = None  # a guidance switch being prepared is part of the new stylizer
        self.style = new
        log.info("%s: loading the models with LoRAs [%s] in the background while the current style keeps running "
                 "(memory for a second copy is needed until the switch)", what, _loras_text(new.loras))

    def _finish_reload(self) -> None:
        assert self._reload is not None and self._reload_target is not None
        fut, loras = self._reload
        target = self._reload_target
        self._reload = self._reload_target = None
        exc = fut.exception()
        if exc is not None:
            text = str(exc).strip()
            log.warning("LoRAs [%s] not loaded (%s): the running style stays", _loras_text(loras),
                        text.splitlines()[0] if text else type(exc).__name__)
            self._loras = self._loaded_loras
            running = self.processor.stylizer
            if not self.style.passthrough and running is not None:
                self.style = running.style
            return
        stylizer = fut.result()
        try:
            if stylizer.style != target:  # changed while loading (same LoRAs): prompt, numbers, guidance
                stylizer.set_style(target, wait=True)
        except (UsageError, InputError) as e:
            log.warning("style %r not applied to the new stylizer: %s", target.name, e)
        self.processor.swap_stylizer(stylizer, stylizer.style)
        self._loaded_loras = loras
        log.info("LoRAs [%s] loaded: style %r switched in", _loras_text(loras), stylizer.style.name)

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.stop()
            self._encoder = None
        if self._reload is not None:
            self._reload[0].add_done_callback(_close_result)
            self._reload = None
        if self._reloader is not None:
            self._reloader.stop()
            self._reloader = None


def _loras_text(loras: tuple[LoraSpec, ...]) -> str:
    return " ".join(map(str, loras)) or "none"


def _close_result(fut: Future[LiveStylizer]) -> None:
    """Close the stylizer a loader future produced (one that will never be used)."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()
