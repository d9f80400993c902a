#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The five papers' headline systems (each run_<system>.sh with its own config and protocol) trained and
# evaluated as one jobs file (--cmd local|slurm, --nj N), then one table beside the papers' numbers.
#   bash run_all.sh --iemocap-root /data/IEMOCAP_full_release --device cuda --nj 5 --cmd slurm
# Options go to every system's run (see egs/common/grid.sh; --protocol X names other exp dirs).
set -euo pipefail
# shellcheck source=../common/grid.sh
. "$(dirname "$0")/../common/grid.sh"
grid_init "$@"
grid_system crnn_discriminative kfold
grid_variant - -
grid_system attention_pooling_cnn loso-speaker-noval
grid_variant - -
grid_system cnn_blstm_vtlp loso-speaker
grid_variant - -
grid_system lstm_attention loso-session
grid_variant - -
grid_system rlc_gca_lstm kfold
grid_variant - -
grid_run all_systems "The five papers' headline systems on IEMOCAP (UA/WA %, per-class recall)"
