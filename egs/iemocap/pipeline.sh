#!/usr/bin/env bash
# The stage pipeline every IEMOCAP system shares; each run_<system>.sh passes its paper's options.
#   0 corpus  1 prep  2 folds  3 feats  4 augment  5 train  6 eval  7 score
# Outputs: data/<system>/, dump/<system>/<feat>/, exp/<system>[_<protocol>]/ (see docs/architecture.md).
# A stage whose .done marker records the same options is skipped; delete an output to redo its stage.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Tunables (all of them; nothing tunable is set after option parsing).
stage=0
stop_stage=7
iemocap_root=${IEMOCAP:-}   # IEMOCAP_full_release; empty: generate a SYNTHETIC corpus
synth_size=small            # tiny | small | full, used only without a real IEMOCAP
synth_seed=0
system=crnn_discriminative  # names data/<system>, dump/<system>, exp/<system>
tag=                        # exp/<system>_<tag>: a variant's experiment on the same data and features
train_config=               # default: the paper's config (conf/<system>.yaml), or demo_config on synthetic data
demo_config=                # CPU-sized config used when the corpus is synthetic and no --train-config is given
feat=logmel40
feat_format=hdf5            # hdf5 | ark
classes=neu,hap+exc,ang,sad
style=all                   # all | impro | script
protocol=random             # loso-session | loso-speaker | random
paper_protocol=             # the paper's protocol (set by run_<system>.sh); others get exp/<system>_<protocol>
ratios=0.55,0.25,0.2        # random protocol only
repeats=5                   # random protocol only
folds=all                   # which folds to train/evaluate, e.g. "1 3"
epochs=                     # empty: the config's
nj=2
device=auto                 # auto | cpu | cuda
lexical_embeddings=         # word2vec text/binary file: also dump the transcripts' word vectors (lexical branch)
_tunables="stage stop_stage iemocap_root synth_size synth_seed system tag train_config demo_config feat feat_format classes
 style protocol paper_protocol ratios repeats folds epochs nj device lexical_embeddings"

. ./local/parse_options.sh
. ./path.sh

log() { echo "$(date '+%H:%M:%S') $*"; }
# A marker holds the options its stage ran with; the stage is done only if they are the same now.
is_done() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
mark_done() { echo "$2" > "$1"; }

paper_protocol=${paper_protocol:-${protocol}}
data=data/${system}
dump=dump/${system}/${feat}
exp=exp/${system}${tag:+_${tag}}
folds_json=${data}/folds.json
if [ "${protocol}" != "${paper_protocol}" ]; then
  exp=${exp}_${protocol}
  folds_json=${data}/folds_${protocol}.json
fi
epoch_opt=()
lexical_opt=()
[ -z "${lexical_embeddings}" ] || lexical_opt=(--lexical-feats "dump/${system}/lexical")
[ -z "${epochs}" ] || epoch_opt=(--epochs "${epochs}")

if [ -z "${iemocap_root}" ]; then
  iemocap_root=corpus/IEMOCAP_full_release
  synthetic=true
else
  synthetic=false
fi
if [ -z "${train_config}" ]; then
  train_config=conf/${system}.yaml
  if ${synthetic} && [ -n "${demo_config}" ]; then
    train_config=${demo_config}
    log "SYNTHETIC demo: training ${train_config}, a CPU-sized variant (pass --train-config conf/${system}.yaml for the paper's)"
  fi
fi

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  if ${synthetic}; then
    log "stage 0: no IEMOCAP path: generating a SYNTHETIC IEMOCAP-format corpus (not real emotions) -> ${iemocap_root}"
    sertk synth "${iemocap_root}" --size "${synth_size}" --seed "${synth_seed}" --nj "${nj}"
  else
    log "stage 0: using IEMOCAP at ${iemocap_root}"
  fi
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  sig="${iemocap_root} ${classes} ${style}"
  if is_done "${data}/.done" "${sig}"; then
    log "stage 1: prep: ${data} is up to date"
  else
    log "stage 1: prep: ${iemocap_root} -> ${data} (classes ${classes}, style ${style})"
    sertk prep iemocap "${iemocap_root}" "${data}" --classes "${classes}" --style "${style}"
    sertk validate "${data}"
    mark_done "${data}/.done" "${sig}"
  fi
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  sig="${protocol} ${ratios} ${repeats} $(cat "${data}/.done" 2>/dev/null || true)"
  if is_done "${folds_json%.json}.done" "${sig}"; then
    log "stage 2: folds: ${folds_json} is up to date (${protocol})"
  else
    log "stage 2: folds: ${data} -> ${folds_json} (${protocol})"
    sertk folds "${data}" "${folds_json}" --protocol "${protocol}" --ratios "${ratios}" --repeats "${repeats}"
    mark_done "${folds_json%.json}.done" "${sig}"
  fi
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "stage 3: feats: ${data} -> ${dump} (${feat}, ${feat_format})"
  sertk feats "${data}" "${dump}" --feat "${feat}" --feat-config "conf/feats/${feat}.yaml" \
    --format "${feat_format}" --nj "${nj}"
  if [ -n "${lexical_embeddings}" ]; then
    log "stage 3: feats: ${data} text -> dump/${system}/lexical (word vectors of ${lexical_embeddings})"
    mkdir -p "dump/${system}"
    printf 'embeddings: %s\n' "$(realpath "${lexical_embeddings}")" > "dump/${system}/lexical.yaml"
    sertk feats "${data}" "dump/${system}/lexical" --feat lexical --feat-config "dump/${system}/lexical.yaml" \
      --format "${feat_format}"
  fi
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  # Every augmentation the papers use (VTLP, oversampling, white noise, segmentation) runs on the fly
  # inside training from the config's `train`/`input` sections, so there is nothing to dump offline.
  log "stage 4: augment: online only (see ${train_config}: train/input sections); nothing to dump"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "stage 5: train: ${dump} -> ${exp} (${train_config}, folds: ${folds})"
  sertk train --train-config "${train_config}" --data "${data}" --feats "${dump}" --folds "${folds_json}" \
    --fold "${folds}" --exp "${exp}" --device "${device}" --resume "${epoch_opt[@]}" "${lexical_opt[@]}"
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  log "stage 6: eval: ${exp} (folds: ${folds})"
  sertk eval "${exp}" --fold "${folds}" --device "${device}"
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  log "stage 7: score: ${exp} -> ${exp}/RESULTS.md"
  sertk score "${exp}"
fi
