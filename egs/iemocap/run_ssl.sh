#!/usr/bin/env bash
# SSL upstream + SUPERB ER downstream (Yang et al., Interspeech 2021; EmoBox, Ma et al., Interspeech 2024):
# the hidden layers of a local wav2vec2 / HuBERT / WavLM / data2vec-audio / Whisper checkpoint you supply
# (nothing is downloaded), dumped once (stage 3, on a GPU when there is one) and weighted, projected, pooled
# and classified by ssl-pool. Protocol of both benchmarks: 4 classes (hap+exc, 5531 utterances), 5-fold
# leave-one-session-out, validation a class-stratified 10% of the four training sessions.
#   bash run_ssl.sh --iemocap-root /data/IEMOCAP_full_release --ssl-checkpoint /models/wavlm-large
#   bash run_ssl.sh ... --ssl-checkpoint /models/wavlm_large.pth --ssl-builder wavlm_large   # torchaudio file
#   bash run_ssl.sh ... --train-config conf/ssl/emobox.yaml --tag emobox       # EmoBox's downstream reading
#   bash run_ssl.sh ... --train-config conf/ssl/attention_mean_std.yaml --tag attention_mean_std
# On the fly (no layer dump: the frozen encoder runs inside the model on the dumped waveform) and fine-tuned:
#   bash run_ssl.sh ... --feat wave --train-config conf/ssl/onthefly.yaml --tag onthefly --device cuda
#   bash run_ssl.sh ... --feat wave --train-config conf/ssl/finetune.yaml --tag finetune --device cuda
# Another checkpoint is another system (its own data/, dump/, exp/): --system ssl_hubert_large.
set -euo pipefail
exec "$(dirname "$0")/../common/pipeline.sh" iemocap \
  --system ssl \
  --train-config conf/ssl.yaml \
  --feat ssl --feat-device auto \
  --classes neu,hap+exc,ang,sad --style all \
  --paper-protocol loso-session --valid-ratio 0.1 \
  "$@"
