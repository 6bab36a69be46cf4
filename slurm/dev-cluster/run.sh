#!/usr/bin/env bash
# Run a command with the dev cluster up, and stop the cluster afterwards even
# when the command fails (a cluster that was already up is left running).
#
#   slurm/dev-cluster/run.sh COMMAND [ARGS...]      e.g. .venv/bin/python -m pytest
#
# Not root: the cluster cannot be started; the command runs without it (the
# SLURM tests skip themselves, unless HPCNAS_REQUIRE_SLURM=1 makes them fail).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -gt 0 ] || { echo "run.sh: error: give the command to run" >&2; exit 2; }

if [ "$(id -u)" != 0 ]; then
  echo "[dev-cluster] not root: running without the SLURM dev cluster" >&2
  exec "$@"
fi
started=0
if ! sinfo -h >/dev/null 2>&1; then
  bash "$here/up.sh" || { echo "run.sh: error: the dev cluster did not start (logs: /var/log/hpcnas-slurm)" >&2; exit 1; }
  started=1
fi
stop() { [ "$started" = 1 ] && bash "$here/down.sh"; }
trap stop EXIT
trap 'exit 143' TERM INT
"$@"
