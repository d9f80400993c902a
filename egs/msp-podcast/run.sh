#!/usr/bin/env bash
# MSP-Podcast (Lotfian & Busso 2019): podcast turns with consensus labels, the release's Train / Development
# / Test1 / Test2 partitions (sertk/corpora/msppodcast.py). Usual protocol: the official partitions (fold1
# tests Test1; --test-partitions Test1,Test2 adds fold2). 4 classes by default.
# Any system's config runs here: --train-config conf/<system>.yaml --feat <its feature> (default: crnn-att).
#   bash egs/msp-podcast/run.sh --msp-podcast-root /data/MSP-Podcast --device cuda
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" msp-podcast \
  --system msp_crnn_att \
  --base-config conf/crnn_discriminative.yaml \
  --demo-config conf/demo/crnn_discriminative.yaml \
  --feat logmel40 \
  --classes neu,hap,ang,sad \
  --paper-protocol official \
  "$@"
