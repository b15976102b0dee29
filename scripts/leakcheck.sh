#!/usr/bin/env bash
# Leak check of a 20-step train + save + load loop (scripts/leakcheck_loop.py, error paths included).
#
#   scripts/leakcheck.sh             LeakSanitizer with the ASan build in build/asan/ (made by
#                                    scripts/sanitize.sh; built here if missing). About 10 s.
#   scripts/leakcheck.sh --valgrind  valgrind --leak-check=full with the normal in-place build. About 45 s.
#
# Python, NumPy and OpenBLAS keep some allocations until exit by design, so only leak reports with a
# gozaru frame (gozaru/_core*.so, csrc/, or a gz_/gzpy_/ckpt_ function) count, except the one-time type setup in PyInit__core.
# Exit status 1 when such a leak is found.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${GOZARU_ASAN_DIR:-$ROOT/build/asan}"
PY="$(${PYTHON:-python3} -c 'import sys; print(sys.executable)')"  # the real binary: a pyenv shim is a shell script
LOGDIR="$(mktemp -d)"
trap 'rm -rf "$LOGDIR"' EXIT
cd "$LOGDIR"  # so no ./gozaru shadows the build under test

if [ "${1:-}" = "--valgrind" ]; then
    command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
    export PYTHONPATH="$ROOT"
    PYTHONMALLOC=malloc valgrind --leak-check=full --show-leak-kinds=definite --num-callers=50 \
        --log-file="$LOGDIR/leak.log" "$PY" "$ROOT/scripts/leakcheck_loop.py" 20
    MODE=valgrind
else
    if ! ls "$OUT"/lib/gozaru/_core*.so >/dev/null 2>&1; then
        mkdir -p "$OUT"
        (cd "$ROOT" && GOZARU_SANITIZE=1 "$PY" setup.py -q build_py --build-lib "$OUT/lib" \
            build_ext --build-lib "$OUT/lib" --build-temp "$OUT/tmp" >"$OUT/build.log" 2>&1) \
            || { cat "$OUT/build.log"; echo "ASan build failed" >&2; exit 1; }
    fi
    export PYTHONPATH="$OUT/lib"
    # exitcode=0: leaks are judged below, not by LeakSanitizer's own verdict on the whole process.
    LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
        ASAN_OPTIONS="detect_leaks=1:exitcode=0:fast_unwind_on_malloc=0:malloc_context_size=64:log_path=$LOGDIR/leak.log" \
        "$PY" "$ROOT/scripts/leakcheck_loop.py" 20
    MODE=lsan
fi

"$PY" - "$MODE" "$LOGDIR"/leak.log* <<'EOF'
import re
import sys

mode, logs = sys.argv[1], sys.argv[2:]
text = "".join(open(p).read() for p in logs)
if mode == "valgrind":
    text = re.sub(r"^==\d+== ?", "", text, flags=re.M)
    records = [r for r in text.split("\n\n") if "definitely lost in loss record" in r]
else:
    records = [r for r in text.split("\n\n") if re.match(r"\s*(Direct|Indirect) leak", r)]
# valgrind names functions and bare file names, LeakSanitizer paths: match either.
ours = [r for r in records if re.search(r"gozaru/_core|csrc/|\b(gz|gzpy|ckpt)_\w+ ", r) and "PyInit__core" not in r]
print(f"leak check ({mode}): {len(records)} leak reports in total, {len(ours)} with gozaru frames")
for r in ours:
    print(r.strip(), end="\n\n")
sys.exit(1 if ours else 0)
EOF
