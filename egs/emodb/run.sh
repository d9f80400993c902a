#!/usr/bin/env bash
# EmoDB (Burkhardt et al. 2005, "A database of German emotional speech"): 535 utterances, 10 speakers, 7
# emotions (sertk/corpora/emodb.py). Usual protocol: leave one speaker out, 10 folds, the next speaker for
# validation. 4 classes (neu hap ang sad) by default; all 7: --classes neu,hap,ang,sad,bor,dis,fea.
# Any system's config runs here: --train-config conf/<system>.yaml --feat <its feature> (default: crnn-att).
#   bash egs/emodb/run.sh --emodb-root /data/emodb --device cuda
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" emodb \
  --system emodb_crnn_att \
  --base-config conf/crnn_discriminative.yaml \
  --demo-config conf/demo/crnn_discriminative.yaml \
  --feat logmel40 \
  --classes neu,hap,ang,sad \
  --paper-protocol loso-speaker-nextval \
  "$@"
