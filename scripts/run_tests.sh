#!/usr/bin/env bash
# Runs the test suite; "no tests collected" (pytest exit code 5) is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
# The test-only op module (_gozaru_testops, next to the checkout; never installed): built alone, so the
# installed gozaru._core is left exactly as it was built.
GOZARU_TEST_OPS=only "${PYTHON:-python3}" setup.py -q build_ext --inplace >/dev/null \
  || { echo "error: building _gozaru_testops failed" >&2; exit 1; }
"${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@" tests
rc=$?
if [ $rc -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $rc
