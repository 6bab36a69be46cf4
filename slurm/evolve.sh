#!/bin/bash
# Discrete search (regularized evolution) on MPI: rank 0 dispatches, every rank trains candidates on its GPU.
#
#   sbatch [sbatch options] slurm/evolve.sh [hpcnas evolve arguments]
#
# Arguments after the script name go to hpcnas (the last --config / --out wins).
# Account, partition, QoS, constraint: sbatch -A/-p/-q/-C, or SBATCH_ACCOUNT,
# SBATCH_PARTITION, SBATCH_QOS, SBATCH_CONSTRAINT in the environment.
# Environment, run directory, requeue at the time limit: slurm/lib/job.sh.
#SBATCH --job-name=evolve
#SBATCH --nodes=4
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
hpcnas_job evolve --config "$HPCNAS_ROOT/configs/evolve_darts_unet.yaml" "$@"
