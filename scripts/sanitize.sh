#!/usr/bin/env bash
# The C-core and checkpoint tests under AddressSanitizer + UndefinedBehaviorSanitizer, then the leak check.
#
#   scripts/sanitize.sh                 default test files (below); 30 s to 1 min on 2 cores
#   scripts/sanitize.sh tests/test_x.py any pytest arguments instead
#
# gozaru._core is built with GOZARU_SANITIZE=1 into build/asan/ (override: GOZARU_ASAN_DIR), so the normal
# in-place build stays untouched. Python itself is not instrumented, hence libasan is preloaded; leak
# detection is off during the tests (Python keeps memory until exit) and done by scripts/leakcheck.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${GOZARU_ASAN_DIR:-$ROOT/build/asan}"
PY="$(${PYTHON:-python3} -c 'import sys; print(sys.executable)')"  # the real binary: a pyenv shim is a shell script

echo "== building gozaru._core and the test-only _gozaru_testops with ASan + UBSan into $OUT"
mkdir -p "$OUT"
(cd "$ROOT" && GOZARU_SANITIZE=1 GOZARU_TEST_OPS=1 "$PY" setup.py -q build_py --build-lib "$OUT/lib" \
    build_ext --build-lib "$OUT/lib" --build-temp "$OUT/tmp" >"$OUT/build.log" 2>&1) \
    || { cat "$OUT/build.log"; echo "ASan build failed" >&2; exit 1; }

if [ $# -eq 0 ]; then
    set --
    for t in test_ops_fd test_bad_input test_bad_input_calls test_views test_checkpoint test_checkpoint_kill test_checkpoint_corrupt; do
        [ -f "$ROOT/tests/$t.py" ] && set -- "$@" "$ROOT/tests/$t.py"
    done
fi

echo "== pytest under ASan + UBSan"
# From inside $OUT, so the source tree's gozaru/ (with the uninstrumented build) is not on sys.path.
(cd "$OUT" && \
    LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:check_initialization_order=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    PYTHONPATH="$OUT/lib" \
    "$PY" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" -c "$ROOT/pyproject.toml" "$@")

echo "== leak check"
GOZARU_ASAN_DIR="$OUT" "$ROOT/scripts/leakcheck.sh"
