#!/usr/bin/env bash
# Set up sertk on a fresh machine: a virtual environment in .venv with the package installed editable.
#   bash tools/install.sh          # runtime only (enough for the recipes)
#   bash tools/install.sh --dev    # + pytest, ruff, shellcheck, onnxruntime and openSMILE (test reference),
#                                  #   and Chromium (the HTML report's browser test) and Slurm + munge (the
#                                  #   single-node cluster of the dispatch tests) via apt-get when root
# Idempotent: rerunning only installs what is missing. Needs Python >= 3.10 and network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
dev=false
for arg in "$@"; do
  case "${arg}" in
    --dev) extras="[dev,ref,onnx]"; dev=true ;;
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
# tests/test_compare.py opens the HTML report in a headless Chromium (the system's: no browser download).
if ${dev} && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
  && ! command -v google-chrome >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tools/install.sh: installing chromium with apt-get (for the HTML report's browser test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "tools/install.sh: no chromium: the HTML report's browser test will be skipped;" \
      "install it with: sudo apt-get install chromium (Debian/Ubuntu) or your system's package manager" >&2
  fi
fi
# tests/test_dispatch.py and test_recipe_jobs.py start a private single-node Slurm (slurmctld + slurmd + munged).
if ${dev} && ! command -v slurmctld >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tools/install.sh: installing slurmctld, slurmd, slurm-client and munge with apt-get (the Slurm tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null
  else
    echo "tools/install.sh: no slurmctld: the real-Slurm tests will be skipped (the fake-sbatch test still" \
      "runs); as root on Debian/Ubuntu: apt-get install slurmctld slurmd slurm-client munge" >&2
  fi
fi
echo "tools/install.sh: done; sertk is .venv/bin/sertk (recipes find it through egs/iemocap/path.sh)"
