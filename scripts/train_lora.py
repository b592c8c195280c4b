"""LoRA fine-tuning of the UNet (optionally the text encoder) on a folder of captioned images.

    python scripts/train_lora.py --model SPEC --data DIR --steps N --grad-accum K --rank R --out FILE.safetensors [--resume DIR]

The logic lives in :mod:`realtime.research.train_lora` and :mod:`realtime.research.lora_trainer`, the command line in
:mod:`realtime.cli.train_lora` (``--help`` explains the objective and every option); this is its entry point.
"""
from __future__ import annotations

import sys

from realtime.cli.train_lora import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
