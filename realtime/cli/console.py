"""Command-line plumbing shared by ``stylecam`` and the scripts: logging set-up, quiet libraries, exit codes.

Exit codes (docs/design.md §7): 0 success; 2 bad input/usage or something this machine lacks (:class:`~realtime.errors.InputError`
and the engines' ``BackendUnavailable``); 1 runtime failure; 130 interrupted by Ctrl-C. One line on stderr, no traceback
unless ``--debug``.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from collections.abc import Callable

from realtime.errors import InputError

log = logging.getLogger("stylecam")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def quiet_libraries(debug: bool = False) -> None:
    """Silence the log spam of OpenCV, MediaPipe (glog/absl), TensorFlow Lite, transformers and diffusers."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # huggingface_hub sets its own logger level from this at import (after our levels below), so say it here too.
    os.environ.setdefault("HF_HUB_VERBOSITY", "info" if debug else "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not debug:
        warnings.filterwarnings("ignore")
        for name in ("absl", "PIL", "matplotlib", "urllib3", "httpx", "huggingface_hub", "torch", "onnx"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # diffusers/transformers log their own errors before raising; ours is the one line the user sees.
        for name in ("diffusers", "transformers", "peft"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def setup_logging(verbose: int = 0, debug: bool = False, quiet: bool = False) -> None:
    """Configure the root handler once (only command-line entry points call this)."""
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if not quiet else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("stylecam", "realtime", "engines", "scripts", "benchmarks", "__main__"):
        logging.getLogger(name).setLevel(level)
    quiet_libraries(debug)


def printable(text: str) -> str:
    """``text`` as one terminal line: line breaks and other control or format characters (``\\n``, ``\\r``, NEL,
    U+2028, bidi overrides) written as escapes, so a value the user typed cannot split or disguise the error line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


#: the longest error line shown (a value the user gave is cut, not the line split)
MAX_LINE = 1000


def _name_too_long(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG


def one_line(exc: BaseException) -> str:
    """The error line: the first line of the message (a library's multi-line dump stays out), its control and format
    characters escaped by :func:`printable`, at most :data:`MAX_LINE` characters; the exception's type first unless it
    is a project error. A path too long for the file system (any command, any path option) says so."""
    if _name_too_long(exc):
        name = str(getattr(exc, "filename", "") or "")
        shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} characters)"
        return printable(f"{shown!r}: a file name too long for the file system (at most 255 bytes a name)")
    text = str(exc).strip().split("\n")[0].strip()
    msg = printable(text) if text else type(exc).__name__
    if len(msg) > MAX_LINE:
        msg = f"{msg[:MAX_LINE - 40]}... ({len(msg)} characters)"
    return msg if exit_code_for(exc) == EXIT_USAGE else f"{type(exc).__name__}: {msg}"


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, InputError) or _name_too_long(exc):  # only a path the user typed is that long
        return EXIT_USAGE
    # engines/ is independent of realtime/: its user-fixable errors are mapped here by class name.
    if type(exc).__name__ in {"BackendUnavailable", "EngineOptionError", "CacheDirError"}:
        return EXIT_USAGE
    return EXIT_FAILURE


def run_main(fn: Callable[[], int | None], *, debug: bool, interrupted_code: int = EXIT_INTERRUPTED) -> int:
    """Run ``fn`` and turn exceptions into one line on stderr plus the exit code (traceback only with ``debug``)."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        sys.stderr.write("stylecam: interrupted\n")
        return interrupted_code
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that turns any error into an exit code
        if debug:
            log.exception("failed")
        sys.stderr.write(f"stylecam: error: {one_line(exc)}\n")
        return exit_code_for(exc)
