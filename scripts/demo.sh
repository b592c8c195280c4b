#!/usr/bin/env bash
# Set up a virtual environment with stylecam (the locked versions of constraints.txt), download the demo's models with
# a progress bar (`stylecam models pull`: stabilityai/sd-turbo + the SD 2.1 Canny ControlNet + TAESD from the Hugging
# Face hub; skipped for --model random:*), make a demo clip and stylize it. Without hub access the pull stops at once
# with one line (exit 2), unless the models are already cached; with HF_HUB_OFFLINE=1 it is skipped and the cache used.
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

# The demo's --model and --dtype decide what to pull (the same dtype rule as the run: fp16 when a GPU is visible).
pull=(models pull)
model=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --model|--dtype) [ $((i + 1)) -lt ${#args[@]} ] && pull+=("${args[i]}" "${args[i + 1]}")
                     [ "${args[i]}" = --model ] && model="${args[i + 1]:-}" ;;
    --model=*|--dtype=*) pull+=("${args[i]}"); case "${args[i]}" in --model=*) model="${args[i]#--model=}" ;; esac ;;
  esac
done
case "${HF_HUB_OFFLINE:-}:$model" in
  1:*|true:*|TRUE:*|yes:*|on:*) echo "HF_HUB_OFFLINE is set: using the Hugging Face cache as it is" >&2 ;;
  *:random:*) ;;  # random weights: nothing to download
  *) stylecam "${pull[@]}" ;;
esac
exec stylecam demo "$@"
