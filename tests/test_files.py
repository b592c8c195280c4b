"""Atomic outputs: complete or absent, never half-written, with the permissions a plain open() gives."""
from __future__ import annotations

import stat

import pytest

from realtime.errors import OutputError
from realtime.files import atomic_output, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_finished_output_has_plain_open_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    out = tmp_path / "report.md"
    write_text_atomic(out, "| a |")
    assert out.read_text() == "| a |\n"  # a text file ends with a newline
    assert _mode(out) == _mode(plain)  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "report.md"]


def test_failure_leaves_target_untouched_and_no_temporary(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json"  # writers that go by the extension still work
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_that_cannot_hold_files_is_an_output_error(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(OutputError, match="cannot write in"):
        write_text_atomic(not_a_dir / "x.txt", "x")
