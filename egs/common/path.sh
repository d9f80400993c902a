# shellcheck shell=bash
# Put sertk on PATH: the repository's virtual environment if tools/install.sh made one, else whatever
# `sertk` the shell already finds. Sourced by every recipe (egs/<corpus>/path.sh sources this file).
_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -x "${_repo}/.venv/bin/sertk" ]; then
  export PATH="${_repo}/.venv/bin:${PATH}"
fi
if ! command -v sertk >/dev/null 2>&1; then
  echo "sertk is not installed: run 'bash tools/install.sh' in ${_repo}" >&2
  exit 1
fi
export PYTHONUNBUFFERED=1
