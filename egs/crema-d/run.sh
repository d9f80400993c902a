#!/usr/bin/env bash
# CREMA-D (Cao et al. 2014): 7442 clips of 91 actors, 6 emotions, tabulated rater votes as soft labels
# (sertk/corpora/cremad.py). Usual protocol: speaker-independent 5-fold CV over sex-balanced actor groups.
# 4 classes by default; all 6: --classes neu,hap,ang,sad,dis,fea.
# Any system's config runs here: --train-config conf/<system>.yaml --feat <its feature> (default: crnn-att).
#   bash egs/crema-d/run.sh --crema-d-root /data/CREMA-D --device cuda
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" crema-d \
  --system cremad_crnn_att \
  --base-config conf/crnn_discriminative.yaml \
  --demo-config conf/demo/crnn_discriminative.yaml \
  --feat logmel40 \
  --classes neu,hap,ang,sad \
  --paper-protocol speaker-kfold --repeats 5 \
  "$@"
