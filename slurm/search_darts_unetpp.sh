#!/bin/bash
# Data-parallel DARTS search of a UNet++ (Horovod, one rank per GPU, across nodes).
#
#   sbatch [sbatch options] slurm/search_darts_unetpp.sh [hpcnas search arguments]
#
# Arguments after the script name go to hpcnas (the last --config / --out wins).
# Account, partition, QoS, constraint: sbatch -A/-p/-q/-C, or SBATCH_ACCOUNT,
# SBATCH_PARTITION, SBATCH_QOS, SBATCH_CONSTRAINT in the environment.
# Environment, run directory, requeue at the time limit: slurm/lib/job.sh.
#SBATCH --job-name=search-darts-unetpp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=10
#SBATCH --hint=nomultithread
#SBATCH --time=20:00:00
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

source "${HPCNAS_ROOT:-$SLURM_SUBMIT_DIR}/slurm/lib/job.sh" || { echo "hpcnas job: error: no slurm/lib/job.sh under ${HPCNAS_ROOT:-$SLURM_SUBMIT_DIR}: submit from the hpcnas repository or set HPCNAS_ROOT" >&2; exit 2; }
hpcnas_job search --config "$HPCNAS_ROOT/configs/darts_unetpp.yaml" "$@"
