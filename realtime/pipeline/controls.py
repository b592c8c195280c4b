"""Runtime control of ``stylecam live`` without a window: commands on stdin and a watched control file.

Both produce :class:`Command` objects that :class:`~realtime.pipeline.session.LiveSession` applies between frames; window keys
(:data:`realtime.io.sinks.KEY_ACTIONS`) map onto the same commands through :func:`key_command`.

Command lines (stdin), one per line, ``#`` starts a comment::

    style NAME | next | prev        prompt TEXT        negative TEXT
    lora PATH[:SCALE] [PATH[:SCALE] ...] | none   (files read in the background, then written in place)
    lora-scale X [X ...]            (new scales for the running LoRAs: one for all, or one each)
    prompt-mix W TEXT | W TEXT ...  (a weighted mix of prompts, e.g. prompt-mix 0.7 anime portrait | 0.3 watercolor)
    prompt-blend slerp | linear     transition N  (later prompt changes blend over N frames; 0 jumps)
    strength X    control X    guidance X    seed N    seed-blend SEED T  (noise slerped towards SEED's by T)
    blend [X | on | off]    motion-threshold X    motion-adaptive on|off
    similarity on | off | X (threshold)    max-skips N
    bypass [on|off]    blank [on|off]    mirror [on|off]    framing [on|off]    overlay [on|off]
    controls canny,pose,depth (loaded in the background)    region [all|person|background]    background [keep|blur|FILE]
    stats    help    quit

The control file (TOML, or JSON when it ends in ``.json``) holds settings to apply; it is re-read whenever its
modification time or size changes, and its keys are applied in a fixed order (``style`` first)::

    style = "cel-shaded"
    lora = ["ghibli.safetensors:0.8"]      # or one string, or "none" / []
    prompt_mix = [["anime portrait", 0.7], ["watercolor painting", 0.3]]
    transition_frames = 8
    seed_blend = [7, 0.5]
    strength = 0.6
    [temporal]
    blend = 0.5
"""
from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Protocol

from realtime.config import LoraSpec
from realtime.errors import OutputError, UsageError

log = logging.getLogger(__name__)

HELP = ("commands: style NAME|next|prev, lora PATH[:SCALE]...|none, lora-scale X..., prompt TEXT, "
        "prompt-mix W TEXT | W TEXT..., prompt-blend slerp|linear, transition N, negative TEXT, strength X, "
        "control X, guidance X, seed N, seed-blend SEED T, "
        "blend [X|on|off], motion-threshold X, motion-adaptive on|off, similarity on|off|X, max-skips N, "
        "bypass, blank, mirror, framing, overlay (each [on|off]), controls LIST, region [all|person|background], "
        "background [keep|blur|FILE], stats, help, quit")

_FLOAT = {"strength", "control", "guidance", "motion-threshold"}
_TOGGLES = {"bypass", "blank", "mirror", "framing", "overlay", "motion-adaptive"}
_TEXT = {"prompt", "negative"}
_BARE = {"stats", "help", "quit"}
_NEW = {"lora-scale", "prompt-mix", "prompt-blend", "transition", "seed-blend"}
_ALIASES = {"control-scale": "control", "control_scale": "control", "negative-prompt": "negative",
            "negative_prompt": "negative", "motion_threshold": "motion-threshold", "motion_adaptive": "motion-adaptive",
            "max_skips": "max-skips", "lora_scale": "lora-scale", "prompt_mix": "prompt-mix", "mix": "prompt-mix",
            "prompt_blend": "prompt-blend", "transition_frames": "transition", "seed_blend": "seed-blend", "exit": "quit", "q": "quit", "next": "style next", "prev": "style prev"}
_CYCLES = {"region", "background"}  # no value: the next choice (window keys r and g)
COMMAND_NAMES = tuple(sorted(_FLOAT | _TOGGLES | _TEXT | _BARE | _NEW | _CYCLES | {"style", "lora", "seed", "blend",
                                                                                   "similarity", "max-skips",
                                                                                   "controls"}))


#: What a command carries: a number, a text, on/off, LoRA specs (``lora``), scales (``lora-scale``), a prompt mix
#: (``(text, weight)`` pairs), a seed blend (``(seed, t)``), or None (a toggle, no argument).
CommandValue = (float | int | str | bool | tuple[LoraSpec, ...] | tuple[float, ...] | tuple[tuple[str, float], ...]
                | tuple[int, float] | None)


@dataclass(frozen=True)
class Command:
    """One runtime change. ``name`` is one of :data:`COMMAND_NAMES`; ``value``: a float, int, str, bool, the LoRA
    specs of ``lora``, or None (toggle / no argument). ``source`` says where it came from (for log lines)."""

    name: str
    value: CommandValue = None
    source: str = ""

    def __str__(self) -> str:
        if self.name == "lora":
            return "lora " + (" ".join(map(str, self.value)) or "none")
        if self.name == "prompt-mix":
            return "prompt-mix " + " | ".join(f"{w:g} {t}" for t, w in self.value)
        if self.name in ("lora-scale", "seed-blend"):
            return f"{self.name} " + " ".join(f"{x:g}" for x in self.value)
        return self.name if self.value is None else f"{self.name} {self.value}"


class CommandSource(Protocol):
    """Where runtime commands come from (:class:`StdinCommands`, :class:`ControlFile`, a test's script).

    ``poll()``: the commands that came in since the last call, oldest first (an empty list when none). It never
    blocks: the live loop calls it on its own thread between two frames. A bad line is logged by the source and
    skipped, never raised.
    """

    def poll(self) -> list[Command]: ...


def drain(q: "queue.Queue[Command]") -> list[Command]:
    """Every command waiting in ``q``, oldest first, without blocking (a queue-fed :class:`CommandSource`'s poll)."""
    out: list[Command] = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def parse_loras(items: list[str]) -> tuple[LoraSpec, ...]:
    """``["a.safetensors:0.8", "b.safetensors"]`` -> LoRA specs; ``[]``, ``["none"]`` or ``["off"]`` -> no LoRA."""
    if len(items) == 1 and items[0].strip().lower() in ("none", "off"):
        return ()
    return tuple(LoraSpec.parse(x.strip()) for x in items if x.strip())


def _switch(word: str, name: str) -> bool:
    w = word.lower()
    if w in ("on", "true", "yes", "1"):
        return True
    if w in ("off", "false", "no", "0"):
        return False
    raise UsageError(f"{name} {word!r}: expected on or off")


def _number(text: str, name: str, kind: type[float] | type[int] = float) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected {'an integer' if kind is int else 'a number'}") from None


def parse_prompt_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``"0.7 anime portrait | 0.3 watercolor"`` -> ``(("anime portrait", 0.7), ("watercolor", 0.3))``."""
    out = []
    for part in text.split("|"):
        weight, _, prompt = part.strip().partition(" ")
        if not prompt.strip():
            raise UsageError(f"prompt-mix {part.strip()!r}: each part is WEIGHT TEXT (e.g. 0.7 anime portrait)")
        w = _number(weight, "prompt-mix weight")
        if not 0 <= w <= 100:
            raise UsageError(f"prompt-mix weight {weight}: must be in [0, 100]")
        out.append((prompt.strip(), float(w)))
    if not sum(w for _, w in out) > 0:
        raise UsageError("prompt-mix: the weights sum to 0")
    return tuple(out)


def _parse_new(name: str, rest: str) -> CommandValue:
    """The values of the LoRA-scale, prompt-mix, prompt-blend, transition and seed-blend commands."""
    if name == "lora-scale":
        return tuple(float(_number(x, name)) for x in rest.split())
    if name == "prompt-mix":
        return parse_prompt_mix(rest)
    if name == "prompt-blend":
        if rest.lower() not in ("slerp", "linear"):
            raise UsageError(f"prompt-blend {rest!r}: expected slerp or linear")
        return rest.lower()
    if name == "transition":
        return int(_number(rest, name, int))
    parts = rest.split()
    if len(parts) != 2:
        raise UsageError(f"seed-blend {rest!r}: expected SEED T (e.g. seed-blend 7 0.5)")
    return int(_number(parts[0], name, int)), float(_number(parts[1], name))


def parse_command(line: str, source: str = "stdin") -> Command | None:
    """One command line -> a :class:`Command` (None for a blank line or a comment); :class:`UsageError` with a
    one-line message for anything else."""
    text = line.strip()
    if not text.lower().startswith(("prompt", "negative", "mix")):  # a prompt may contain '#'
        text = text.split("#", 1)[0].strip()
    if not text:
        return None
    head, _, rest = text.partition(" ")
    name, rest = head.lower(), rest.strip()
    if name in _ALIASES:
        alias = _ALIASES[name].split(" ")
        name, rest = alias[0], (alias[1] if len(alias) > 1 else rest)
    if name in _TEXT:
        if not rest:
            raise UsageError(f"{name} needs a text")
        return Command(name, rest, source)
    if name in _BARE:
        if rest:
            raise UsageError(f"{name} takes no value")
        return Command(name, None, source)
    if name in _TOGGLES:
        return Command(name, None if not rest else _switch(rest, name), source)
    if name in _CYCLES:
        return Command(name, rest or None, source)
    if not rest and name != "blend":
        raise UsageError(f"{name} needs a value" if name in COMMAND_NAMES else f"unknown command {name!r}; {HELP}")
    if name in ("style", "controls"):
        return Command(name, rest, source)
    if name in _NEW:
        return Command(name, _parse_new(name, rest), source)
    if name == "lora":  # paths with spaces: use the control file's list
        return Command(name, parse_loras(rest.split()), source)
    if name in _FLOAT:
        return Command(name, _number(rest, name), source)
    if name in ("seed", "max-skips"):
        return Command(name, _number(rest, name, int), source)
    if name == "blend":
        if not rest:
            return Command(name, None, source)  # toggle
        if rest.lower() in ("on", "off", "true", "false", "yes", "no"):
            return Command(name, _switch(rest, name), source)
        return Command(name, _number(rest, name), source)
    if name == "similarity":
        if rest.lower() in ("on", "off", "true", "false", "yes", "no"):
            return Command(name, _switch(rest, name), source)
        return Command(name, _number(rest, name), source)
    raise UsageError(f"unknown command {name!r}; {HELP}")


#: Window key actions (:data:`realtime.io.sinks.KEY_ACTIONS` values) as commands.
_KEY_COMMANDS = {
    "quit": Command("quit"), "mirror": Command("mirror"), "next_style": Command("style", "next"),
    "prev_style": Command("style", "prev"), "framing": Command("framing"), "blend": Command("blend"),
    "overlay": Command("overlay"), "bypass": Command("bypass"), "blank": Command("blank"),
    "region": Command("region"), "background": Command("background"),
}


def key_command(action: str) -> Command | None:
    """A window key action -> its command (None for an unknown action)."""
    cmd = _KEY_COMMANDS.get(action)
    return None if cmd is None else Command(cmd.name, cmd.value, "window")


# --------------------------------------------------------------------------------------------------------- stdin
class StdinCommands:
    """Reads command lines from ``stream`` (default ``sys.stdin``) on a daemon thread; :meth:`poll` returns the
    commands parsed since the last call. Bad lines are logged (with the command list) and skipped; end of input just
    ends the reader (it is not a quit)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self._queue: queue.Queue[Command] = queue.Queue()
        self.lines = 0
        self._thread = threading.Thread(target=self._run, name="stylecam-stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._stream:
                self.lines += 1
                try:
                    cmd = parse_command(line, "stdin")
                except UsageError as e:
                    log.warning("stdin: %s", e)
                    continue
                if cmd is not None:
                    self._queue.put(cmd)
        except (OSError, ValueError) as e:  # stdin closed under us
            log.debug("stdin reader stopped: %s", e)

    def poll(self) -> list[Command]:
        return drain(self._queue)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Nothing to release: the daemon thread may stay blocked on a read until the process ends."""


def stdin_usable(stream: IO[str] | None = None) -> bool:
    """Reading commands from stdin is safe: it is not a terminal, or a terminal this process owns (a background job
    reading its terminal would be stopped by SIGTTIN)."""
    stream = stream if stream is not None else sys.stdin
    if stream is None or stream.closed:
        return False
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return True  # an in-memory stream
    try:
        if not os.isatty(fd):
            return True
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


# -------------------------------------------------------------------------------------------------- control file
_FILE_KEYS: dict[str, str] = {
    "style": "style", "lora": "lora", "loras": "lora", "lora_scale": "lora-scale", "transition_frames": "transition",
    "prompt_blend": "prompt-blend", "prompt": "prompt", "prompt_mix": "prompt-mix", "negative_prompt": "negative",
    "negative": "negative", "strength": "strength", "control_scale": "control", "control": "control",
    "guidance": "guidance", "seed": "seed", "seed_blend": "seed-blend",
    "blend": "blend", "motion_threshold": "motion-threshold", "motion_adaptive": "motion-adaptive",
    "similarity_filter": "similarity", "similarity_threshold": "similarity", "max_skips": "max-skips",
    "mirror": "mirror", "framing": "framing", "bypass": "bypass", "blank": "blank", "overlay": "overlay",
    "controls": "controls", "region": "region", "background": "background",
}
_FILE_ORDER = list(dict.fromkeys(_FILE_KEYS))  # style first, then the numbers, then the switches


def commands_from_mapping(data: dict[str, Any], source: str = "control file") -> list[Command]:
    """Settings (a parsed TOML/JSON table; a ``[temporal]`` table is flattened) -> commands in a fixed order."""
    flat = dict(data)
    temporal = flat.pop("temporal", {})
    if not isinstance(temporal, dict):
        raise UsageError("[temporal] must be a table")
    for k, v in temporal.items():
        flat.setdefault(k, v)
    unknown = sorted(set(flat) - set(_FILE_KEYS))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FILE_KEYS))}")
    cmds: list[Command] = []
    for key in _FILE_ORDER:
        if key not in flat:
            continue
        v, name = flat[key], _FILE_KEYS[key]
        if name in _TOGGLES or key == "similarity_filter":
            if not isinstance(v, bool):
                raise UsageError(f"{key} = {v!r}: expected true or false")
        elif name == "lora":
            items = [v] if isinstance(v, str) else v
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise UsageError(f"{key} = {v!r}: expected a string or a list of strings (PATH[:SCALE])")
            v = parse_loras(items)
        elif name in _NEW:
            v = _file_value(key, name, v)
        elif name in ("style", "prompt", "negative", "controls", "region", "background"):
            if not isinstance(v, str):
                raise UsageError(f"{key} = {v!r}: expected a string")
        elif name in ("seed", "max-skips"):
            if isinstance(v, bool) or not isinstance(v, int):
                raise UsageError(f"{key} = {v!r}: expected an integer")
        elif name == "blend" and isinstance(v, bool):
            pass
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UsageError(f"{key} = {v!r}: expected a number")
        if name in _FLOAT or key == "similarity_threshold" or (name == "blend" and not isinstance(v, bool)):
            v = float(v)
        cmds.append(Command(name, v, source))
    return cmds


def _file_value(key: str, name: str, v: Any) -> CommandValue:
    """A control-file value of a LoRA-scale, prompt-mix, prompt-blend, transition or seed-blend setting."""
    def number(x: Any) -> bool:
        return not isinstance(x, bool) and isinstance(x, (int, float))

    if name == "lora-scale":
        items = v if isinstance(v, list) else [v]
        if not items or not all(number(x) for x in items):
            raise UsageError(f"{key} = {v!r}: expected a number or a list of numbers")
        return tuple(float(x) for x in items)
    if name == "prompt-mix":
        pairs = [(x.get("prompt"), x.get("weight", 1.0)) if isinstance(x, dict) else tuple(x) if isinstance(x, list)
                 else None for x in (v if isinstance(v, list) else [None])]
        if not pairs or any(p is None or len(p) != 2 or not isinstance(p[0], str) or not number(p[1]) for p in pairs):
            raise UsageError(f"{key} = {v!r}: expected a list of [prompt, weight] pairs")
        mix = tuple((str(t).strip(), float(w)) for t, w in pairs)  # type: ignore[misc]
        if any(not t or not 0 <= w <= 100 for t, w in mix) or not sum(w for _, w in mix) > 0:
            raise UsageError(f"{key} = {v!r}: prompts must be non-empty, weights in [0, 100] with a positive sum")
        return mix
    if name == "transition":
        if isinstance(v, bool) or not isinstance(v, int):
            raise UsageError(f"{key} = {v!r}: expected an integer")
        return v
    if name == "prompt-blend":
        if not isinstance(v, str):
            raise UsageError(f"{key} = {v!r}: expected slerp or linear")
        return _parse_new(name, v)
    if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and not isinstance(v[0], bool)
            and number(v[1])):
        raise UsageError(f"{key} = {v!r}: expected [SEED, T]")
    return int(v[0]), float(v[1])


def read_control_file(path: Path) -> list[Command]:
    """Parse a control file (TOML, or JSON for ``.json``) into commands; :class:`UsageError` when it is invalid."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise UsageError(f"not valid JSON ({e})") from e
    else:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"not valid TOML ({e})") from e
    if not isinstance(data, dict):
        raise UsageError("expected a table of settings")
    return commands_from_mapping(data, f"control file {path.name}")


class ControlFile:
    """Watches ``path``: :meth:`poll` (called every frame) checks its modification time and size at most every
    ``interval_s`` seconds and, when they changed (or the file appeared), returns its commands. The file may be
    missing at start (it is applied when it appears); an invalid file is logged and ignored until it changes again."""

    def __init__(self, path: str | os.PathLike[str], interval_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path).expanduser()
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if self.path.is_dir():
            raise OutputError(f"--control-file {self.path} is a directory: give a file name")
        if not parent.is_dir():
            raise OutputError(f"--control-file: directory {parent} does not exist")
        if not interval_s >= 0:
            raise UsageError(f"control file interval_s={interval_s!r}: must be >= 0")
        self.interval_s = float(interval_s)
        self._clock = clock
        self._last_check = -float("inf")
        self._seen: tuple[int, int] | None = None
        self.reloads = 0
        if not self.path.exists():
            log.info("control file %s does not exist yet: it is applied when it appears", self.path)

    def poll(self) -> list[Command]:
        now = self._clock()
        if now - self._last_check < self.interval_s:
            return []
        self._last_check = now
        try:
            st = self.path.stat()
        except OSError:
            self._seen = None
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._seen:
            return []
        self._seen = stamp
        try:
            cmds = read_control_file(self.path)
        except (UsageError, OSError, UnicodeDecodeError) as e:
            log.warning("control file %s ignored: %s", self.path, e)
            return []
        self.reloads += 1
        log.info("control file %s: %s", self.path.name, ", ".join(map(str, cmds)) or "no settings")
        return cmds

    def close(self) -> None:
        pass
