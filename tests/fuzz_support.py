"""Shared settings of the hypothesis fuzz tests (tests/test_fuzz_*.py).

Budgets: each fuzz test runs a small, derandomized budget in the default suite (reproducible in CI), and again under
the ``fuzz`` marker with ``STYLECAM_FUZZ_EXAMPLES=N`` examples (random, a new exploration each run):
``STYLECAM_FUZZ_EXAMPLES=2000 pytest -m fuzz tests/test_fuzz_*.py``. Without the variable the ``fuzz`` tests skip.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ENV = "STYLECAM_FUZZ_EXAMPLES"
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
             HealthCheck.function_scoped_fixture]


def long_examples() -> int | None:
    """``STYLECAM_FUZZ_EXAMPLES`` as an int, or None when unset."""
    text = os.environ.get(ENV, "").strip()
    return int(text) if text else None


def ci_settings(max_examples: int) -> Callable[[Any], Any]:
    """The default suite's budget: ``max_examples``, derandomized (the same examples on every run), no deadline."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=_SUPPRESS, print_blob=True)


def long_settings() -> Callable[[Any], Any]:
    """The ``-m fuzz`` budget: ``STYLECAM_FUZZ_EXAMPLES`` random examples (skips when the variable is unset)."""
    n = long_examples()
    return settings(max_examples=n or 1, deadline=None, derandomize=False, database=None,
                    suppress_health_check=_SUPPRESS, print_blob=True)


long_run = pytest.mark.skipif(long_examples() is None, reason=f"set {ENV}=N for the long fuzz run")
