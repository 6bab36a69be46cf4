#!/bin/bash
# Random cells in the searched topology, each retrained on one GPU (paper Fig. 13): one array task per cell, seeded by its index.
#
#   sbatch [sbatch options] slurm/random_baseline.sh [hpcnas train arguments]
#
# Arguments after the script name go to hpcnas (the last --config / --out wins).
# Account, partition, QoS, constraint: sbatch -A/-p/-q/-C, or SBATCH_ACCOUNT,
# SBATCH_PARTITION, SBATCH_QOS, SBATCH_CONSTRAINT in the environment.
# Environment, run directory, requeue at the time limit: slurm/lib/job.sh.
#SBATCH --job-name=random-baseline
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=10
#SBATCH --hint=nomultithread
#SBATCH --time=20:00:00
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --array=0-9
#SBATCH --output=%x-%A_%a.out

source "${HPCNAS_ROOT:-$SLURM_SUBMIT_DIR}/slurm/lib/job.sh" || { echo "hpcnas job: error: no slurm/lib/job.sh under ${HPCNAS_ROOT:-$SLURM_SUBMIT_DIR}: submit from the hpcnas repository or set HPCNAS_ROOT" >&2; exit 2; }
hpcnas_job train --config "$HPCNAS_ROOT/configs/darts_unet.yaml" --genotype random --seed "$SLURM_ARRAY_TASK_ID" "$@"
