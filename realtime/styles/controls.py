"""Control lists and scales: the checks behind ``StyleConfig.controls`` and ``--control`` / ``--control-scale``
(presets may set ``controls = ["canny", "depth"]`` and each control's scale). A root module beside the presets: it
imports only ``realtime.errors``; :mod:`realtime.config` re-exports its names.
"""
from __future__ import annotations

from typing import Any

from realtime.errors import UsageError

#: The control types (ControlNets) a style may enable, in the order the frame step takes them (docs/design.md §4).
CONTROL_TYPES = ("canny", "pose", "depth")


def shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_controls(controls: Any, what: str = "--control") -> tuple[str, ...]:
    """``controls`` (a sequence of names, or one comma-separated string) as a tuple in :data:`CONTROL_TYPES` order,
    without repeats; an unknown name, an empty list or a non-string is a :class:`UsageError` naming ``what``."""
    items = controls.split(",") if isinstance(controls, str) else controls
    if not isinstance(items, (list, tuple)) or any(not isinstance(x, str) for x in items):
        raise UsageError(f"{what}={shown(controls)}: must be a list of control names ({', '.join(CONTROL_TYPES)})")
    names = [x.strip().lower() for x in items if x.strip()]
    given = shown(controls if isinstance(controls, str) else ",".join(items), 40)
    unknown = [x for x in names if x not in CONTROL_TYPES]
    if unknown:
        raise UsageError(f"{what} {given}: unknown control {shown(unknown[0], 30)}; choose from {', '.join(CONTROL_TYPES)}")
    if not names:
        raise UsageError(f"{what} {given}: no control given; choose from {', '.join(CONTROL_TYPES)}")
    return tuple(c for c in CONTROL_TYPES if c in names)


def parse_control_scales(text: str) -> dict[str, float]:
    """``--control-scale``: a bare number (the Canny scale, as before) or ``name=X,name=Y`` -> {control: scale}.
    Unknown names, repeats and values that are not numbers are a :class:`UsageError`; ranges are the style's check."""
    text = str(text).strip()
    try:
        return {"canny": float(text)}
    except ValueError:
        pass
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in CONTROL_TYPES:
            raise UsageError(f"--control-scale {shown(text, 60)}: expected a number or NAME=X,... with NAME one of "
                             f"{', '.join(CONTROL_TYPES)}")
        if name in out:
            raise UsageError(f"--control-scale {shown(text, 60)}: {name} given twice")
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"--control-scale {name}={shown(value.strip(), 30)}: not a number") from None
    return out


def scale_overrides(scales: dict[str, float], controls: tuple[str, ...] | None = None) -> dict[str, float]:
    """:class:`StyleConfig` fields for ``--control-scale`` values; given ``controls`` (those that run), a scale for a
    control that is not among them is a :class:`UsageError` (it would do nothing)."""
    for name in scales:
        if controls is not None and name not in controls:
            raise UsageError(f"--control-scale {name}={scales[name]:g}: the {name} control is not enabled "
                             f"(controls: {','.join(controls)}); add it with --control {','.join((*controls, name))}")
    return {("control_scale" if k == "canny" else f"{k}_scale"): v for k, v in scales.items()}
