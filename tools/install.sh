#!/usr/bin/env bash
# Set up sertk on a fresh machine: a virtual environment in .venv with the package installed editable.
#   bash tools/install.sh          # runtime only (enough for the recipes)
#   bash tools/install.sh --dev    # + pytest, ruff, shellcheck, onnxruntime and openSMILE (test reference)
# Idempotent: rerunning only installs what is missing. Needs Python >= 3.10 and network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
for arg in "$@"; do
  case "${arg}" in
    --dev) extras="[dev,ref,onnx]" ;;
    *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "${python}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "tools/install.sh: need Python >= 3.10 (set PYTHON=/path/to/python3.x)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "tools/install.sh: creating .venv with $(${python} --version)"
  "${python}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "tools/install.sh: installing sertk${extras} (torch 2.11 is large; the first install takes a few minutes)"
.venv/bin/python -m pip install --quiet -e ".${extras}"
.venv/bin/sertk --help >/dev/null
echo "tools/install.sh: done; sertk is .venv/bin/sertk (recipes find it through egs/iemocap/path.sh)"
