#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# cnn_blstm_vtlp.txt Table 1: the parameter study (baseline, oversampling, VTLP augmentation, gradient
# clipping, batch norm at batch 16/32/64, soft labels, the best model), each on the spectrogram its row
# used (16 kHz spec-logpow or 8 kHz spec-logpow8k), dispatched as one jobs file, then the comparison table
# beside the paper's numbers.
#   bash run_cnn_blstm_vtlp_grid.sh --iemocap-root /data/IEMOCAP_full_release --device cuda --nj 4
set -euo pipefail
# shellcheck source=../common/grid.sh
. "$(dirname "$0")/../common/grid.sh"
grid_init "$@"
grid_system cnn_blstm_vtlp loso-speaker
grid_select cnn_blstm_vtlp
for variant in "${grid_selected[@]}"; do
  case "${variant}" in
    baseline|over|over_grdt|aug_over|aug_over_grdt) feat=spec-logpow ;;
    *) feat=spec-logpow8k ;;
  esac
  grid_variant "${variant}" "conf/cnn_blstm_vtlp/${variant}.yaml" "${feat}"
done
grid_run cnn_blstm_vtlp_table1 "cnn_blstm_vtlp.txt Table 1 (UA/WA %, per-class recall)"
