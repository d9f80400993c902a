#!/usr/bin/env bash
# Saves in .whl/ the wheels of sertk's packages that the lent GPU machines' image lacks (kaldiio, soundfile
# and its cffi, pycparser), for its Python 3.12 on x86-64, at the versions this checkout's venv runs.
# tools/bench_gpu.sh installs them there; the device call carries .whl (README, Benchmarks).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${root}/.venv/bin/python
[ -x "${python}" ] || { echo "gpu_wheels: no ${python}: run tools/install.sh first" >&2; exit 1; }
pins=$("${python}" -m pip list --format=freeze 2>/dev/null | grep -i -E '^(kaldiio|soundfile|cffi|pycparser)==' || true)
[ "$(wc -l <<<"${pins}")" -eq 4 ] || { echo "gpu_wheels: the venv lacks one of kaldiio soundfile cffi pycparser" >&2; exit 1; }
mkdir -p "${root}/.whl"
# shellcheck disable=SC2086  # one argument per pin
"${python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "${root}/.whl" ${pins}
ls "${root}/.whl"
