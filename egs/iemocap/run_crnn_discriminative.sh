#!/usr/bin/env bash
# crnn_discriminative.txt: CNN(6) + BLSTM + attentive pooling on 40 log-Mel (crnn-att), the baseline of
# the paper's discriminative losses. Paper protocol: 4 classes (hap+exc, 5531 utterances), "0.55 : 0.25 : 0.2
# ... 5-fold cross-validation": a stratified 5-fold partition (each test part 0.2 of the data, validation
# 0.25 of the data drawn from the rest). Options: `bash run_crnn_discriminative.sh --help`; later options win.
# Without IEMOCAP (synthetic corpus) it trains conf/demo/crnn_discriminative.yaml, a CPU-sized variant.
#   bash run_crnn_discriminative.sh --protocol loso-session      # the speaker-independent comparison
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" iemocap \
  --system crnn_discriminative \
  --base-config conf/crnn_discriminative.yaml \
  --demo-config conf/demo/crnn_discriminative.yaml \
  --feat logmel40 \
  --classes neu,hap+exc,ang,sad --style all \
  --paper-protocol kfold --ratios 0.55,0.25,0.2 --repeats 5 \
  "$@"
