#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# crnn_discriminative.txt Table 2: the baseline, then every enhanced system of the paper's grid
# (AMS s x m, focal gamma x alpha, combined mean+std pooling) on the same data, folds and features, all
# variants x folds dispatched as one jobs file (--cmd local|slurm, --nj N), then one comparison table (UA,
# WA, paper's numbers, paired tests, per-class recall), confusion matrices and an HTML report.
#   bash run_crnn_discriminative_grid.sh --iemocap-root /data/IEMOCAP_full_release --device cuda --nj 4
#   bash run_crnn_discriminative_grid.sh --grid "ams_s10_m0.4 focal_g2_a2" --protocol loso-session --cmd slurm
# --grid picks configs from conf/crnn_discriminative/ (default: all); see egs/common/grid.sh.
set -euo pipefail
# shellcheck source=../common/grid.sh
. "$(dirname "$0")/../common/grid.sh"
grid_init "$@"
grid_system crnn_discriminative kfold
grid_variant - -  # the baseline: conf/crnn_discriminative.yaml (on the synthetic corpus: the demo config)
grid_select crnn_discriminative
for variant in "${grid_selected[@]}"; do
  grid_variant "${variant}" "conf/crnn_discriminative/${variant}.yaml"
done
grid_run crnn_discriminative_table2 "crnn_discriminative.txt Table 2 (UA/WA %, per-class recall)"
