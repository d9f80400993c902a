# shellcheck shell=bash
# shellcheck source-path=SCRIPTDIR
# sertk on PATH for this recipe (see egs/common/path.sh).
# shellcheck source=../common/path.sh
. "$(dirname "${BASH_SOURCE[0]}")/../common/path.sh"
