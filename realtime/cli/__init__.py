"""The ``stylecam`` command line: one module per command, options, console and logging set-up (the only place
argparse lives). ``realtime.cli.main`` is the entry point."""
from realtime.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
