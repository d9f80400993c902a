#!/usr/bin/env bash
# RAVDESS (Livingstone & Russo 2018): the speech set, 1440 audio files of 24 actors, 8 emotions (calm is its
# own class, cal; sertk/corpora/ravdess.py). Usual protocol: speaker-independent 6-fold CV over sex-balanced
# actor groups (4 actors tested per fold, the next group for validation). 4 classes by default.
# Any system's config runs here: --train-config conf/<system>.yaml --feat <its feature> (default: crnn-att).
#   bash egs/ravdess/run.sh --ravdess-root /data/RAVDESS --device cuda
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" ravdess \
  --system ravdess_crnn_att \
  --base-config conf/crnn_discriminative.yaml \
  --demo-config conf/demo/crnn_discriminative.yaml \
  --feat logmel40 \
  --classes neu,hap,ang,sad \
  --paper-protocol speaker-kfold --repeats 6 \
  "$@"
