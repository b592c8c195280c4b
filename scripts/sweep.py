"""Parameter sweep with a labelled comparison grid and a settings table.

    python scripts/sweep.py --input IMG [IMG ...] --out-dir DIR [--model SPEC] [axes] [stylizer options]

The logic lives in :mod:`realtime.research.sweep`, the command line in :mod:`realtime.cli.sweep` (``--help`` explains
every option); this is its entry point.
"""
from __future__ import annotations

import sys

from realtime.cli.sweep import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
