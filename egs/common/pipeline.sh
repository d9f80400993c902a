#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The stage pipeline every recipe shares: egs/<corpus>/run_<system>.sh calls
#   egs/common/pipeline.sh <corpus> --system NAME --feat F ... "$@"
# and runs it in egs/<corpus>/. Stages: 0 corpus  1 prep  2 folds  3 feats  4 augment  5 train  6 eval  7 score.
# Outputs: data/<system>/, dump/<system>/<feat>/, exp/<system>[_<tag>][_<protocol>]/ (docs/architecture.md).
# Every stage is a sertk command that records the provenance of its output and skips itself when that
# record still matches its inputs; anything changed upstream is redone, nothing else.
set -euo pipefail

corpus=${1:?usage: pipeline.sh <corpus> [--option value ...]}
shift
caller=$PWD
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/../${corpus}" && pwd)

# Tunables (all of them; nothing tunable is set after option parsing).
stage=0
stop_stage=7
corpus_root=                # the corpus as distributed; empty: generate a SYNTHETIC one (stage 0)
synth_size=small            # tiny | small | full, used only without a real corpus
synth_seed=0
system=                     # names data/<system>, dump/<system>, exp/<system>
tag=                        # exp/<system>_<tag>: a variant's experiment on the same data and features
train_config=               # default: base_config, or demo_config on synthetic data
base_config=                # the recipe's default config (set by run_<system>.sh; empty: conf/<system>.yaml)
demo_config=                # CPU-sized config used when the corpus is synthetic and no --train-config is given
feat=logmel40
feat_format=hdf5            # hdf5 | ark
classes=neu,hap+exc,ang,sad
style=all                   # all | impro | script
protocol=                   # see `sertk folds --help`; default: the paper's (paper_protocol)
paper_protocol=             # the paper's protocol (set by run_<system>.sh); others get exp/<system>_<protocol>
ratios=0.55,0.25,0.2        # kfold / random protocols
repeats=5                   # kfold / random protocols
valid_ratio=0.1             # loso-session: validation share of the training sessions
test_partitions=Test1       # official protocol (MSP-Podcast): one fold per test partition, e.g. Test1,Test2
folds=all                   # which folds to train/evaluate, e.g. "1 3"
epochs=                     # empty: the config's
precision=                  # empty: the config's (fp32 | bf16 | fp16)
nj=2                        # parallel jobs: stage 3's feature threads, stages 5-6's fold jobs at a time
cmd=local                   # how stages 5-6 run their fold jobs: local | slurm (default: egs/<corpus>/cmd.sh)
# shellcheck source=../iemocap/cmd.sh
[ ! -f "${recipe}/cmd.sh" ] || . "${recipe}/cmd.sh"
slurm_config=conf/slurm.yaml  # --cmd slurm: sbatch options (partition, gpus_per_job, time, mem, ...)
jobs_out=                   # stages 5-6 append their fold jobs to this jobs file instead of running them
device=auto                 # auto | cpu | cuda (with --cmd local each fold job gets one GPU)
nproc=1                     # data-parallel processes per fold job (sertk train --nproc: DDP over that many
                            # GPUs; --cmd local gives each job as many, --cmd slurm: gpus_per_job in conf/slurm.yaml)
lexical_embeddings=         # word2vec text/binary file: also dump the transcripts' word vectors (lexical branch)
augment=                    # comma list of speed, noise, rir (offline copies of training utterances, stage 4), specaug
speeds=0.9,1.1              # --augment speed: the speed factors (Kaldi's 3-way perturbation with the originals)
noise_dir=                  # --augment noise: MUSAN or any dir of noise wavs (never downloaded)
snr=0:15                    # --augment noise: SNR range in dB
rir_dir=                    # --augment rir: RIRS_NOISES or any dir of room impulse responses
ssl_checkpoint=             # local SSL model dir or torchaudio weight file: --feat ssl dumps its layers; with
                            # --feat wave the encoder runs inside the model (an on-the-fly config)
ssl_builder=                # torchaudio_builder of a weight file (wavlm_large, hubert_large, ...); empty: a model dir
feat_device=cpu             # where stage 3 computes features: cpu | cuda | auto (run_ssl.sh: auto)
root_option=${corpus//-/_}_root
declare "${root_option}=${corpus_root}"
if [ "${corpus}" = iemocap ]; then declare "${root_option}=${IEMOCAP:-}"; fi
_tunables="stage stop_stage ${root_option} synth_size synth_seed system tag train_config base_config demo_config feat feat_format
 classes style protocol paper_protocol ratios repeats valid_ratio test_partitions folds epochs precision nj cmd slurm_config
 jobs_out device nproc lexical_embeddings augment speeds noise_dir snr rir_dir ssl_checkpoint ssl_builder feat_device"

# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

die() { echo "$0: $*" >&2; exit 2; }
log() { echo "$(date '+%H:%M:%S') $*"; }
for name in stage stop_stage nj nproc; do
  [[ ${!name} =~ ^[0-9]+$ ]] || die "--${name//_/-} must be a non-negative integer, got '${!name}'"
done
[ -n "${system}" ] || die "--system is required"
# A user's path is relative to where they called the recipe from, not to the recipe dir.
absolute() { case "$1" in ""|/*) echo "$1" ;; *) echo "${caller}/$1" ;; esac; }
corpus_root=$(absolute "${!root_option}")
lexical_embeddings=$(absolute "${lexical_embeddings}")
noise_dir=$(absolute "${noise_dir}")
rir_dir=$(absolute "${rir_dir}")
ssl_checkpoint=$(absolute "${ssl_checkpoint}")
if [ "${feat}" = ssl ] && [ -z "${ssl_checkpoint}" ]; then
  die "--feat ssl needs --ssl-checkpoint PATH (a local model dir or torchaudio weight file; nothing is downloaded)"
fi
case "${cmd}" in local|slurm) ;; *) die "--cmd must be local or slurm, got '${cmd}'" ;; esac
if [ -n "${jobs_out}" ] && [ "${stop_stage}" -ge 7 ]; then
  die "--jobs-out: stages 5-6 only write jobs then; pass --stop-stage 6 (and score once they have run)"
fi
jobs_out=$(absolute "${jobs_out}")
# A config path is the caller's when it exists there, else the recipe's own (conf/...).
if [ -n "${train_config}" ] && [ -f "${caller}/${train_config}" ] && [[ ${train_config} != /* ]]; then
  train_config=${caller}/${train_config}
fi
if [ -f "${caller}/${slurm_config}" ] && [[ ${slurm_config} != /* ]]; then
  slurm_config=${caller}/${slurm_config}
fi

cd "${recipe}"
# shellcheck source=path.sh
. ../common/path.sh

paper_protocol=${paper_protocol:-${protocol}}
protocol=${protocol:-${paper_protocol}}
data=data/${system}
dump=dump/${system}/${feat}
exp=exp/${system}${tag:+_${tag}}
folds_json=${data}/folds.json
if [ "${protocol}" != "${paper_protocol}" ]; then
  exp=${exp}_${protocol}
  folds_json=${data}/folds_${protocol}.json
fi
# --augment: offline kinds make data/<system>_aug-<kinds> (stage 4), which stages 5-7 then use; specaug is online.
offline=()
augment_opts=()
for kind in ${augment//,/ }; do
  case "${kind}" in
    speed) offline+=(speed); augment_opts+=(--speed "${speeds}") ;;
    noise) [ -n "${noise_dir}" ] || die "--augment noise needs --noise-dir"
      offline+=(noise); augment_opts+=(--noise "${noise_dir}" --snr "${snr}") ;;
    rir) [ -n "${rir_dir}" ] || die "--augment rir needs --rir-dir"
      offline+=(rir); augment_opts+=(--rir "${rir_dir}") ;;
    specaug) ;;
    *) die "--augment: unknown kind '${kind}' (speed, noise, rir, specaug)" ;;
  esac
done
train_data=${data}
train_dump=${dump}
train_folds=${folds_json}
if [ -n "${augment}" ]; then
  suffix=_aug-${augment//,/-}
  exp=${exp}${suffix}
  if [ ${#offline[@]} -gt 0 ]; then
    train_data=${data}${suffix}
    train_dump=dump/${system}${suffix}/${feat}
    train_folds=${train_data}/folds.json
  fi
fi
train_opts=()
case ",${augment}," in
  *,specaug,*) # Park et al. 2019's LD policy: two frequency and two time masks (widths from the config)
    train_opts+=(--set input.specaugment.freq_masks=2 --set input.specaugment.time_masks=2) ;;
esac
[ -z "${epochs}" ] || train_opts+=(--epochs "${epochs}")
[ "${nproc}" = 1 ] || train_opts+=(--nproc "${nproc}")
[ -z "${precision}" ] || train_opts+=(--precision "${precision}")
[ -z "${lexical_embeddings}" ] || train_opts+=(--lexical-feats "dump/${system}/lexical")
# The SSL checkpoint's feature YAML (stage 3 writes it): the layers to dump, or the encoder to train with.
ssl_yaml=dump/${system}/ssl.yaml
feat_config=conf/feats/${feat}.yaml
[ "${feat}" != ssl ] || feat_config=${ssl_yaml}
if [ "${feat}" = wave ] && [ -n "${ssl_checkpoint}" ]; then train_opts+=(--ssl-encoder "${ssl_yaml}"); fi

synthetic=false
if [ -z "${corpus_root}" ]; then
  corpus_root=corpus/${corpus}
  synthetic=true
fi
if [ -z "${train_config}" ]; then
  train_config=${base_config:-conf/${system}.yaml}
  if ${synthetic} && [ -n "${demo_config}" ]; then
    train_config=${demo_config}
    log "SYNTHETIC demo: training ${train_config}, a CPU-sized variant (pass --train-config conf/${system}.yaml for the paper's)"
  fi
fi

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  if ${synthetic}; then
    log "Stage 0: corpus: no --${root_option//_/-}: generating a SYNTHETIC ${corpus}-format corpus (not real emotions) -> ${corpus_root}"
    sertk synth "${corpus_root}" --corpus "${corpus}" --size "${synth_size}" --seed "${synth_seed}" --nj "${nj}"
  else
    log "Stage 0: corpus: using ${corpus} at ${corpus_root}"
  fi
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "Stage 1: prep: ${corpus_root} -> ${data} (classes ${classes}, style ${style})"
  prep_opts=(--classes "${classes}")
  [ "${corpus}" != iemocap ] || prep_opts+=(--style "${style}")
  sertk prep "${corpus}" "${corpus_root}" "${data}" "${prep_opts[@]}"
  sertk validate "${data}"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "Stage 2: folds: ${data} -> ${folds_json} (${protocol})"
  sertk folds "${data}" "${folds_json}" --protocol "${protocol}" --ratios "${ratios}" --repeats "${repeats}" \
    --valid-ratio "${valid_ratio}" --test-partitions "${test_partitions}"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  if [ -n "${ssl_checkpoint}" ]; then
    log "Stage 3: feats: ${ssl_yaml}: conf/feats/ssl.yaml with checkpoint ${ssl_checkpoint}"
    mkdir -p "dump/${system}"
    { printf "checkpoint: '%s'\n" "${ssl_checkpoint//\'/\'\'}"
      [ -z "${ssl_builder}" ] || printf 'torchaudio_builder: %s\n' "${ssl_builder}"
      cat conf/feats/ssl.yaml; } > "${ssl_yaml}"
  fi
  log "Stage 3: feats: ${data} -> ${dump} (${feat}, ${feat_format}, ${feat_device})"
  sertk feats "${data}" "${dump}" --feat "${feat}" --feat-config "${feat_config}" \
    --format "${feat_format}" --nj "${nj}" --device "${feat_device}"
  if [ -n "${lexical_embeddings}" ]; then
    log "Stage 3: feats: ${data} text -> dump/${system}/lexical (word vectors of ${lexical_embeddings})"
    mkdir -p "dump/${system}"
    printf 'embeddings: %s\n' "${lexical_embeddings}" > "dump/${system}/lexical.yaml"
    sertk feats "${data}" "dump/${system}/lexical" --feat lexical --feat-config "dump/${system}/lexical.yaml" \
      --format "${feat_format}"
  fi
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  # The papers' own augmentations (VTLP, oversampling, white noise, segments) run on the fly inside
  # training from the config's train/input sections; --augment adds offline copies and SpecAugment.
  if [ ${#offline[@]} -gt 0 ]; then
    log "Stage 4: augment: ${data} -> ${train_data} (${offline[*]} copies of each fold's training utterances)"
    sertk augment "${data}" "${folds_json}" "${train_data}" "${augment_opts[@]}" --seed "${synth_seed}" --nj "${nj}"
    log "Stage 4: augment: ${train_data} -> ${train_dump} (${feat})"
    sertk feats "${train_data}" "${train_dump}" --feat "${feat}" --feat-config "${feat_config}" \
      --format "${feat_format}" --nj "${nj}" --device "${feat_device}"
  else
    log "Stage 4: augment: online only (${train_config}: train/input sections${augment:+; --augment ${augment}})"
  fi
fi

# Stages 5-6: one job per fold (train it, then evaluate it), run --nj at a time by sertk dispatch --cmd.
# `sertk train --plan` first opens the experiment once (clearing a changed one's outputs, stale folds) and
# writes replay.sh; the fold jobs (--planned) then write only their own fold dirs. Every job skips what its
# provenance records say is done, so a rerun retries only the failed folds.
run_train=false
run_eval=false
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then run_train=true; fi
if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then run_eval=true; fi
if ${run_train} || ${run_eval}; then
  train_args=(--train-config "${train_config}" --data "${train_data}" --feats "${train_dump}" --folds "${train_folds}"
    --exp "${exp}" --device "${device}" "${train_opts[@]}")
  if ${run_train}; then
    log "Stage 5: train: ${train_dump} -> ${exp} (${train_config}, folds: ${folds}): plan"
    sertk train "${train_args[@]}" --fold "${folds}" --resume --overwrite --plan
  fi
  if ${run_eval}; then log "Stage 6: eval: ${exp} (folds: ${folds}): each fold's job, after its training"; fi
  jobs=${jobs_out:-${exp}/log/train_eval.jobs}
  mkdir -p "$(dirname "${jobs}")"
  [ -n "${jobs_out}" ] || : > "${jobs}"
  for fold in $(sertk folds list "${train_folds}" --fold "${folds}"); do
    steps=()
    if ${run_train}; then steps+=("$(printf '%q ' sertk train "${train_args[@]}" --fold "${fold}" --resume --planned)"); fi
    if ${run_eval}; then steps+=("$(printf '%q ' sertk eval "${exp}" --fold "${fold}" --device "${device}")"); fi
    name=${fold}
    [ -z "${jobs_out}" ] || name=${exp}/log/${fold}  # one jobs file of many experiments: logs under each
    job=${steps[0]}
    [ ${#steps[@]} -eq 1 ] || job="${steps[0]}&& ${steps[1]}"
    printf '%s\t%s\n' "${name}" "${job}" >> "${jobs}"
  done
  if [ -n "${jobs_out}" ]; then
    log "Stage 5-6: jobs of ${exp} appended to ${jobs_out}"
  else
    log "Stage 5-6: dispatch: ${jobs} (--cmd ${cmd}, --nj ${nj}; a log per fold in ${exp}/log/)"
    dispatch_opts=(--cmd "${cmd}" --nj "${nj}" --gpus-per-job "${nproc}")
    if [ "${cmd}" = slurm ] && [ -f "${slurm_config}" ]; then dispatch_opts+=(--slurm-config "${slurm_config}"); fi
    sertk dispatch "${jobs}" "${dispatch_opts[@]}"
  fi
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  log "Stage 7: score: ${exp} -> ${exp}/RESULTS.md"
  sertk score "${exp}"
fi
