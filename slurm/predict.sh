#!/bin/bash
# Predict a folder of scenes with a trained (or exported) network: one GPU per task, and as a job
# array the tasks share the scenes (task K of N takes every N-th scene from the K-th).
#
#   sbatch --array=0-7 [sbatch options] slurm/predict.sh --checkpoint RUN/checkpoints/best.pt \
#       --input SCENES/ --out PREDICTIONS/ [--vector --probabilities ...]
#
# Arguments after the script name go to hpcnas predict.  Every task writes into the same --out
# (one set of files per scene, renamed into place when complete); --resume is always on, so a
# task killed at its time limit loses only the scene it was on: submit the same command again.
# Account, partition, QoS, constraint: sbatch -A/-p/-q/-C, or SBATCH_ACCOUNT,
# SBATCH_PARTITION, SBATCH_QOS, SBATCH_CONSTRAINT in the environment.
# Environment ($HPCNAS_ENV or .venv): slurm/lib/job.sh.
#SBATCH --job-name=predict
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=10
#SBATCH --hint=nomultithread
#SBATCH --time=04:00:00
#SBATCH --output=%x-%A_%a.out

source "${HPCNAS_ROOT:-$SLURM_SUBMIT_DIR}/slurm/lib/job.sh" || { echo "hpcnas job: error: no slurm/lib/job.sh under ${HPCNAS_ROOT:-$SLURM_SUBMIT_DIR}: submit from the hpcnas repository or set HPCNAS_ROOT" >&2; exit 2; }
[ -n "${SLURM_JOB_ID:-}" ] || hpcnas_job_error "not inside a SLURM job: submit this script with sbatch"
hpcnas_job_environment
part=()
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  part=(--part "$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))/${SLURM_ARRAY_TASK_COUNT}")
fi
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}
echo "[hpcnas job] $(date -Is) job ${SLURM_JOB_ID} on ${SLURM_JOB_NODELIST}: hpcnas predict $* ${part[*]}"
# shellcheck disable=SC2086
srun ${HPCNAS_SRUN_ARGS:-} hpcnas predict "$@" "${part[@]}" --resume
