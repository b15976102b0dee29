#!/usr/bin/env bash
# Creates the project's virtual env .venv (used by `make` unless a virtual env is already active).
# Debian 12 / Ubuntu 24.04 mark the system python3 "externally managed" (PEP 668): pip refuses to install into
# it, so the package and its dependencies go into .venv. python3-venv (ensurepip) is installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${BASE_PYTHON:-python3}"
if [ -x .venv/bin/python ]; then exit 0; fi
install_venv_package() {
  local ver SUDO=""
  ver=$("$BASE" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing python${ver}-venv (needed to create .venv)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "python${ver}-venv" >/dev/null \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
}
# Debian/Ubuntu move ensurepip (which venv needs for pip) into python3.X-venv
if ! "$BASE" -c "import ensurepip, venv" 2>/dev/null || ! "$BASE" -m venv .venv >/dev/null 2>&1; then
  rm -rf .venv
  install_venv_package
  "$BASE" -m venv .venv
fi
echo "created .venv ($(.venv/bin/python --version)); activate it with:  . .venv/bin/activate"
