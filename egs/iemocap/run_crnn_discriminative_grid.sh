#!/usr/bin/env bash
# crnn_discriminative.txt Table 2: the baseline, then every enhanced system of the paper's grid
# (AMS s x m, focal gamma x alpha, combined mean+std pooling) on the same data, folds and features,
# then one comparison table (UA, WA, paper's numbers, per-class recall) and a grid of confusion matrices.
#   bash run_crnn_discriminative_grid.sh --iemocap-root /data/IEMOCAP_full_release --device cuda
#   bash run_crnn_discriminative_grid.sh --grid "ams_s10_m0.4 focal_g2_a2" --protocol loso-session
# --grid picks configs from conf/crnn_discriminative/ (default: all); other options go to every run.
set -euo pipefail
cd "$(dirname "$0")"

grid=""
suffix=""   # the pipeline names exp dirs of a non-paper protocol exp/<system>[_<tag>]_<protocol>
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --grid) grid=$2; shift 2 ;;
    --protocol) [ "$2" = random ] || suffix=_$2; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "${grid}" ]; then
  grid=$(for f in conf/crnn_discriminative/*.yaml; do basename "${f}" .yaml; done)
fi

./run_crnn_discriminative.sh --train-config conf/crnn_discriminative.yaml "${args[@]}"
exps=("exp/crnn_discriminative${suffix}")
for variant in ${grid}; do
  ./run_crnn_discriminative.sh --stage 5 --train-config "conf/crnn_discriminative/${variant}.yaml" \
    --tag "${variant}" "${args[@]}"
  exps+=("exp/crnn_discriminative_${variant}${suffix}")
done
. ./path.sh
sertk compare "${exps[@]}" --out "exp/crnn_discriminative_table2${suffix}.md" \
  --title "crnn_discriminative.txt Table 2 (UA/WA %, per-class recall)"
