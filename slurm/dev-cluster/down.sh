#!/usr/bin/env bash
# Stop the dev cluster started by up.sh, daemon by daemon, by pid file. Safe to run twice.
set -u
run=/run/hpcnas-slurm
stop() {
  local pidfile="$1" name="$2"
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do ps -o stat= -p "$pid" 2>/dev/null | grep -qv Z || break; sleep 0.1; done
    echo "[dev-cluster] stopped $name"
  fi
  rm -f "$pidfile"
}
for f in "$run"/slurmd-*.pid; do [ -e "$f" ] && stop "$f" "$(basename "$f" .pid)"; done
stop "$run/slurmctld.pid" slurmctld
stop "$run/slurmdbd.pid" slurmdbd
stop /run/mysqld/mysqld.pid mariadbd
stop /run/munge/munged.pid munged
exit 0
