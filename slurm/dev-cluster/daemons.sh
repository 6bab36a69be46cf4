# Pid-file helpers shared by up.sh and down.sh (sourced, not run).
#
# A pid file is trusted only while its process is alive and is the daemon it names. A machine restored from a
# snapshot, or rebooted without /run on tmpfs, keeps the pid files and sockets of daemons that no longer run, and
# by then their numbers may belong to other processes: starting nothing, or killing a stranger, would follow.

# alive PIDFILE NAME: the pid file's process runs (not a zombie) and its command is NAME.
alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$2" ] || return 1
  ps -o stat= -p "$pid" 2>/dev/null | grep -qv Z
}

# forget_stale PIDFILE NAME [FILE...]: when NAME is not running, remove its pid file and the sockets or locks
# it left, so the daemon starts afresh and nobody waits on a socket file that no server listens on.
forget_stale() {
  local pidfile="$1" name="$2"
  shift 2
  alive "$pidfile" "$name" || rm -f "$pidfile" "$@"
}
