"""Soak a live session: leaks, slow-downs and recording faults over minutes.

    python scripts/soak.py --minutes 10 [--model random:tiny] --json soak.json [-- stylecam live options]

The logic lives in :mod:`realtime.bench.soak`, the command line in :mod:`realtime.cli.soak` (``--help`` explains
every option); this is its entry point.
"""
from __future__ import annotations

import sys

from realtime.cli.soak import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
