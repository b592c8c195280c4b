"""Run ``stylecam`` in-process for a test: the exit code (argparse's SystemExit included) and what went to stderr."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from realtime.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], argv: Sequence[str],
            entry: Callable[[list[str]], int] = main) -> tuple[int, str]:
    try:
        code = entry(list(argv))
    except SystemExit as e:
        code = int(e.code)
    return code, capsys.readouterr().err
