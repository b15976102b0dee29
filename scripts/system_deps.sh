#!/usr/bin/env bash
# Installs the system libraries gozaru builds against (Debian/Ubuntu), only when missing.
set -euo pipefail
need=()
pkg-config --exists openblas 2>/dev/null || [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || need+=(libopenblas-dev)
# The OpenMP build of OpenBLAS shares gozaru's OpenMP thread pool (setup.py prefers it when present);
# it installs beside the default pthread build without replacing it.
ls /usr/lib/*/openblas-openmp/libopenblas.so >/dev/null 2>&1 || need+=(libopenblas-openmp-dev)
pkg-config --exists hdf5 2>/dev/null || need+=(libhdf5-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
