#!/usr/bin/env bash
# GPU check, under 8 minutes on one CUDA device: interpreter overhead (population 1024) and search throughput
# (1024 candidates in batches of 512) at GPU-sized populations, RL throughput at 1024 environments per call
# (CartPole: 256 members x 4 envs; SpaceInvaders-MinAtar: 16 members x 64 envs). Prints one markdown table per
# benchmark (figure, value, baseline, ratio) and keeps the markdown + raw JSON in OUT_DIR.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]    # default: $OUT if set, else /tmp/discover_gpu_check
#   bash benchmarks/gpu_check.sh --dry-run    # on the CPU with tiny sizes: checks this script, figures meaningless
#
# Needs JAX with CUDA in $PYTHON (default python3): pip install -e '.[cuda]'. Each benchmark has its own timeout
# (run_all.py --profile gpu) and the whole check is capped at 470 s; a benchmark that runs out of time is
# reported as timed out, the others still run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
OUT_DIR=${1:-${OUT:-/tmp/discover_gpu_check}}
mkdir -p "$OUT_DIR/json"

BENCHES=(interpreter_overhead search_throughput rl_throughput rl_throughput_minatar)
EXTRA=()
if [[ $DRY_RUN == 1 ]]; then
  export JAX_PLATFORMS=cpu
  EXTRA=(--quick)
else
  unset JAX_PLATFORMS || true
  # As `discover` runs: float32 matrix products at full precision (discover/cli.py). With JAX's default the
  # batched interpreter and the exported rule scored one program 26% apart on an H200.
  export JAX_DEFAULT_MATMUL_PRECISION=${JAX_DEFAULT_MATMUL_PRECISION:-highest}
  backend=$("$PYTHON" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo "none")
  if [[ "$backend" != "gpu" ]]; then
    echo "gpu_check: JAX sees no CUDA device (default backend: $backend); install jax[cuda] (pip install -e '.[cuda]')" >&2
    echo "gpu_check: or run 'bash benchmarks/gpu_check.sh --dry-run' to check the script on the CPU" >&2
    exit 2
  fi
  "$PYTHON" -c 'import jax; print("gpu_check:", jax.devices())'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

status=0
timeout --signal=TERM 470 "$PYTHON" benchmarks/run_all.py --profile gpu --only "${BENCHES[@]}" "${EXTRA[@]}" \
  --out "$OUT_DIR/BENCHMARKS_gpu.md" --json-dir "$OUT_DIR/json" --print || status=$?
if [[ $status == 124 ]]; then
  echo "gpu_check: stopped at the 470 s cap; partial JSON results in $OUT_DIR/json" >&2
fi
echo "gpu_check: markdown in $OUT_DIR/BENCHMARKS_gpu.md (exit status $status)" >&2
exit $status
