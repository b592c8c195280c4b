"""Prompt mixes and seed blends: the checks behind ``StyleConfig.prompt_mix`` / ``prompt_blend`` /
``transition_frames`` (presets may name a mix: ``[[prompt_mix]]`` tables with ``prompt`` and ``weight``) and
``RunConfig.seed_blend``, and the normalised mix the stylizer encodes (:mod:`realtime.diffusion.blending` mixes the
embeddings). A root module beside the presets: it imports only ``realtime.errors``.
"""
from __future__ import annotations

from typing import Any

from realtime.errors import UsageError


def shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


PROMPT_BLENDS = ("slerp", "linear")


def seed_blend_parts(value: Any, what: str = "seed blend") -> tuple[Any, float]:
    """``(seed, t)`` with ``t`` in [0, 1] (the seed itself is checked by ``config.check_seed``); else a
    :class:`UsageError` naming ``what``."""
    ok = isinstance(value, tuple) and len(value) == 2 and not isinstance(value[1], bool)
    if not ok or not isinstance(value[1], (int, float)) or not 0.0 <= value[1] <= 1.0:
        raise UsageError(f"{what} {shown(value)}: expected SEED:T with T in [0, 1]")
    return value[0], float(value[1])


def check_prompt_mix(owner: str, style: Any) -> None:
    if style.prompt_blend not in PROMPT_BLENDS:
        raise UsageError(f"{owner}.prompt_blend={shown(style.prompt_blend)}: expected slerp or linear")
    frames = style.transition_frames
    if isinstance(frames, bool) or not isinstance(frames, int) or not 0 <= frames <= 1000:
        raise UsageError(f"{owner}.transition_frames={style.transition_frames}: must be in [0, 1000]")
    mix = style.prompt_mix
    if not isinstance(mix, tuple):
        raise UsageError(f"{owner}.prompt_mix: expected (prompt, weight) pairs")
    for item in mix:
        ok = isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0].strip()
        if not ok or isinstance(item[1], bool) or not isinstance(item[1], (int, float)) or not 0 <= item[1] <= 100:
            raise UsageError(f"{owner}.prompt_mix entry {shown(item)}: needs a non-empty prompt and a weight in [0, 100]")
    if mix and not sum(w for _, w in mix) > 0:
        raise UsageError(f"{owner}.prompt_mix: the weights sum to 0; give at least one positive weight")


def prompt_mix(style: Any) -> tuple[tuple[str, float], ...]:
    """The style's prompts with weights that sum to 1 (``prompt`` alone, weight 1, when it has no mix)."""
    if not style.prompt_mix:
        return ((style.prompt, 1.0),)
    total = sum(w for _, w in style.prompt_mix)
    return tuple((t, float(w) / total) for t, w in style.prompt_mix)


def mix_from_toml(where: str, items: Any) -> tuple[tuple[str, float], ...]:
    """``[[prompt_mix]]`` tables (``prompt``, ``weight``) -> ``(text, weight)`` pairs."""
    if not isinstance(items, list) or any(not isinstance(x, dict) or set(x) - {"prompt", "weight"} or "prompt" not in x
                                          for x in items):
        raise UsageError(f"style {where}: each [[prompt_mix]] needs a prompt and optionally a weight (default 1)")
    return tuple((x["prompt"], x.get("weight", 1.0)) for x in items)
