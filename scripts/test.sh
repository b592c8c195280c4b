#!/usr/bin/env bash
# Set up a virtual environment (CPU torch first, then stylecam with its dev extra) and run the test suite offline.
# Usage: bash scripts/test.sh [pytest args...]      Env: VENV (default .venv), TORCH_SPEC (default torch==2.13.0)
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
python -m pip install -q --disable-pip-version-check -e '.[dev]'
if python -m pip show -q torchvision >/dev/null 2>&1; then
  echo "torchvision is installed in $VENV: it breaks this torch build (see README, Troubleshooting)" >&2
  exit 1
fi
# The MediaPipe face model for tests comes from ../shared beside the checkout (never downloaded by tests).
if [ -z "${STYLECAM_FACE_MODEL:-}" ] && [ -f ../shared/models/face_detection_short_range.tflite ]; then
  export STYLECAM_FACE_MODEL=$PWD/../shared/models/face_detection_short_range.tflite
fi
export HF_HUB_OFFLINE=1 STYLECAM_OFFLINE=1
exec python -m pytest -q "$@"
