"""An offline CLIP tokenizer for ``random:`` model specs (docs/design.md §5): byte tokens plus generated letter merges, the real
vocabulary size, no download; written once under :func:`realtime.files.cache_root`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from realtime import files


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table (256 entries)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def generated_tokenizer(vocab_size: int, cache_root: Path | None = None) -> Any:
    """An offline CLIP BPE tokenizer with a generated vocabulary of exactly ``vocab_size`` tokens.

    No package here ships the CLIP vocabulary in a usable form, so ``random:`` specs get byte tokens plus generated
    letter merges (``ab``, ``abc``, ...): real BPE behaviour, real vocabulary size, no download. Written once to the cache.
    """
    from transformers import CLIPTokenizer

    root = (cache_root or files.cache_root()) / "tokenizers" / f"generated-clip-{vocab_size}"
    if not (root / "merges.txt").is_file():
        base = bytes_to_unicode()
        tokens = base + [c + "</w>" for c in base]
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        merges: list[tuple[str, str]] = []
        frontier = list(letters)
        budget = vocab_size - len(tokens) - 2
        while len(merges) < budget:
            grown = []
            for a in frontier:
                for b in letters:
                    for right in (b, b + "</w>"):
                        if len(merges) < budget:
                            merges.append((a, right))
                    grown.append(a + b)
            frontier = grown
        vocab = {t: i for i, t in enumerate(tokens)}
        for a, b in merges:
            vocab[a + b] = len(vocab)
        vocab["<|startoftext|>"] = len(vocab)
        vocab["<|endoftext|>"] = len(vocab)
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}), encoding="utf-8")
        try:
            tmp.rename(root)
        except OSError:  # another process won the race: use its copy
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    tok = CLIPTokenizer.from_pretrained(str(root))
    tok.model_max_length = 77
    return tok
