#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# lstm_attention.txt Table 1: the attention mechanisms (conf/lstm_attention/*.yaml: last state, mean
# pooling, Yang's and Zhou's attention) on the same data, folds and features, dispatched as one jobs file,
# then the comparison table beside the paper's numbers (--style impro for its improvised-only columns).
#   bash run_lstm_attention_grid.sh --iemocap-root /data/IEMOCAP_full_release --nj 4
set -euo pipefail
# shellcheck source=../common/grid.sh
. "$(dirname "$0")/../common/grid.sh"
grid_init "$@"
grid_system lstm_attention loso-session
grid_select lstm_attention
for variant in "${grid_selected[@]}"; do
  grid_variant "${variant}" "conf/lstm_attention/${variant}.yaml"
done
grid_run lstm_attention_table1 "lstm_attention.txt Table 1 (UA/WA %, per-class recall)"
