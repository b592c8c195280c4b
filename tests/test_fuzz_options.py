"""Fuzz every command's options in-process (hypothesis): argument lists built from each parser's actions in
:func:`realtime.cli.main.build_parser` (values of the right and the wrong type, unknown options, repeated options).
The outcome is success (exit 0), the project's usage error (exit 2, one line on stderr) or reaching the work itself
(model loading, opening a device, measuring, clearing a cache: patched to raise a sentinel, which counts as success,
since every input is checked before those); never another exception (exit 1 or a raw traceback).

Budget: ``CI_EXAMPLES`` per command in the default suite; ``STYLECAM_FUZZ_EXAMPLES=N pytest -m fuzz`` for more.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import ci_settings, long_run, long_settings

CI_EXAMPLES = 50
HANG_S = 20  # an in-process command line that takes longer is a hang (the checks take milliseconds)


class Reached(Exception):
    """Raised by the patched work functions: the command got past its input checks."""


#: the work each command reaches once its inputs are good (module, attribute): loading models, opening a device,
#: measuring, writing a demo clip, touching the machine or the network, clearing a cache
WORK = [
    ("realtime.diffusion.build", "build_stylizer"),
    ("realtime.io.sources", "open_source"),
    ("realtime.cli.clip", "open_clip_job"),
    ("realtime.pipeline.ray_clip", "run_ray_batch"),  # `clip --ray`: connecting to (or starting) Ray
    ("realtime.bench.runner", "run_benchmark"),
    ("realtime.cli.demo", "make_demo_clip"),
    ("realtime.cli.devices", "collect"),
    ("realtime.cli.doctor", "doctor_lines"),
    ("realtime.cli.models", "collect_cached"),
    ("realtime.diffusion.pull", "model_info"),
    ("realtime.diffusion.pull", "download"),
    ("realtime.cli.panel", "Panel"),  # a web server listening on a port: opened only past the checks
    ("realtime.cli.generate", "make_images"),
]


def command_parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command (and sub-command) path -> its parser."""
    from realtime.cli.main import build_parser

    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if path:
            out[path] = p
        for a in subs:
            for name, sp in a.choices.items():
                walk(sp, (*path, name))

    walk(build_parser(), ())
    return out


COMMANDS = sorted(command_parsers())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small valid inputs the fuzzer may name: an image, a clip, a style file, a bench result, a text file."""
    from PIL import Image

    from media_files import make_clip

    d = tmp_path_factory.mktemp("fuzz-options")
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(d / "in.png")
    make_clip(d / "in.mp4", n=4, size=(64, 48))
    (d / "mine.toml").write_text('prompt = "ink"\nstrength = 0.5\n')
    (d / "result.json").write_text('{"runs": []}\n')
    (d / "notes.txt").write_text("hello\n")
    return d


#: values that look right for some option of some command: the fuzzer combines them with every option
INTERESTING = [
    "", " ", "-", "--", "0", "1", "-1", "2", "64", "0.5", "1e309", "-1e309", "nan", "inf", "-inf", "1e-320", "0x10",
    "99999999999999999999999", "true", "auto", "none", "cpu", "cuda", "cuda:0", "cuda:x", "mps", "fp16", "bf16", "eager",
    "compile", "onnxruntime", "tensorrt", "512x512", "64x64", "0x0", "7x7", "100000x100000", "-64x64", "1280x720",
    "anime", "sketch", "none", "mine.toml", "missing.toml", "notes.txt", "in.png", "in.mp4", "result.json",
    "out.png", "out.jpg", "out.mp4", "out.mkv", "out.webm", "out.xyz", "out.gif", "outdir/", "missing/out.png",
    "random:tiny", "random:sd-turbo", "random:nope", "owner/repo", "x.safetensors", "x.safetensors:2", "x:y:z",
    "libx264", "nosuchcodec", "yuv420p", "rgb24", "nosuchfmt", "step", "pipeline", "live", "step,nope", "eager,,",
    "1:02.5", "1:00:02", "1:99:99", "::", "12.5", "2026-01-01", "2026-13-40", "/dev/video99", "vcam", "window",
    "null", "file", "list", "clear", "a" * 5000, "é\u202e\u0301", "\t\n", "%s%n", "'\"", "../../x",
]

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)
_numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
VALUES = st.one_of(st.sampled_from(INTERESTING), _numbers, _text)


def _value(action: argparse.Action) -> st.SearchStrategy[str]:
    """A value for ``action``: one of its choices, or (more often) anything."""
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), VALUES)
    return VALUES


def _option_piece(action: argparse.Action) -> st.SearchStrategy[list[str]]:
    opts = st.sampled_from(action.option_strings)
    if action.nargs == 0:  # flags (store_true, count, const, BooleanOptionalAction's --no-x too)
        return opts.map(lambda o: [o])
    return st.one_of(
        st.tuples(opts, _value(action)).map(list),
        st.tuples(opts, _value(action)).map(lambda t: [f"{t[0]}={t[1]}"] if t[0].startswith("--") else list(t)),
        opts.map(lambda o: [o]),  # the value missing
    )


UNKNOWN = st.one_of(st.sampled_from(["--bogus", "-Z", "--styl", "--no-such=1", "---x", "-"]),
                    _text.map(lambda t: "--" + t))


#: a command line per command that gets past every check (to the patched work): the fuzzer adds to it
BASE = {
    ("image",): ["in.png", "-o", "fresh.png", "--model", "random:tiny"],
    ("generate",): ["a cat", "-o", "fresh.png", "--model", "random:tiny-xl"],
    ("clip",): ["in.mp4", "-o", "fresh.mp4", "--model", "random:tiny", "--no-face"],
    ("live",): ["--source", "in.mp4", "--output", "none", "--model", "random:tiny", "--no-stdin", "--no-face"],
    ("bench",): ["--model", "random:tiny", "--no-face"],
    ("build",): ["--model", "random:tiny", "--backend", "onnxruntime", "--device", "cpu"],
    ("demo",): ["--model", "random:tiny", "--out-dir", "demo"],
    ("cache",): ["list"],
    ("bench", "compare"): ["result.json"],
    ("models", "pull"): ["--model", "random:tiny"],
}


@st.composite
def argv_for(draw: st.DrawFn, path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    actions = [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                                                                  argparse._SubParsersAction))]
    optional = [a for a in actions if a.option_strings]
    positional = [a for a in actions if not a.option_strings]
    pieces: list[list[str]] = []
    if path in BASE and draw(st.booleans()):  # a good command line with one to three options added or changed
        for a in draw(st.lists(st.sampled_from(optional), min_size=1, max_size=3)):
            pieces.append(draw(_option_piece(a)))
        return [*path, *BASE[path], *(x for piece in pieces for x in piece)]
    for a in draw(st.lists(st.sampled_from(optional), max_size=8)) if optional else []:
        pieces.append(draw(_option_piece(a)))
    if optional and draw(st.booleans()):  # the same option twice
        a = draw(st.sampled_from(optional))
        pieces += [draw(_option_piece(a)), draw(_option_piece(a))]
    if draw(st.integers(0, 9)) == 0:
        pieces.append([draw(UNKNOWN)])
    for a in positional:
        if draw(st.integers(0, 9)) == 0:
            continue  # a required positional left out
        n = 1 if a.nargs in (None, 1) else draw(st.integers(1, 3))
        for _ in range(n):
            pieces.append([draw(_value(a))])
    pieces = draw(st.permutations(pieces))
    return [*path, *(x for piece in pieces for x in piece)]


@contextlib.contextmanager
def isolated_process_state():
    """What ``main`` changes in a process (logger levels, warning filters, SIGTERM, environment) restored after."""
    names = ["stylecam", "realtime", "engines", "scripts", "benchmarks", "__main__", "absl", "PIL", "matplotlib",
             "urllib3", "httpx", "huggingface_hub", "torch", "onnx", "diffusers", "transformers", "peft"]
    levels = {n: logging.getLogger(n).level for n in names}
    env = dict(os.environ)
    term = signal.getsignal(signal.SIGTERM)
    try:
        with warnings.catch_warnings():
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        os.environ.clear()
        os.environ.update(env)
        signal.signal(signal.SIGTERM, term)


def run_cli(argv: list[str]) -> tuple[int, str, str | None]:
    """``main(argv)`` in-process: (exit code, stderr, the work reached or None)."""
    from realtime.cli.main import main

    reached: list[str] = []
    err = io.StringIO()

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"{argv!r}: no answer within {HANG_S} s")

    with contextlib.ExitStack() as stack:
        alarm = signal.signal(signal.SIGALRM, hung)
        stack.callback(signal.signal, signal.SIGALRM, alarm)
        stack.callback(signal.alarm, 0)
        signal.alarm(HANG_S)
        stack.enter_context(isolated_process_state())
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for module, name in WORK:
            def work(*a: object, _n: str = f"{module}.{name}", **k: object) -> None:
                reached.append(_n)
                raise Reached(_n)

            mp.setattr(f"{module}.{name}", work)
        mp.setattr("engines.cache.EngineCache.clear", lambda *a, **k: (reached.append("clear"), [])[1])
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --help/--version (0) or its usage error (2)
            code = e.code if isinstance(e.code, int) else 2
    return code, err.getvalue(), reached[0] if reached else None


def check_outcome(argv: list[str]) -> None:
    code, err, reached = run_cli(argv)
    if reached is not None:
        return  # past every input check: the work itself is patched out
    lines = err.splitlines()
    assert code in (0, 2), f"{argv!r}: exit {code}, stderr {err!r}"
    assert "Traceback" not in err, f"{argv!r}: {err}"
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("stylecam"), f"{argv!r}: not one line: {err!r}"


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(workdir)
    return workdir


def _fuzz(path: tuple[str, ...], decorate) -> None:
    parser = command_parsers()[path]

    @decorate
    @given(argv_for(path, parser))
    def inner(argv: list[str]) -> None:
        check_outcome(argv)

    inner()


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_fuzz_command_options(path: tuple[str, ...], in_workdir: Path) -> None:
    _fuzz(path, ci_settings(CI_EXAMPLES))


@pytest.mark.fuzz
@long_run
@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_fuzz_command_options_long(path: tuple[str, ...], in_workdir: Path) -> None:
    _fuzz(path, long_settings())


def test_fuzz_covers_every_command() -> None:
    """The fuzzer walks the parser: every registered command is in its list (a new command is fuzzed too)."""
    names = {p[0] for p in COMMANDS}
    assert {"image", "generate", "clip", "live", "bench", "build", "cache", "styles", "doctor", "devices", "demo",
            "models"} <= names
    assert ("bench", "compare") in COMMANDS and ("models", "pull") in COMMANDS


def test_sentinel_reached_by_valid_image_command(in_workdir: Path) -> None:
    """The harness works: a good ``image`` command line gets past its checks to model loading (the sentinel)."""
    code, err, reached = run_cli(["image", "in.png", "-o", "fresh.png", "--model", "random:tiny"])
    assert reached == "realtime.diffusion.build.build_stylizer", (code, err)
    code, err, reached = run_cli(["image", "in.png", "-o", "fresh.png", "--strength", "2"])
    assert (code, reached) == (2, None) and "strength" in err
