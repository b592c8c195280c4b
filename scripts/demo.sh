#!/usr/bin/env bash
# Set up a virtual environment with stylecam, make a demo clip and stylize it with the default model
# (stabilityai/sd-turbo + the SD 2.1 Canny ControlNet + TAESD, downloaded from the Hugging Face hub on first use).
# Usage: bash scripts/demo.sh [stylecam demo options, e.g. --style cel-shaded or --model random:tiny]
# Env: VENV (default .venv). torch comes from PyPI's default build for your platform (CUDA on Linux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --disable-pip-version-check -e .
stylecam doctor || true
exec stylecam demo "$@"
