"""Plain regression tests for what the fuzzers (tests/test_fuzz_*.py) found: each failed before its fix."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from realtime.config import LoraSpec, StyleConfig, load_style, shown
from realtime.errors import InputError, UsageError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mine.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_deeply_nested_style_file_is_a_usage_error(tmp_path: Path) -> None:
    """Was RecursionError out of tomllib (exit 1 with a Python message)."""
    p = write(tmp_path, 'prompt = "x"\nstrength = ' + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UsageError, match="mine.toml.*nested too deeply"):
        load_style(str(p))


def test_style_file_integer_over_4300_digits_is_a_usage_error(tmp_path: Path) -> None:
    """Was ValueError (Python's integer string limit) out of tomllib: not caught as a TOML error."""
    p = write(tmp_path, 'prompt = "x"\nstrength = ' + "9" * 5000 + "\n")
    with pytest.raises(UsageError, match="mine.toml"):
        load_style(str(p))


def test_huge_value_in_a_style_file_gives_a_short_message(tmp_path: Path) -> None:
    """Was the whole value in the message (a 200 000-character line, or a nested table's full repr)."""
    p = write(tmp_path, f'prompt = "x"\nstrength = "{"h" * 200_000}"\n')
    with pytest.raises(UsageError) as e:
        load_style(str(p))
    msg = str(e.value)
    assert "mine.toml" in msg and "strength" in msg and "(0.0, 1.0]" in msg and "200002 characters" in msg
    assert len(msg) < 300
    p = write(tmp_path, 'prompt = "x"\nguidance = ' + "{a=" * 200 + "1" + "}" * 200 + "\n")
    with pytest.raises(UsageError, match=r"guidance=\{'a'.*\(dict, \d+ characters\)"):
        load_style(str(p))


def test_unknown_keys_are_named_briefly(tmp_path: Path) -> None:
    """An unknown [temporal] key is named (it was only 'allows only ...'); keys are cut short."""
    p = write(tmp_path, 'prompt = "x"\n[temporal]\nblendd = 0.5\n')
    with pytest.raises(UsageError, match="unknown key.*'blendd'.*allowed: blend"):
        load_style(str(p))
    p = write(tmp_path, f'prompt = "x"\n"{"k" * 10_000}" = 1\n')
    with pytest.raises(UsageError) as e:
        load_style(str(p))
    assert len(str(e.value)) < 400


@pytest.mark.parametrize("scale", [10**400, -(10**400)])
def test_lora_scale_too_large_for_a_float_is_a_usage_error(scale: int, tmp_path: Path) -> None:
    """Was OverflowError (math.isfinite of a huge TOML integer)."""
    with pytest.raises(UsageError, match=r"scale=.*must be a number in \[-10, 10\]"):
        LoraSpec("a.safetensors", scale)
    p = write(tmp_path, f'prompt = "x"\n[[lora]]\npath = "a.safetensors"\nscale = {scale}\n')
    with pytest.raises(UsageError, match="mine.toml"):
        load_style(str(p))


def test_style_name_too_long_for_the_file_system_is_a_usage_error() -> None:
    """``--style`` with a 5000-character name: was OSError (File name too long) from Path.is_file, exit 1."""
    with pytest.raises(UsageError, match="unknown style"):
        load_style("a" * 5000)
    with pytest.raises(InputError, match="style file not found") as e:
        load_style("b" * 5000 + ".toml")
    assert len(str(e.value)) < 400


def test_shown_never_fails_and_stays_short() -> None:
    assert shown(0.5) == "0.5"
    assert "digits" in shown(10**5000)
    assert len(shown("x" * 10**6)) < 120


def run_main(argv: list[str]) -> tuple[int, str]:
    from realtime.cli.main import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = int(e.code or 0)
    return code, err.getvalue()


def test_option_value_double_dash_is_a_value_not_an_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--max-index=--``: argparse stored [] untyped and ``devices`` crashed comparing a list (TypeError, exit 1)."""
    monkeypatch.setattr("realtime.cli.devices.collect", lambda *a: pytest.fail("the checks should refuse it"))
    code, err = run_main(["devices", "--max-index=--"])
    assert code == 2 and err.count("\n") == 1 and "--max-index" in err and "'--'" in err


def test_error_line_escapes_line_breaks_in_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value with a line break (or NEL, U+2028) could split the one error line: the line shows it escaped."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["styles", "--bogus\x85x"])
    assert code == 2 and len(err.splitlines()) == 1 and "\\x85" in err
    code, err = run_main(["image", "in\u2028put.png", "-o", "o.png"])
    assert code == 2 and len(err.splitlines()) == 1 and "\\u2028" in err


def test_passthrough_style_still_loads() -> None:
    assert isinstance(load_style("none"), StyleConfig) and load_style("none").passthrough


@pytest.mark.parametrize("argv", [
    ["image", "in.png", "-o", "o.png", "--model", "m" * 5000],
    ["image", "in.png", "-o", "o.png", "--model", "random:tiny", "--lora", "l" * 5000 + ".safetensors"],
    ["image", "i" * 5000 + ".png", "-o", "o.png", "--style", "none"],
    ["live", "--source", "s" * 5000, "--style", "none", "--output", "none", "--no-stdin"],
    ["clip", "in.mp4", "-o", "c" * 5000 + ".mp4", "--style", "none"],
])
def test_a_path_too_long_for_the_file_system_is_one_short_usage_line(argv: list[str], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Any path option longer than a file name may be: was ``OSError: [Errno 36] File name too long: '<5000
    characters>'``, exit 1, from whichever check met it first."""
    from PIL import Image
    import numpy as np

    from media_files import make_clip

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save("in.png")
    make_clip(tmp_path / "in.mp4", n=2, size=(32, 32))
    monkeypatch.setattr("realtime.diffusion.build.build_stylizer", lambda *a, **k: pytest.fail("model loading reached"))
    code, err = run_main(argv)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "too long for the file system" in err and len(err) < 300, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "in.png"]
