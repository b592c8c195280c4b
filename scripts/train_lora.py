"""LoRA fine-tuning of the UNet (optionally the text encoder) on a folder of captioned images.

    python scripts/train_lora.py --model SPEC --data DIR --steps N --grad-accum K --rank R --out FILE.safetensors [--resume DIR]

The logic lives in :mod:`realtime.research.train_lora` and :mod:`realtime.research.lora_trainer`; this is the command line over it
(``--help`` explains the objective and every option).
"""
from __future__ import annotations

import sys

from realtime.cli.console import run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    from realtime.research.train_lora import build_parser, train_main

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.debug, args.quiet)
    return run_main(lambda: train_main(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
