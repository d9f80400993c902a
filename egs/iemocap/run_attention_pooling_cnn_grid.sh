#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# attention_pooling_cnn.txt Table 1: CNN_TF_GAP, CNN_TF_Bilinear and CNN_TF_Att.pooling (conf/
# attention_pooling_cnn/*.yaml) on the same data, folds and features, dispatched as one jobs file, then the
# comparison table beside the paper's numbers. --grid fig2 runs Figure 2's filter-shape sweep instead
# (conf/attention_pooling_cnn/fig2/: height x width of Conv1), --grid "fig2/h2_w2 gap" a selection.
#   bash run_attention_pooling_cnn_grid.sh --iemocap-root /data/IEMOCAP_full_release --device cuda --nj 4
set -euo pipefail
# shellcheck source=../common/grid.sh
. "$(dirname "$0")/../common/grid.sh"
grid_init "$@"
grid_system attention_pooling_cnn loso-speaker-noval
grid_select attention_pooling_cnn
for variant in "${grid_selected[@]}"; do
  grid_variant "${variant}" "conf/attention_pooling_cnn/${variant}.yaml"
done
grid_run attention_pooling_cnn_table1 "attention_pooling_cnn.txt Table 1 (UA/WA %, per-class recall)"
