#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# rlc_gca_lstm.md Table 2: the component study (Baseline, S1 +RCN, S2 +self-attention, S3 +GCA-LSTM) on
# acoustic features, and with --lexical-embeddings FILE (word2vec) also the A+L rows (*_lexical), all
# dispatched as one jobs file, then the comparison table beside the paper's numbers.
#   bash run_rlc_gca_lstm_grid.sh --iemocap-root /data/IEMOCAP_full_release --device cuda --nj 4
#   bash run_rlc_gca_lstm_grid.sh --lexical-embeddings GoogleNews-vectors-negative300.bin --grid "s3 s3_lexical"
set -euo pipefail
# shellcheck source=../common/grid.sh
. "$(dirname "$0")/../common/grid.sh"
grid_init "$@"
grid_system rlc_gca_lstm kfold
grid_select rlc_gca_lstm
for variant in "${grid_selected[@]}"; do
  case "${variant}" in
    *_lexical) # without word vectors only the acoustic rows, unless --grid names a lexical one
      if [ -n "${grid_lexical}" ] || [ -n "${grid_choice}" ]; then
        grid_variant "${variant}" "conf/rlc_gca_lstm/${variant}.yaml" - lexical
      fi ;;
    *) grid_variant "${variant}" "conf/rlc_gca_lstm/${variant}.yaml" ;;
  esac
done
grid_run rlc_gca_lstm_table2 "rlc_gca_lstm.md Table 2 (UA %, per-class recall)"
