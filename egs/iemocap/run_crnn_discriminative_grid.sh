#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# crnn_discriminative.txt Table 2: the baseline, then every enhanced system of the paper's grid
# (AMS s x m, focal gamma x alpha, combined mean+std pooling) on the same data, folds and features,
# then one comparison table (UA, WA, paper's numbers, per-class recall) and a grid of confusion matrices.
#   bash run_crnn_discriminative_grid.sh --iemocap-root /data/IEMOCAP_full_release --device cuda
#   bash run_crnn_discriminative_grid.sh --grid "ams_s10_m0.4 focal_g2_a2" --protocol loso-session
# --grid picks configs from conf/crnn_discriminative/ (default: all). Every variant keeps its own config
# and tag (exp/crnn_discriminative_<variant>), so --train-config and --tag are refused; other options go
# to every run.
set -euo pipefail
recipe=$(dirname "$0")

grid=""
suffix=""   # the pipeline names exp dirs of a non-paper protocol exp/<system>[_<tag>]_<protocol>
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --grid) [ $# -ge 2 ] || { echo "$0: option --grid needs a value" >&2; exit 2; }; grid=$2; shift 2 ;;
    --train-config|--tag)
      echo "$0: $1 is set per variant by the grid (use --grid to choose variants)" >&2; exit 2 ;;
    --protocol)
      [ $# -ge 2 ] || { echo "$0: option --protocol needs a value" >&2; exit 2; }
      [ "$2" = kfold ] || suffix=_$2; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "${grid}" ]; then
  grid=$(for f in "${recipe}"/conf/crnn_discriminative/*.yaml; do basename "${f}" .yaml; done)
fi
for variant in ${grid}; do
  [ -f "${recipe}/conf/crnn_discriminative/${variant}.yaml" ] || {
    echo "$0: --grid: no config conf/crnn_discriminative/${variant}.yaml" >&2; exit 2; }
done

"${recipe}/run_crnn_discriminative.sh" --train-config conf/crnn_discriminative.yaml "${args[@]}"
exps=("exp/crnn_discriminative${suffix}")
for variant in ${grid}; do
  "${recipe}/run_crnn_discriminative.sh" --stage 5 --train-config "conf/crnn_discriminative/${variant}.yaml" \
    --tag "${variant}" "${args[@]}"
  exps+=("exp/crnn_discriminative_${variant}${suffix}")
done
cd "${recipe}"
# shellcheck source=path.sh
. ./path.sh
sertk compare "${exps[@]}" --out "exp/crnn_discriminative_table2${suffix}.md" \
  --title "crnn_discriminative.txt Table 2 (UA/WA %, per-class recall)"
