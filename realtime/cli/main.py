"""``stylecam``: image | generate | live | clip | bench | build | styles | devices | cache | doctor | models.

Only this module (and the scripts' ``main``) configures logging and turns errors into exit codes (docs/design.md §7).
Heavy libraries are imported inside the commands, so ``stylecam --help`` is fast.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from realtime import __version__
from realtime.cli import bench, build, clip, demo, devices, doctor, generate, image, live, models, panel, styles
from realtime.cli.console import EXIT_USAGE, run_main, setup_logging
from realtime.cli.options import Parser, add_global_options


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="stylecam", description="Real-time video stylization: you, live, as anime (and more).")
    parser.add_argument("--version", action="version", version=f"stylecam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    # One module per command, each with add_parser(subparsers, add_global) setting func=run(args); in help order.
    # They import their heavy libraries inside run(), so registering them keeps --help fast.
    for command in (image, generate, styles, doctor, clip, build, live, panel, devices, demo, bench, models):
        command.add_parser(sub, add_global_options)
    return parser


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, `kill`) stops like Ctrl-C: temporary outputs removed, live sinks finalized."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    setup_logging(verbose=args.verbose, debug=args.debug, quiet=args.quiet)
    _stop_on_sigterm()
    interrupted = getattr(args, "interrupted_code", 130)
    return run_main(lambda: args.func(args), debug=args.debug, interrupted_code=interrupted)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
