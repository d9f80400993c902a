#!/usr/bin/env bash
# Training benchmark of the five systems' paper configs, fp32 and bf16 (tools/bench_gpu.py):
#   bash tools/bench_gpu.sh --device cuda --out bench_out/gpu    # one H100/H200: < 8 min
#   bash tools/bench_gpu.sh --device cpu --tiny                  # CPU dry run: < 60 s on 2 cores
# On a machine whose python3 lacks some of sertk's packages and cannot reach an index, the wheels that
# tools/gpu_wheels.sh saved in .whl/ are installed into a temporary directory first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
[ ! -x "${root}/.venv/bin/python" ] || python=${PYTHON:-${root}/.venv/bin/python}
if ! "${python}" -c "import kaldiio, soundfile" 2>/dev/null && compgen -G "${root}/.whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "${python}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "${site}" "${root}"/.whl/*.whl
  export PYTHONPATH="${site}${PYTHONPATH:+:${PYTHONPATH}}"
fi
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${python}" "${root}/tools/bench_gpu.py" "$@"
