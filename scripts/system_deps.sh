#!/usr/bin/env bash
# Installs the system libraries gozaru builds against (Debian/Ubuntu), only when missing.
set -euo pipefail
# BLAS is not among them: it comes from PyPI (scipy-openblas32, see setup.py).
need=()
pkg-config --exists hdf5 2>/dev/null || need+=(libhdf5-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
