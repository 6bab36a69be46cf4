#!/usr/bin/env bash
# Stop the dev cluster started by up.sh: its jobs (cancelled, and any job step that outlives them killed
# with its processes), then daemon by daemon, by pid file. Safe to run twice. No slurmstepd is left.
set -u
run=/run/hpcnas-slurm
# shellcheck source=slurm/dev-cluster/daemons.sh
. "$(dirname "$0")/daemons.sh"
stop() {  # a stale pid file is removed, never followed: its number may be another process's by now
  local pidfile="$1" name="$2"
  [ -f "$pidfile" ] || return 0
  if alive "$pidfile" "$name"; then
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do alive "$pidfile" "$name" || break; sleep 0.1; done
    echo "[dev-cluster] stopped $name"
  fi
  rm -f "$pidfile"
}
# Jobs first: a job step left behind (one hung in MPI start-up, say) would keep a slurmstepd and its
# processes alive after the daemons are gone, and hold the next cluster's nodes in CG.
if squeue -h >/dev/null 2>&1; then
  jobs=$(squeue -h -o %i)
  if [ -n "$jobs" ]; then
    scancel $jobs 2>/dev/null
    for _ in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
tree() {  # a process and all its descendants, parents first
  local pid="$1" child
  echo "$pid"
  for child in $(pgrep -P "$pid"); do tree "$child"; done
}
for signal in TERM KILL; do
  steps=$(pgrep -x slurmstepd)
  [ -n "$steps" ] || break
  for step in $steps; do kill -s "$signal" $(tree "$step") 2>/dev/null; done
  for _ in $(seq 30); do pgrep -x slurmstepd >/dev/null || break; sleep 0.1; done
  [ "$signal" = TERM ] || echo "[dev-cluster] killed job steps that outlived their jobs"
done
for f in "$run"/slurmd-*.pid; do [ -e "$f" ] && stop "$f" slurmd; done
stop "$run/slurmctld.pid" slurmctld
stop "$run/slurmdbd.pid" slurmdbd
stop /run/mysqld/mysqld.pid mariadbd
stop /run/munge/munged.pid munged
exit 0
