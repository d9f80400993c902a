#!/usr/bin/env bash
# rlc_gca_lstm.md: residual CNN + 4-head self-attention + GCA-LSTM (rlc) on 17 LLDs every 5 ms. Paper
# protocol: 4 classes (hap+exc, 5531 utterances), "8:1:1 ... 10-fold cross-validation": a stratified 10-fold
# partition (test 0.1, validation 0.1 drawn from the rest); Adam 1e-3, batch 128.
# Canonical system: S3 (conf/rlc_gca_lstm.yaml). The Table 2 ablations share data, features and folds:
#   bash run_rlc_gca_lstm.sh --train-config conf/rlc_gca_lstm/s2.yaml --tag s2   # also s1, baseline
#   bash run_rlc_gca_lstm.sh --protocol loso-session                            # speaker-independent
# Acoustic + lexical (§3.4, Table 1 A+L) with a word2vec text or binary file you supply:
#   bash run_rlc_gca_lstm.sh --train-config conf/rlc_gca_lstm/s3_lexical.yaml --tag s3_lexical \
#     --lexical-embeddings /path/to/GoogleNews-vectors-negative300.bin
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" iemocap \
  --system rlc_gca_lstm \
  --base-config conf/rlc_gca_lstm.yaml \
  --feat lld-rlc17 \
  --classes neu,hap+exc,ang,sad --style all \
  --paper-protocol kfold --ratios 0.8,0.1,0.1 --repeats 10 \
  "$@"
