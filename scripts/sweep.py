"""Parameter sweep with a labelled comparison grid and a settings table.

    python scripts/sweep.py --input IMG [IMG ...] --out-dir DIR [--model SPEC] [axes] [stylizer options]

The logic lives in :mod:`realtime.research.sweep`; this is the command line over it (``--help`` explains every option).
"""
from __future__ import annotations

import sys

from realtime.cli.console import run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    from realtime.research.sweep import build_parser, sweep_main

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.debug, args.quiet)
    return run_main(lambda: sweep_main(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
