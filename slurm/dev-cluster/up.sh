#!/usr/bin/env bash
# A real single-host SLURM cluster from Debian packages, for trying hpcnas jobs
# on a laptop or a CI machine: munge, MariaDB + slurmdbd (accounting, so sacct
# and submitit's job states work), slurmctld and one slurmd per emulated node.
# No systemd needed: every daemon is started by hand and stopped by its pid
# file (slurm/dev-cluster/down.sh). Idempotent: a running cluster is kept; a cluster started
# afresh starts clean (no job or node state of an earlier one).
#
#   sudo slurm/dev-cluster/up.sh [--nodes N] [--cpus C] [--gpus G]   (default 2 nodes, 2 CPUs, 4 GPUs each)
#
# The GPUs are GRES entries without devices, so job scripts written for GPU
# nodes (--gres=gpu:4) are scheduled here unchanged; the jobs run on the CPU.
#   sinfo; sbatch ...; slurm/dev-cluster/down.sh
set -euo pipefail

nodes=2
cpus=2
gpus=4
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "up.sh: error: unknown option '$1' (known: --nodes N, --cpus C, --gpus G)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "up.sh: error: run as root (the daemons need it)" >&2; exit 2; }

state=/var/lib/hpcnas-slurm
run=/run/hpcnas-slurm
host=$(hostname -s)
log() { printf '[dev-cluster] %s\n' "$*"; }
# shellcheck source=slurm/dev-cluster/daemons.sh
. "$(dirname "$0")/daemons.sh"

packages=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$state" "$run" /var/log/hpcnas-slurm /etc/slurm

# --- munge ------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
forget_stale /run/munge/munged.pid munged /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
if ! alive /run/munge/munged.pid munged; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
fi

# --- MariaDB (accounting storage) ---------------------------------------------
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld  # its pid file must not live in a root-owned folder
if [ ! -d /var/lib/mysql/mysql ]; then
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
forget_stale /run/mysqld/mysqld.pid mariadbd /run/mysqld/mysqld.sock
if ! alive /run/mysqld/mysqld.pid mariadbd; then
  log "starting mariadbd"
  (runuser -u mysql -- /usr/sbin/mariadbd --pid-file=/run/mysqld/mysqld.pid --socket=/run/mysqld/mysqld.sock >/var/log/hpcnas-slurm/mariadb.log 2>&1 &)
fi
# Ready means answering, not a socket file: a first start creates its system tables before it listens.
for _ in $(seq 300); do mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1 && break; sleep 0.1; done
if ! mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1; then
  echo "up.sh: error: mariadbd did not answer within 30 s; its log ends:" >&2
  tail -n 15 /var/log/hpcnas-slurm/mariadb.log >&2
  exit 1
fi
fresh=0
alive "$run/slurmctld.pid" slurmctld || alive "$run/slurmdbd.pid" slurmdbd || fresh=1
if [ "$fresh" = 1 ]; then  # job numbers start again at 1: an old record under a new job's number would lie
  mariadb --socket=/run/mysqld/mysqld.sock -e "DROP DATABASE IF EXISTS slurm_acct_db;"
fi
mariadb --socket=/run/mysqld/mysqld.sock -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'hpcnas-dev'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# --- configuration ------------------------------------------------------------
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=hpcnas-dev
StorageLoc=slurm_acct_db
PidFile=$run/slurmdbd.pid
LogFile=/var/log/hpcnas-slurm/slurmdbd.log
CONF
chmod 600 /etc/slurm/slurmdbd.conf

last_port=$((17000 + nodes))
# `sbatch --wait` polls at 2, 8 and then every 32 s while MinJobAge/2 (integer) exceeds its sleep, so with the
# default MinJobAge of 300 a 12 s job returned after 42 s. With 5 it polls every 2 s, and a finished job's record
# (which it reads the exit code from) lives at least 5 s: 0 or 1 would be raised to 2 by slurmctld, with an
# error line, leaving no margin between a poll and the purge.
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=hpcnas-dev
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
SchedulerParameters=bf_interval=1,sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
EnforcePartLimits=ALL
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd-%n.pid
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d-%n
SlurmctldLogFile=/var/log/hpcnas-slurm/slurmctld.log
SlurmdLogFile=/var/log/hpcnas-slurm/slurmd-%n.log
TmpFS=$state/tmp-%n
InactiveLimit=0
KillWait=5
MinJobAge=5
NodeName=n[1-$nodes] NodeHostname=$host Port=17001-$last_port CPUs=$cpus RealMemory=2000 Gres=gpu:$gpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# slurmd counts GPUs by their device files: character devices that are /dev/null stand in
for g in $(seq 0 $((gpus - 1))); do
  [ -c "$state/fake-gpu$g" ] || mknod "$state/fake-gpu$g" c 1 3
done
cat > /etc/slurm/gres.conf <<CONF
NodeName=n[1-$nodes] Name=gpu File=$state/fake-gpu[0-$((gpus - 1))]
CONF
if [ "$fresh" = 1 ]; then
  # a fresh start is a clean one: jobs of an earlier cluster (pending when it was stopped) must not run again
  rm -rf "$state/ctld" "$state"/d-n* "$state"/tmp-n*
fi
mkdir -p "$state/ctld"
for k in $(seq "$nodes"); do mkdir -p "$state/d-n$k" "$state/tmp-n$k"; done

# --- daemons ------------------------------------------------------------------
if ! alive "$run/slurmdbd.pid" slurmdbd; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
  for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
fi
sacctmgr -i -Q add cluster hpcnas-dev >/dev/null 2>&1 || true
if ! alive "$run/slurmctld.pid" slurmctld; then
  log "starting slurmctld"
  /usr/sbin/slurmctld
fi
for k in $(seq "$nodes"); do
  if ! alive "$run/slurmd-n$k.pid" slurmd; then
    log "starting slurmd n$k"
    /usr/sbin/slurmd -N "n$k"
  fi
done
for _ in $(seq 150); do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle"' | sort -u | wc -l)  # not drained, not down
  [ "$idle" -ge "$nodes" ] && break
  scontrol update nodename="n[1-$nodes]" state=resume >/dev/null 2>&1 || true
  sleep 0.2
done
sinfo
log "up: $nodes node(s) x $cpus CPU(s); stop with slurm/dev-cluster/down.sh"
