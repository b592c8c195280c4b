#!/usr/bin/env bash
# One command for a lent GPU host: the gpu-marked tests, `stylecam bench` step/pipeline/live for every available
# backend at 512x512 and 704x384 (random:sd-turbo fp16), the StreamDiffusion comparison (eager and compile on both
# sides), JSON under benchmarks/results/gpu-suite-<UTC stamp>/ (device, driver, versions, commit in every file), and
# one summary table at the end.
#
# The host (docs/design.md §5): Python 3.12 with torch (2.11) preinstalled, no internet. Bring the missing pure-Python
# wheels, built here with ../shared/gpu/wheelhouse.sh (see README "Benchmarks"), and pass --wheels DIR.
#
#   bash benchmarks/gpu_suite.sh [--wheels DIR]       full suite (goal: <= 6 minutes on an H100/H200)
#   bash benchmarks/gpu_suite.sh --quick               best backend + eager, 512x512, step and live (goal: <= 3 minutes)
#   bash benchmarks/gpu_suite.sh --dry-run             print what it would run, run nothing
#   bash benchmarks/gpu_suite.sh --device cpu --model random:tiny --quick    every part, on the CPU
#
# Options: --device cuda|cpu (default cuda), --model SPEC (default random:sd-turbo), --frames N / --warmup N (default
# 300 / 10 on CUDA, 10 / 2 on the CPU), --backends B,B (default: every available one), --sizes WxH,WxH (default
# 512x512,704x384; 64x64,128x64 on the CPU; the first only with --quick), --out DIR,
# --python PY (default $PYTHON or python3), --step-timeout S (default 600, 240 with --quick: one part that hangs
# cannot eat the session's device time; 1200 on the CPU).
# A part that fails is reported and the suite goes on; the exit status is 1 when any part failed.
# Unverified on a GPU: no GPU has been lent to this project yet; every part has run on the CPU.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
py=${PYTHON:-python3}
device=cuda model=random:sd-turbo quick=0 dry=0 wheels="" out="" frames="" warmup="" backends="" sizes=""
step_timeout=""

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_suite: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --dry-run) dry=1 ;;
    --device) device=${2:?--device needs a value}; shift ;;
    --model) model=${2:?--model needs a value}; shift ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --frames) frames=${2:?--frames needs a number}; shift ;;
    --warmup) warmup=${2:?--warmup needs a number}; shift ;;
    --backends) backends=${2:?--backends needs a list}; shift ;;
    --sizes) sizes=${2:?--sizes needs a list}; shift ;;
    --python) py=${2:?--python needs a path}; shift ;;
    --step-timeout) step_timeout=${2:?--step-timeout needs seconds}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$device" in cuda|cpu) ;; *) die "--device $device: cuda or cpu" ;; esac
[ -z "$wheels" ] || [ -d "$wheels" ] || die "--wheels $wheels: not a folder"
if [ "$device" = cuda ]; then dtype=fp16; frames=${frames:-300}; warmup=${warmup:-10}
else dtype=fp32; frames=${frames:-10}; warmup=${warmup:-2}; fi
if [ -z "$sizes" ]; then  # on the CPU: small sizes (random:tiny at 512x512 costs ~8 s a frame on a 2-core VM)
  if [ "$device" = cuda ]; then big=512x512 wide=704x384; else big=64x64 wide=128x64; fi
  if [ "$quick" = 1 ]; then sizes=$big; else sizes=$big,$wide; fi
fi
if [ "$device" = cuda ]; then step_timeout=${step_timeout:-$([ "$quick" = 1 ] && echo 240 || echo 600)}
else step_timeout=${step_timeout:-1200}; fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${out:-$repo/benchmarks/results/gpu-suite-$stamp-$device}

# --- environment: the wheels beside the repository, offline ------------------------------------------------------
site=""
if [ -n "$wheels" ]; then site=${TMPDIR:-/tmp}/stylecam-gpu-suite-site; fi
export PYTHONPATH="${site:+$site:}$repo${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
[ -n "${STYLECAM_FACE_MODEL:-}" ] || [ ! -f "$repo/../shared/models/face_detection_short_range.tflite" ] ||
  export STYLECAM_FACE_MODEL="$repo/../shared/models/face_detection_short_range.tflite"

failed=() skipped=()
say() { printf '\n== %s\n' "$*"; }
run() {  # run NAME CMD...: print it; unless --dry-run, run it under the step timeout and record a failure
  local name=$1; shift
  local a; printf '+'
  for a in "$@"; do if [[ "$a" =~ [[:space:]] ]]; then printf " '%s'" "$a"; else printf ' %s' "$a"; fi; done; echo
  [ "$dry" = 1 ] && return 0
  local t0=$SECONDS
  timeout "$step_timeout" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then failed+=("$name (exit $rc)"); echo "gpu_suite: $name failed (exit $rc)" >&2; fi
  echo "   ($name: $((SECONDS - t0)) s)"
  return 0
}

say "stylecam GPU suite: device $device, model $model, sizes $sizes, frames $frames (+$warmup warm-up)$([ "$quick" = 1 ] && echo ', quick')"
if [ -n "$wheels" ]; then
  run wheels "$py" -m pip install -q --no-index --no-deps --target "$site" "$wheels"/*.whl
fi
[ "$dry" = 1 ] || mkdir -p "$out" || die "cannot create $out"
if [ "$dry" = 1 ] && [ -n "$backends" ]; then  # nothing to detect: the list given, its first one as the best
  info="$backends ${backends%%,*} backends_given_(not_detected)"
else
info=$("$py" - "$device" 2>&1 <<'EOF'
import sys
import torch
import engines
from realtime.diffusion.engine_select import resolve_backend
dev = torch.device(sys.argv[1])
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit("CUDA is not available to torch here: run with --device cpu, or on the GPU host")
ok = [n for n, (a, _) in engines.available_backends(dev).items() if a]
best, _ = resolve_backend("auto", dev)
if best == "auto":
    best = "tensorrt" if "tensorrt" in ok else "compile" if "compile" in ok else "eager"
gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
print(",".join(ok), best, f"torch {torch.__version__} on {gpu}".replace(" ", "_"))
EOF
)
fi
if [ $? -eq 0 ]; then
  read -r avail best where <<<"${info##*$'\n'}"
  echo "   ${where//_/ }; backends: $avail; best: $best"
elif [ "$dry" = 1 ]; then  # a dry run elsewhere: what a GPU host with every backend installed would run
  avail=tensorrt,compile,onnxruntime,eager best=tensorrt
  echo "   (not detected here: ${info##*$'\n'}; showing a GPU host with every backend)"
else
  echo "$info" >&2
  die "the environment check failed: torch, stylecam and the wheels must import (and CUDA for --device cuda)"
fi
[ -z "$backends" ] || avail=$backends
if [ "$quick" = 1 ]; then
  list=$best; [ "$best" = eager ] || list="$best,eager"
  [ -z "$backends" ] || list=$backends
  modes=step,live
else
  list=$avail modes=step,pipeline,live
fi

# --- 1. the gpu-marked tests (skipped, not failed, where CUDA is missing) ----------------------------------------
say "1. gpu-marked tests"
mapfile -t gpu_files < <(grep -l "pytest.mark.gpu" "$repo"/tests/test_*.py)  # only these: others import more
if [ "$dry" = 1 ] || "$py" -c "import pytest" 2>/dev/null; then
  run gpu-tests "$py" -m pytest -q -p no:cacheprovider -m gpu -rs "${gpu_files[@]}"
else
  skipped+=("gpu tests: pytest is not installed (add pytest, pluggy, iniconfig, packaging to the wheelhouse)")
  echo "   skipped: pytest is not installed"
fi

# --- 2. stylecam bench, one process per backend (a failing build does not take the others down) -----------------
say "2. stylecam bench $modes at $sizes for: $list"
IFS=, read -r -a blist <<<"$list"
for b in "${blist[@]}"; do
  run "bench $b" "$py" -m realtime.cli bench --model "$model" --device "$device" --dtype "$dtype" --backend "$b" \
    --sizes "$sizes" --mode "$modes" --frames "$frames" --warmup "$warmup" --camera-size 1280x720 \
    --output-size 1280x720 --label "gpu-suite $b" --json "$out/bench-$b.json"
done

# --- 3. StreamDiffusion side by side, the same backend class on both sides ----------------------------------------
say "3. StreamDiffusion comparison"
if [ "$quick" = 1 ]; then
  skipped+=("StreamDiffusion comparison: not part of --quick")
  echo "   skipped in --quick"
elif [ "$dry" = 0 ] && ! "$py" -c "import streamdiffusion" 2>/dev/null; then
  skipped+=("StreamDiffusion comparison: streamdiffusion is not importable (bring streamdiffusion==0.1.1 in the wheelhouse)")
  echo "   skipped: streamdiffusion is not importable"
else
  sd_frames=$(( frames < 100 ? frames : 100 ))
  for b in eager compile; do
    case ",$list," in *",$b,"*) ;; *) continue ;; esac
    run "streamdiffusion $b" "$py" "$repo/benchmarks/streamdiffusion_compare.py" --model "$model" --size "${sizes%%,*}" \
      --device "$device" --dtype "$dtype" --backend "$b" --frames "$sd_frames" --warmup "$warmup" \
      --label "gpu-suite streamdiffusion $b" --json "$out/streamdiffusion-$b.json"
  done
fi

# --- 4. one summary table ---------------------------------------------------------------------------------------
say "4. summary ($out)"
run summary "$py" "$repo/benchmarks/make_table.py" --results "$out" --summary
[ ${#skipped[@]} -eq 0 ] || printf 'skipped: %s\n' "${skipped[@]}"
if [ ${#failed[@]} -gt 0 ]; then printf 'FAILED: %s\n' "${failed[@]}"; exit 1; fi
[ "$dry" = 1 ] && echo "(dry run: nothing was run or written)" || echo "results: $out"
exit 0
