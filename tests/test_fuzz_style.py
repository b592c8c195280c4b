"""Fuzz the style TOML loader (:func:`realtime.config.load_style`) with hypothesis: generated style files (wrong
types, missing and extra keys, out-of-range numbers, NaN/inf, huge numbers and strings, nested tables, arrays, dates,
deep nesting, bytes that are not TOML or not UTF-8). The outcome is a :class:`~realtime.config.StyleConfig` or the
project's usage error (exit 2) naming the file; never another exception.

Budget: ``CI_EXAMPLES`` in the default suite; ``STYLECAM_FUZZ_EXAMPLES=N pytest -m fuzz`` for more.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import ci_settings, long_run, long_settings
from realtime.config import StyleConfig, load_style
from realtime.errors import InputError

CI_EXAMPLES = 300

STYLE_KEYS = ["prompt", "negative_prompt", "strength", "control_scale", "guidance", "canny_low", "canny_high",
              "description", "passthrough"]
TEMPORAL_KEYS = ["blend", "motion_adaptive", "motion_threshold", "similarity_filter", "similarity_threshold",
                 "max_skips"]

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_keys = st.one_of(st.sampled_from(STYLE_KEYS + TEMPORAL_KEYS + ["path", "scale", "lora", "temporal", "name"]), _text)
_scalars = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([0, 1, -1, 255, 256, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e-320, 0.5]),
    st.booleans(), _text, st.sampled_from(["a" * 200_000, "", " ", "ink drawing", "high"]),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)), st.dates(), st.times(),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


def toml_key(key: str) -> str:
    return json.dumps(key)  # a basic string key: always valid TOML for any text


def toml_value(v: object) -> str:
    """A TOML inline value (the writer the loader's fuzzing needs: floats NaN/inf, dates, nested inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are TOML basic-string escapes (\\uXXXX, \\n, \\")
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def good_values() -> st.SearchStrategy[dict[str, object]]:
    """Values in range for every key, so the other keys' faults are what the loader meets."""
    return st.fixed_dictionaries({}, optional={
        "prompt": st.sampled_from(["ink drawing", "anime, clean lines"]), "strength": st.floats(0.05, 1.0),
        "control_scale": st.floats(0, 5), "guidance": st.floats(1, 30), "description": st.just("mine"),
        "negative_prompt": st.just("blurry")})


@st.composite
def style_documents(draw: st.DrawFn) -> bytes:
    """A style file: mostly a structured TOML document (keys right or wrong, values of any type), sometimes a
    syntactically broken, deeply nested or non-UTF-8 one."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        depth = draw(st.sampled_from([50, 500, 5000, 50000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a=", "}")]))
        return f'prompt = "x"\nstrength = {opener * depth}1{closer * depth}\n'.encode()
    top = draw(good_values())
    top.update(draw(st.dictionaries(st.sampled_from(STYLE_KEYS), _values, max_size=3)))
    if draw(st.booleans()):
        top.update(draw(st.dictionaries(_keys, _values, max_size=2)))  # extra (unknown or odd) keys
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in top.items() if k not in ("temporal", "lora")]
    if draw(st.booleans()):
        temporal = draw(st.dictionaries(st.one_of(st.sampled_from(TEMPORAL_KEYS), _keys), _values, max_size=4))
        lines.append("[temporal]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in temporal.items()]
    for lora in draw(st.lists(st.dictionaries(st.sampled_from(["path", "scale", "x"]), _values, max_size=3),
                              max_size=2)):
        lines.append("[[lora]]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in lora.items()]
    text = "\n".join(lines) + "\n"
    if kind == 2 and text:  # a broken byte somewhere
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(["=", "[", '"', "\x00", "\\", "\n["])) + text[at:]
    return text.encode("utf-8")


def check_style_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mine.toml"
        path.write_bytes(data)
        try:
            style = load_style(str(path))
        except InputError as e:
            msg = str(e)
            assert str(path) in msg, f"the error names the file: {msg[:300]!r}"
            assert len(msg) < 2000, f"a one-line message, not a dump: {len(msg)} characters"
            return
        assert isinstance(style, StyleConfig)
        assert style.name == "mine"


@ci_settings(CI_EXAMPLES)
@given(style_documents())
def test_fuzz_style_file(data: bytes) -> None:
    check_style_file(data)


@pytest.mark.fuzz
@long_run
@long_settings()
@given(style_documents())
def test_fuzz_style_file_long(data: bytes) -> None:
    check_style_file(data)
