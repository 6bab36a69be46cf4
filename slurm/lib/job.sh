# What every hpcnas job script does, in one place; sourced by slurm/*.sh, not run.
#
#   hpcnas_job COMMAND [ARGS...]    run `hpcnas COMMAND ARGS` on every task of the job (srun)
#
# * The repository: sbatch runs a copy of the script from its spool folder, so
#   the scripts find this file through $HPCNAS_ROOT (default: the folder sbatch
#   was called from, $SLURM_SUBMIT_DIR).
# * The environment: $HPCNAS_ENV is run first when set (module loads, conda
#   activate: see envs/README.md); otherwise $HPCNAS_ROOT/.venv is activated
#   when it exists (envs/setup.sh).
# * The run directory: --out from the arguments (DIR/<task id> in a job array),
#   or runs/<job name>-<job id> (<array job id>_<task id> in a job array): the
#   same across requeues.
# * Requeue: SIGUSR2 before the time limit (#SBATCH --signal) makes hpcnas save
#   its state and exit 75; the job then requeues itself and the next start
#   continues the run (--resume-existing), at most $HPCNAS_MAX_REQUEUES times (20).
#   A task that SIGUSR2 ended before hpcnas could catch it (a warning that
#   lands while Python is still starting) requeues too: what is on disk is
#   always a state a run can resume from.
# * $HPCNAS_SRUN_ARGS: extra srun options (e.g. --mpi=pmix where the cluster's
#   default MPI plugin does not start Open MPI).

HPCNAS_ROOT=${HPCNAS_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
EXIT_RESUMABLE=75
EXIT_KILLED_BY_WARNING=$((128 + $(kill -l USR2)))  # srun's code for a task that SIGUSR2 ended

hpcnas_job_error() {
  echo "hpcnas job: error: $*" >&2
  exit 2
}

hpcnas_job_environment() {
  if [ -n "${HPCNAS_ENV:-}" ]; then
    eval "$HPCNAS_ENV" || hpcnas_job_error "HPCNAS_ENV failed: $HPCNAS_ENV"
  elif [ -f "$HPCNAS_ROOT/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "$HPCNAS_ROOT/.venv/bin/activate"
  fi
  command -v hpcnas >/dev/null || hpcnas_job_error "no 'hpcnas' on PATH: run envs/setup.sh in $HPCNAS_ROOT, or set HPCNAS_ENV to the commands that load your environment"
}

# The value of the last --out in the arguments (--out DIR or --out=DIR; the last one wins, as
# in hpcnas), empty when absent.
hpcnas_job_out() {
  local previous= found=
  for arg in "$@"; do
    case "$arg" in
      --out=*) found=${arg#--out=} ;;
      *) [ "$previous" = --out ] && found=$arg ;;
    esac
    previous=$arg
  done
  echo "$found"
}

hpcnas_job() {
  local command=$1
  shift
  [ -n "${SLURM_JOB_ID:-}" ] || hpcnas_job_error "not inside a SLURM job: submit this script with sbatch"
  hpcnas_job_environment
  local out
  out=$(hpcnas_job_out "$@")
  if [ -z "$out" ]; then
    local id=${SLURM_JOB_ID}
    [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && id="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    out="runs/${SLURM_JOB_NAME}-${id}"
    set -- "$@" --out "$out"
  elif [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    out="$out/${SLURM_ARRAY_TASK_ID}"  # one run directory per array task
    set -- "$@" --out "$out"
  fi
  export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}  # torch's threads: this task's CPUs, not the node's
  # Open MPI's hwloc probes X displays at start; a TensorBoard on port 6006 (display :6) never answers and hangs it
  export HWLOC_COMPONENTS=${HWLOC_COMPONENTS:--gl}
  local restarts=${SLURM_RESTART_COUNT:-0}
  echo "[hpcnas job] $(date -Is) job ${SLURM_JOB_ID} start $((restarts + 1)) on ${SLURM_JOB_NODELIST} (${SLURM_NTASKS:-1} task(s)): hpcnas $command $* -> $out"
  # shellcheck disable=SC2086
  srun ${HPCNAS_SRUN_ARGS:-} hpcnas "$command" "$@" --resume-existing
  local code=$?
  if [ "$code" -eq "$EXIT_KILLED_BY_WARNING" ]; then
    echo "[hpcnas job] $(date -Is) SIGUSR2 ended hpcnas $command before it could catch it: the next start continues from its last saved state"
    code=$EXIT_RESUMABLE
  fi
  if [ "$code" -eq "$EXIT_RESUMABLE" ]; then
    if [ "$restarts" -ge "${HPCNAS_MAX_REQUEUES:-20}" ]; then
      echo "[hpcnas job] $(date -Is) stopped with work left after $restarts requeue(s) (HPCNAS_MAX_REQUEUES): submit the script again with --out $out to continue" >&2
      return "$code"
    fi
    echo "[hpcnas job] $(date -Is) state saved in $out: requeueing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}" || hpcnas_job_error "scontrol requeue ${SLURM_JOB_ID} failed: resume by hand with --resume $out"
    return "$code"
  fi
  echo "[hpcnas job] $(date -Is) hpcnas $command exited with code $code"
  return "$code"
}
