#!/usr/bin/env bash
# Training benchmark of the five systems' paper configs, fp32 and bf16 (tools/bench_gpu.py):
#   bash tools/bench_gpu.sh --device cuda --out bench_out/gpu    # one H100/H200: < 8 min
#   bash tools/bench_gpu.sh --device cpu --tiny                  # CPU dry run: < 60 s on 2 cores
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
[ ! -x "${root}/.venv/bin/python" ] || python=${PYTHON:-${root}/.venv/bin/python}
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${python}" "${root}/tools/bench_gpu.py" "$@"
