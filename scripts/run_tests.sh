#!/usr/bin/env bash
# Runs the test suite; "no tests collected" (pytest exit code 5) is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@" tests
rc=$?
if [ $rc -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $rc
