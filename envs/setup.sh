#!/usr/bin/env bash
# Set up hpcnas on a fresh Debian/Ubuntu machine (or laptop): system MPI, a
# virtual environment at .venv, the pinned CPU torch, and the project in
# editable mode.  Safe to run again: every step checks before it acts.
#
#   envs/setup.sh            runtime only
#   envs/setup.sh --dev      + test tools (pytest, ...)
#
# Environment: PYTHON (interpreter used to create .venv, default python3),
# HPCNAS_TORCH (torch requirement, default torch==2.13.0: pinned, because an
# unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: error: unknown option '$arg' (known: --dev)" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- system packages -------------------------------------------------------
apt_packages=(openmpi-bin libopenmpi-dev graphviz)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    log "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "warning: no apt-get; install an MPI (mpirun, libmpi) and graphviz yourself (see envs/README.md)"
  fi
fi

# --- virtual environment ---------------------------------------------------
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)

torch_req="${HPCNAS_TORCH:-torch==2.13.0}"
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  log "installing $torch_req"
  "${pip[@]}" install "$torch_req"
fi

extras="mpi"
[ "$dev" = 1 ] && extras="mpi,dev"
stamp=".venv/.hpcnas-installed-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)-$extras"
if [ ! -f "$stamp" ]; then
  log "installing hpcnas[$extras] (editable)"
  "${pip[@]}" install -e ".[$extras]"
  rm -f .venv/.hpcnas-installed-*
  touch "$stamp"
fi

log "ready: activate with 'source .venv/bin/activate'"
