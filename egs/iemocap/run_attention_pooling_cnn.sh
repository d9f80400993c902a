#!/usr/bin/env bash
# attention_pooling_cnn.txt: CNN with time- and frequency-specific first-layer filters and attention
# pooling (attn-pool) on 2 s mu-law spectrogram segments. Paper protocol: improvised utterances,
# 4 classes (happy without excited: 2280 utterances), 10-fold leave-one-speaker-out: 9 speakers train, 1
# tests, no validation set, the model after the last (50th) epoch is tested (§3.1).
#   bash run_attention_pooling_cnn.sh --train-config conf/attention_pooling_cnn/gap.yaml --tag gap
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" iemocap \
  --system attention_pooling_cnn \
  --train-config conf/attention_pooling_cnn.yaml \
  --feat spec-li2018 \
  --classes neu,hap,ang,sad --style impro \
  --paper-protocol loso-speaker-noval \
  "$@"
