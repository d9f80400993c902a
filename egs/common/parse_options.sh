# shellcheck shell=bash
# Turn `--some-option value` arguments into assignments of the already-declared variable `some_option`.
# Sourced by a recipe after it has declared every tunable (listed in `_tunables`). An undeclared option, an
# option without a value, or a value that is itself an option (`--tag --stage 3`) is an error (exit 2);
# `--help` prints the tunables with their current values. (Same contract as Kaldi's utils/parse_options.sh,
# written for sertk; `--config` is deliberately not special.)

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "usage: $0 [--option value ...]"
      echo "options (current values):"
      for _name in ${_tunables:-}; do
        printf '  --%s %q\n' "${_name//_/-}" "${!_name}"
      done
      exit 0 ;;
    --*)
      _name=${1#--}
      _name=${_name//-/_}
      _known=false
      for _t in ${_tunables:-}; do [ "${_t}" = "${_name}" ] && _known=true; done
      if ! ${_known}; then
        echo "$0: unknown option $1 (see --help)" >&2
        exit 2
      fi
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2
        exit 2
      fi
      case "$2" in
        --*) echo "$0: option $1 needs a value (got the option $2)" >&2; exit 2 ;;
      esac
      printf -v "${_name}" '%s' "$2"
      shift 2 ;;
    *)
      echo "$0: unexpected argument $1 (options are --name value)" >&2
      exit 2 ;;
  esac
done
