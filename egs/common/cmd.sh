# shellcheck shell=bash
# How a recipe runs its per-fold jobs (stages 5-6), as Kaldi's and ESPnet's cmd.sh: `local` runs --nj jobs
# at a time on this machine (each on its share of the cores, or on one GPU); `slurm` submits them as one
# sbatch job array with the options of conf/slurm.yaml (partition, GPUs, time, memory). --cmd overrides it.
# shellcheck disable=SC2034  # read by egs/common/pipeline.sh, which sources this file
cmd=local
# cmd=slurm
