#!/usr/bin/env bash
# cnn_blstm_vtlp.txt (Etienne et al. 2018): 4 strided convs + 1 masked BiLSTM on log-power spectrograms,
# VTLP on train/valid and an 11-copy VTLP vote at test time, hap/ang oversampled x2, layer-wise lr and L2.
# Paper protocol: improvised utterances, 4 classes (neu hap sad ang, happy without excited: 2280
# utterances), 10 folds (test one speaker, validate on the other speaker of the session). Best: WA 64.5 / UA 61.7.
# The Table 1 columns at 4 kHz need the 4 kHz feature:
#   bash run_cnn_blstm_vtlp.sh --train-config conf/cnn_blstm_vtlp/baseline.yaml --feat spec-logpow --tag baseline
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" iemocap \
  --system cnn_blstm_vtlp \
  --train-config conf/cnn_blstm_vtlp.yaml \
  --feat spec-logpow8k \
  --classes neu,hap,sad,ang --style impro \
  --paper-protocol loso-speaker \
  "$@"
