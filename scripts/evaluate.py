"""Quality metrics of a stylized image or clip against its input, written as JSON and a markdown table.

    python scripts/evaluate.py images INPUT OUTPUT [--json PATH] [--md PATH]
    python scripts/evaluate.py clip INPUT OUTPUT [--json PATH] [--md PATH]

The logic lives in :mod:`realtime.research.evaluation` and :mod:`realtime.research.metrics`, the command line in
:mod:`realtime.cli.evaluate`; this is its entry point. Exit codes: 0 done, 2 bad input or usage (missing file, not an
image/video, a model asked for but unavailable), 1 any other failure, 130 interrupted. Errors are one line on stderr
(a traceback with --debug).
"""
from __future__ import annotations

import sys

from realtime.cli.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
