"""``stylecam``: image | live | clip | bench | build | styles | devices | cache | doctor | models.

Only this module (and the scripts' ``main``) configures logging and turns errors into exit codes (GUIDE 6.12).
Heavy libraries are imported inside the commands, so ``stylecam --help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from realtime import __version__
from realtime.cli.console import EXIT_USAGE, run_main, setup_logging
from realtime.cli.options import add_common_options


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _add_global(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="tracebacks and library logs")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stylecam", description="Real-time video stylization: you, live, as anime (and more).")
    parser.add_argument("--version", action="version", version=f"stylecam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("image", help="stylize one image", description="Stylize one image.")
    p.add_argument("input", help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp, ...)")
    p.add_argument("--output-size", default=None, help="output WxH (default: the input's size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_common_options(p)
    _add_global(p)
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser("styles", help="list the style presets", description="List the style presets and their settings.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_global(p)
    p.set_defaults(func=_cmd_styles)

    p = sub.add_parser("doctor", help="check this machine", description="Check Python, torch, GPU, TensorRT, virtual camera, face model and model cache.")
    p.add_argument("--face-model", default=None, help="face model to check (default: STYLECAM_FACE_MODEL, then the cache)")
    _add_global(p)
    p.set_defaults(func=_cmd_doctor)

    # Commands defined next to their code: each module exposes add_parser(subparsers) that sets func=run(args).
    # The modules import their heavy libraries inside run(), so registering them keeps --help fast.
    for module in _COMMAND_MODULES:
        importlib.import_module(f"realtime.{module}").add_parser(sub, _add_global)
    return parser


#: Modules that register a subcommand (``add_parser(subparsers, add_global_options)``), in help order.
_COMMAND_MODULES: tuple[str, ...] = ("cli.clip", "cli.build", "cli.live", "cli.devices", "cli.demo", "cli.bench", "cli.models")


def _cmd_image(args: argparse.Namespace) -> int:
    from realtime.cli.image import stylize_image

    return stylize_image(args)


def _cmd_styles(args: argparse.Namespace) -> int:
    from realtime.config import builtin_style_names, load_style

    styles = [load_style(n) for n in builtin_style_names()]
    if args.json:
        import dataclasses

        print(json.dumps([dataclasses.asdict(s) for s in styles], indent=2))
        return 0
    print(f"{'style':<12} {'strength':>8} {'control':>7} {'guidance':>8} {'blend':>5}  description")
    for s in styles:
        if s.passthrough:
            print(f"{s.name:<12} {'-':>8} {'-':>7} {'-':>8} {'-':>5}  {s.description}")
        else:
            loras = f" [LoRA: {', '.join(map(str, s.loras))}]" if s.loras else ""
            print(f"{s.name:<12} {s.strength:>8.2f} {s.control_scale:>7.2f} {s.guidance:>8.1f} {s.temporal.blend:>5.2f}  {s.description}{loras}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from realtime.cli.doctor import run_doctor

    return run_doctor(args)


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
