#!/usr/bin/env bash
# Set up hpcnas on a fresh Debian/Ubuntu machine (or laptop): system MPI, a
# virtual environment at .venv, the pinned CPU torch, and the project in
# editable mode.  Safe to run again: every step checks before it acts.
#
#   envs/setup.sh            runtime only
#   envs/setup.sh --dev      + test tools (pytest, ruff, mypy, headless chromium)
#
# Environment: PYTHON (interpreter used to create .venv, default python3),
# HPCNAS_TORCH (torch requirement, default torch==2.13.0: pinned, because an
# unpinned torch pulls a multi-GB CUDA build), HPCNAS_SKIP_HOROVOD=1 (no
# Horovod build: single-process search only), HPCNAS_CACHE (where built
# wheels are kept, default ~/.cache/hpcnas).
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
[ "$dev" = 1 ] && apt_packages+=(chromium)  # the browser test of report/index.html (headless)
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

# --- Horovod (data-parallel search), built once per (horovod, torch, MPI) ----
# Horovod 0.28.1 is source-only; its CMake forces C++14 while torch >= 2 needs
# C++17, so the build goes through a compiler wrapper that appends -std=gnu++17
# (the last -std wins). The built wheel is cached under a key naming all three
# versions: pip's own wheel cache ignores the torch and MPI it was built against.
horovod_version="0.28.1"
if [ "${HPCNAS_SKIP_HOROVOD:-0}" != 1 ] && ! .venv/bin/python -c "import horovod.torch" >/dev/null 2>&1; then
  torch_version=$(.venv/bin/python -c "import torch; print(torch.__version__)")
  mpi_version=$(mpirun --version 2>/dev/null | head -n1 | tr -cd '[:alnum:]._-' || echo none)
  cache="${HPCNAS_CACHE:-$HOME/.cache/hpcnas}/horovod-${horovod_version}-torch${torch_version}-${mpi_version}"
  if ! ls "$cache"/horovod-*.whl >/dev/null 2>&1; then
    log "building horovod $horovod_version against torch $torch_version and $mpi_version (about 2 minutes, once)"
    wrapper_dir=$(mktemp -d)
    printf '#!/bin/sh\nexec g++ "$@" -std=gnu++17\n' > "$wrapper_dir/cxx17"
    chmod +x "$wrapper_dir/cxx17"
    command -v cmake >/dev/null || as_root apt-get install -y -qq cmake >/dev/null
    mkdir -p "$cache"
    CMAKE_POLICY_VERSION_MINIMUM=3.5 CXX="$wrapper_dir/cxx17" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
      HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 PATH="$here/.venv/bin:$PATH" \
      .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$cache" "horovod==$horovod_version"
    rm -rf "$wrapper_dir"
  fi
  log "installing horovod $horovod_version from $cache"
  "${pip[@]}" install --no-deps "$cache"/horovod-*.whl
  "${pip[@]}" install cloudpickle psutil packaging cffi pyyaml  # horovod's runtime needs, without letting it touch torch
fi

log "ready: activate with 'source .venv/bin/activate'"
