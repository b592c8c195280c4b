"""Checking inputs and outputs before any work, and writing outputs safely: a temporary file beside the target, renamed
over it only when complete.

:func:`check_input_file` and :func:`check_output_path` are the one place that says whether an input can be read and an
output can be written (missing, unreadable, not a file, the input itself, an existing file without ``--overwrite``).

Every command that writes a file goes through :func:`atomic_output`, so Ctrl-C, SIGTERM or an error never leaves a
half-written output or a stray temporary file, and the finished file gets the permissions a plain ``open()`` would give.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from realtime.errors import InputNotFound, OutputError

__all__ = ["atomic_output", "check_input_file", "check_output_path", "default_mode", "write_text_atomic"]


def check_input_file(path: str | os.PathLike[str], what: str = "input") -> Path:
    """``path`` as a :class:`Path` when it is a readable file, else :class:`InputNotFound` naming ``what``."""
    p = Path(path)
    if not p.exists():
        raise InputNotFound(f"{what} not found: {p}")
    if not p.is_file():
        raise InputNotFound(f"{what} is not a file: {p}")
    if not os.access(p, os.R_OK):
        raise InputNotFound(f"{what} is not readable: {p}")
    return p


def check_output_path(path: Path, *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Fail (:class:`OutputError`) unless ``path`` can be written: its directory exists and is writable, it is not a
    directory, not one of ``inputs``, and does not exist unless ``overwrite``."""
    parent = path.parent if str(path.parent) else Path(".")
    for src in inputs:
        if path.resolve() == src.resolve():
            raise OutputError(f"output {path} is the input: choose another name")
    if not parent.is_dir():
        if parent.exists():
            raise OutputError(f"output directory {parent} is a file, not a directory")
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {parent}")
    if path.is_dir():
        raise OutputError(f"output {path} is a directory: give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} exists: pass --overwrite to replace it")


def _umask() -> int:
    """The process umask, read from /proc (never set: ``os.umask`` is process-wide and races with other threads);
    022 where /proc has no answer."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def default_mode(path: Path) -> None:
    """Give a temporary file (``mkstemp`` makes it 0600) the permissions a new file would get: 0666 minus the umask."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (hidden, same suffix, so writers that go by the extension work); it is
    renamed onto ``path`` only if the block succeeds. On any failure or Ctrl-C the temporary file is removed and
    ``path`` is untouched. A directory that cannot be written is an :class:`OutputError`."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write in {parent}: {e.strerror or e}") from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ending in a newline) to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
