#!/usr/bin/env bash
# Set up a virtual environment with stylecam (the locked versions of constraints.txt), make a demo clip and stylize
# it with the default model (stabilityai/sd-turbo + the SD 2.1 Canny ControlNet + TAESD, downloaded from the Hugging
# Face hub on first use).
# Usage: bash scripts/demo.sh [stylecam demo options, e.g. --style cel-shaded or --model random:tiny]
# Env: VENV (default .venv), TORCH_SPEC (default torch==2.13.0, the version the lock was made with; PyPI's build for your
# platform: CUDA on Linux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
python -m pip install -q --disable-pip-version-check --constraint constraints.txt -e .
stylecam doctor || true
exec stylecam demo "$@"
