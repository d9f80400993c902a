# shellcheck shell=bash
# What every egs/<corpus>/run_<system>_grid.sh (and run_all.sh) shares: one paper table in one command.
# Sourced by the grid script, which then calls
#   grid_init "$@"                          # the user's options: --grid "v1 v2" picks variants (default: all)
#   grid_system SYSTEM PAPER_PROTOCOL       # the rows that follow run through run_SYSTEM.sh
#   grid_select SYSTEM                      # grid_selected: the variants of conf/SYSTEM/ that --grid picks
#   grid_variant NAME CONFIG [FEAT [lexical]]  # one row: exp/<SYSTEM>_<NAME> ("-" NAME: exp/<SYSTEM>; "-"
#                                           # CONFIG: the script's own; FEAT: --feat; lexical: gets the
#                                           # user's --lexical-embeddings)
#   grid_run TABLE TITLE                    # stages 0-4 once per feature set, ONE jobs file of every row's
#                                           # fold jobs dispatched once (--cmd, --nj), stage 7 per row, then
#                                           # sertk compare -> exp/TABLE[_<protocol>].md (+ .html, confusions)
# Every row keeps its own config and tag, so --train-config and --tag are refused; the grid runs the
# stages itself, so --stage, --stop-stage and --jobs-out are too. Other options go to every run.
grid_recipe=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
grid_die() { echo "$0: $*" >&2; exit 2; }

grid_init() {
  grid_choice=""
  grid_protocol=""
  grid_aug_suffix=""
  grid_lexical=""
  grid_args=()
  grid_rows=()
  grid_slurm_config=""
  grid_system_name=""         # --system NAME: the grid's one system under another name (its own data/ and exp/)
  local cmd=local
  # shellcheck source=../iemocap/cmd.sh
  [ ! -f "${grid_recipe}/cmd.sh" ] || . "${grid_recipe}/cmd.sh"
  grid_dispatch=(--cmd "${cmd}" --nj 2)  # the pipeline's defaults; the user's options below win
  while [ $# -gt 0 ]; do
    case "$1" in
      --train-config|--tag) grid_die "$1 is set per variant by the grid (use --grid to choose variants)" ;;
      --stage|--stop-stage|--jobs-out) grid_die "$1: the grid runs every stage itself (finished work is skipped)" ;;
    esac
    case "$1" in
      --*) [ $# -ge 2 ] || grid_die "option $1 needs a value" ;;
      *) grid_die "unexpected argument $1" ;;
    esac
    case "$1" in
      --grid) grid_choice=$2 ;;
      --cmd) grid_dispatch+=("$1" "$2") ;;
      --slurm-config) grid_slurm_config=$2 ;;
      --lexical-embeddings) grid_lexical=$2 ;;
      --system) grid_system_name=$2; grid_args+=("$1" "$2") ;;
      *)
        grid_args+=("$1" "$2")
        case "$1" in
          --protocol) grid_protocol=$2 ;;
          --augment) grid_aug_suffix=_aug-${2//,/-} ;;
          --nj) grid_dispatch+=("$1" "$2") ;;  # also stage 3's feature threads
        esac ;;
    esac
    shift 2
  done
}

grid_system() {
  if [ -n "${grid_system_name}" ] && [ -n "${grid_current:-}" ] && [ "${grid_current}" != "$1" ]; then
    grid_die "--system: this grid runs several systems, each under its own name"
  fi
  grid_current=$1
  grid_suffix=""
  if [ -n "${grid_protocol}" ] && [ "${grid_protocol}" != "$2" ]; then grid_suffix=_${grid_protocol}; fi
}

# grid_selected: the variants of conf/<system>/ that --grid names (a sub dir such as fig2 names all its
# configs), or all configs directly in conf/<system>/ without --grid.
grid_select() {
  local dir=${grid_recipe}/conf/$1 word f
  grid_selected=()
  if [ -z "${grid_choice}" ]; then
    for f in "${dir}"/*.yaml; do grid_selected+=("$(basename "${f}" .yaml)"); done
    return
  fi
  for word in ${grid_choice}; do
    if [ -d "${dir}/${word}" ]; then
      for f in "${dir}/${word}"/*.yaml; do grid_selected+=("${word}/$(basename "${f}" .yaml)"); done
    elif [ -f "${dir}/${word}.yaml" ]; then
      grid_selected+=("${word}")
    else
      grid_die "--grid: no config conf/$1/${word}.yaml"
    fi
  done
}

grid_variant() {
  local name=$1 config=$2 feat=${3:--} lexical=${4:-}
  if [ -n "${lexical}" ] && [ -z "${grid_lexical}" ]; then
    grid_die "variant ${name} needs word vectors: pass --lexical-embeddings FILE"
  fi
  grid_rows+=("${grid_current}|${grid_suffix}|${name}|${config}|${feat}|${lexical}")
}

# The pipeline options of row $1 (sets row_script, row_exp and row_opts).
grid_row() {
  local system suffix name config feat lexical
  IFS='|' read -r system suffix name config feat lexical <<< "$1"
  row_script=${grid_recipe}/run_${system}.sh
  row_exp=exp/${grid_system_name:-${system}}
  row_opts=()
  row_prep=()
  if [ "${name}" != - ]; then row_exp=${row_exp}_${name//\//_}; row_opts+=(--tag "${name//\//_}"); fi
  row_exp=${row_exp}${suffix}${grid_aug_suffix}
  [ "${config}" = - ] || row_opts+=(--train-config "${config}")
  [ "${feat}" = - ] || row_prep+=(--feat "${feat}")
  [ -z "${lexical}" ] || row_prep+=(--lexical-embeddings "${grid_lexical}")
}

grid_run() {
  [ ${#grid_rows[@]} -gt 0 ] || grid_die "no variants to run"
  local name=$1
  # --system NAME: the table is named after it too (lstm_attention_table1 -> lstm_attention_impro_table1)
  [ -z "${grid_system_name}" ] || name=${grid_system_name}${name#"${grid_current}"}
  local table=exp/${name}${grid_suffix}${grid_aug_suffix} title=$2 row prepared=" " exps=()
  local jobs=${grid_recipe}/${table}.jobs
  for row in "${grid_rows[@]}"; do
    grid_row "${row}"
    local key="${row_script} ${row_prep[*]}"
    [[ ${prepared} == *" ${key} |"* ]] && continue
    prepared+="${key} | "
    "${row_script}" --stop-stage 4 "${row_prep[@]}" "${grid_args[@]}"
  done
  mkdir -p "$(dirname "${jobs}")"
  : > "${jobs}"
  for row in "${grid_rows[@]}"; do
    grid_row "${row}"
    "${row_script}" --stage 5 --stop-stage 6 --jobs-out "${jobs}" "${row_opts[@]}" "${row_prep[@]}" "${grid_args[@]}"
  done
  # A --slurm-config path is the caller's when it exists there, else the recipe's (conf/slurm.yaml).
  local slurm_config=${grid_slurm_config:-conf/slurm.yaml}
  if [ -f "${slurm_config}" ] && [[ ${slurm_config} != /* ]]; then slurm_config=${PWD}/${slurm_config}; fi
  [ -f "${slurm_config}" ] || [ -f "${grid_recipe}/${slurm_config}" ] || [ -z "${grid_slurm_config}" ] ||
    grid_die "--slurm-config ${slurm_config}: no such file"
  if [ -f "${slurm_config}" ] || [ -f "${grid_recipe}/${slurm_config}" ]; then
    grid_dispatch+=(--slurm-config "${slurm_config}")
  fi
  # Job names are the logs' paths from the recipe dir (exp/<row>/log/<fold>), so each row logs under its exp.
  (cd "${grid_recipe}" && . ./path.sh && sertk dispatch "${jobs}" --log-dir . "${grid_dispatch[@]}")
  for row in "${grid_rows[@]}"; do
    grid_row "${row}"
    "${row_script}" --stage 7 --stop-stage 7 "${row_opts[@]}" "${row_prep[@]}" "${grid_args[@]}"
    exps+=("${row_exp}")
  done
  cd "${grid_recipe}" || exit 1
  # shellcheck source=/dev/null
  . ./path.sh
  sertk compare "${exps[@]}" --out "${table}.md" --title "${title}"
}
