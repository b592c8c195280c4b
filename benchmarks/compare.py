"""Print stylecam bench result files side by side with ratios to the first; ``--plot OUT.png`` the stage breakdown.

    python benchmarks/compare.py benchmarks/results/a.json benchmarks/results/b.json --plot stages.png

The same as ``stylecam bench compare`` (the code is :func:`realtime.cli.bench.run_compare`).
"""
from __future__ import annotations

import sys

from realtime.cli.bench import compare_main

if __name__ == "__main__":
    sys.exit(compare_main(sys.argv[1:]))
