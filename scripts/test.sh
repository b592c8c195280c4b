#!/usr/bin/env bash
# Set up a virtual environment (CPU torch first, then stylecam with its dev extra at the locked versions of
# constraints.txt) and run the test suite offline.
# Usage: bash scripts/test.sh [--latest] [pytest args...]
#   --latest   ignore the lock: the newest versions pyproject.toml allows, in their own venv (default .venv-latest), so
#              drift in the dependencies shows up here before users hit it
# Env: VENV (default .venv), TORCH_SPEC (default torch==2.13.0)
set -euo pipefail
cd "$(dirname "$0")/.."
latest=0
if [ "${1:-}" = "--latest" ]; then
  latest=1
  shift
fi
if [ $latest = 1 ]; then
  VENV=${VENV:-.venv-latest}
else
  VENV=${VENV:-.venv}
fi
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip_install() { python -m pip install -q --disable-pip-version-check "$@"; }
pip_install "$TORCH_SPEC"
if [ $latest = 1 ]; then
  echo "installing the newest versions pyproject.toml allows (no lock)" >&2
  pip_install --upgrade --upgrade-strategy eager -e '.[dev]' "$TORCH_SPEC"   # torch stays what TORCH_SPEC says
else
  echo "installing the locked versions of constraints.txt" >&2
  pip_install --constraint constraints.txt -e '.[dev]'
fi
if python -m pip show -q torchvision >/dev/null 2>&1; then
  echo "torchvision is installed in $VENV: it breaks this torch build (see README, Troubleshooting)" >&2
  exit 1
fi
python - <<'PY'
import importlib.metadata as md, sys
names = ("torch", "diffusers", "transformers", "peft", "mediapipe", "av", "onnxruntime", "huggingface-hub")
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"
print(f"python {sys.version.split()[0]}; " + ", ".join(f"{n} {version(n)}" for n in names), flush=True)
PY
# The MediaPipe face model for tests comes from ../shared beside the checkout (never downloaded by tests).
if [ -z "${STYLECAM_FACE_MODEL:-}" ] && [ -f ../shared/models/face_detection_short_range.tflite ]; then
  export STYLECAM_FACE_MODEL=$PWD/../shared/models/face_detection_short_range.tflite
fi
export HF_HUB_OFFLINE=1 STYLECAM_OFFLINE=1
exec python -m pytest -q "$@"
