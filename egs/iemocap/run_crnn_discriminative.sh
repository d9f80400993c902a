#!/usr/bin/env bash
# crnn_discriminative.txt: CNN(6) + BLSTM + attentive pooling on 40 log-Mel (crnn-att), the baseline of
# the paper's discriminative losses. Paper protocol: 4 classes (hap+exc, 5531 utterances), random
# 0.55/0.25/0.2 splits repeated 5 times. Options: see `pipeline.sh --help`; later options win.
# Without IEMOCAP (synthetic corpus) it trains conf/demo/crnn_discriminative.yaml, a CPU-sized variant.
#   bash run_crnn_discriminative.sh --protocol loso-session      # the speaker-independent comparison
set -euo pipefail
cd "$(dirname "$0")"
exec ./pipeline.sh \
  --system crnn_discriminative \
  --demo-config conf/demo/crnn_discriminative.yaml \
  --feat logmel40 \
  --classes neu,hap+exc,ang,sad --style all \
  --protocol random --paper-protocol random --ratios 0.55,0.25,0.2 --repeats 5 \
  "$@"
