#!/usr/bin/env bash
# lstm_attention.txt: 3 dense ReLU layers + BiLSTM + LSTM attention (lstm-attn) on 32 IS09 LLDs, 500 frames.
# Paper protocol: 4 classes (neu hap ang sad, happy without excited), 5-fold leave-one-session-out, on the
# full set (default here) and on the improvised utterances only. Table 1 = 4 poolings x {full, improvised}:
#   bash run_lstm_attention.sh                                                  # proposed, full set
#   bash run_lstm_attention.sh --train-config conf/lstm_attention/yang.yaml --tag yang   # also mean, zhou
#   bash run_lstm_attention.sh --system lstm_attention_impro --style impro      # proposed, improvised set
#   bash run_lstm_attention.sh --system lstm_attention_impro --style impro \
#     --train-config conf/lstm_attention/mean.yaml --tag mean
# The improvised set gets its own --system (its own data/, dump/ and exp/): --style impro alone would
# re-prepare data/lstm_attention and re-dump its features in place every time the set changes.
# Then: sertk eval exp/lstm_attention --plot-attention 4; sertk compare exp/lstm_attention* --out table1.md
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" iemocap \
  --system lstm_attention \
  --train-config conf/lstm_attention.yaml \
  --feat lld-is09 \
  --classes neu,hap,ang,sad --style all \
  --paper-protocol loso-session \
  "$@"
