#!/usr/bin/env bash
# gpu_check.sh OUTDIR — all GPU work in one go, on the GPU machine, from the repository root:
#   build   gozaru._core with GOZARU_CUDA=1, in place (HDF5/OpenBLAS from _deps/debs, cuBLAS from the
#           CUDA toolkit or the nvidia-cublas wheel that torch brings)
#   test    pytest tests/test_cuda.py
#   small   benchmarks/bench_gpu.py --small (smoke run, about a minute)
#   bench   benchmarks/bench_gpu.py on the rinna-3.6b shape, seq 512
# GZ_STAGES picks stages (default "build test small"; GZ_TEST_K narrows the test stage to a pytest -k expression; "bench" alone reuses a build left on a warm
# machine). Each stage has a time limit (LIMIT_* below); the selected stages' limits must sum to less
# than 540 s, so one device call of at most 600 s always ends with its summary written. A test stage
# in which no test ran (all skipped, e.g. no usable device) counts as failed and is reported "skipped". OUTDIR receives at most 7 files (summary.txt, build.log, test_cuda.log, bench_small.log,
# bench_small.json, bench_gpu.log, bench_gpu.json). Exit status: non-zero when a stage failed.
#
# Prepare once on the development machine:  bash benchmarks/fetch_gpu_deps.sh   (fills _deps/debs)
# See docs/cuda.md for the exact device calls.
set -uo pipefail
OUTDIR=${1:?usage: gpu_check.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
STAGES=${GZ_STAGES:-build test small}
PY=${PYTHON:-python3}
DEPS=${GZ_DEPS_DIR:-/tmp/gz-deps}
SUMMARY="$OUTDIR/summary.txt"
FAILED=0
LIMIT_build=180 LIMIT_test=240 LIMIT_small=100 LIMIT_bench=480
total=0
for st in $STAGES; do
    lim_var="LIMIT_$st"
    [ -n "${!lim_var:-}" ] || { echo "gpu_check: unknown stage '$st' (build, test, small, bench)" >&2; exit 2; }
    total=$((total + ${!lim_var}))
done
if [ "$total" -ge 540 ]; then
    echo "gpu_check: stages [$STAGES] may take $total s; choose stages whose limits sum to under 540 s" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1

note() { echo "$*" | tee -a "$SUMMARY"; }
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

: >"$SUMMARY"
note "gpu_check: stages [$STAGES], $(date -u +%FT%TZ), $(uname -m)"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import sys, numpy, torch, transformers; print('python', sys.version.split()[0], 'numpy', numpy.__version__,
'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" 2>&1
} | tee -a "$SUMMARY"

# ---------------------------------------------------------------- HDF5 + OpenBLAS from _deps/debs
# Unpacked with dpkg-deb (no root); setup.py gets prefixes through GOZARU_HDF5_DIR / GOZARU_BLAS_DIR;
# the loader path gets only the libraries whose soname this machine lacks (no clash with its own).
setup_deps() {
    if ! ls _deps/debs/*.deb >/dev/null 2>&1; then
        note "deps: no _deps/debs (run benchmarks/fetch_gpu_deps.sh here first); using the system's HDF5/BLAS"
        return 0
    fi
    local root="$DEPS/root" arch=usr/lib/x86_64-linux-gnu
    rm -rf "$DEPS" && mkdir -p "$root" "$DEPS/hdf5/lib" "$DEPS/blas/lib" "$DEPS/overlay"
    for d in _deps/debs/*.deb; do dpkg-deb -x "$d" "$root" || { note "deps: cannot unpack $d"; return 1; }; done
    ln -s "$root/usr/include/hdf5/serial" "$DEPS/hdf5/include"
    ln -s "$(ls "$root/$arch"/libhdf5_serial.so.*.*.* | head -1)" "$DEPS/hdf5/lib/libhdf5.so"
    ln -s "$root/usr/include/x86_64-linux-gnu/openblas-pthread" "$DEPS/blas/include"
    ln -s "$root/$arch/openblas-pthread/libopenblas.so.0" "$DEPS/blas/lib/libopenblas.so"
    local have added=""
    have=$(ldconfig -p 2>/dev/null | awk '{print $1}')
    for f in "$root/$arch"/lib*.so.* "$root/$arch/openblas-pthread/libopenblas.so.0"; do
        local so
        so=$(objdump -p "$f" 2>/dev/null | awk '/SONAME/ {print $2}')
        if [ -z "$so" ]; then  # no binutils: libfoo.so.1.2.3 -> libfoo.so.1
            so=$(basename "$f" | sed -E 's/^(.*\.so\.[0-9]+).*/\1/')
        fi
        [ -e "$DEPS/overlay/$so" ] && continue
        if [[ "$so" == libhdf5_serial* || "$so" == libopenblas* ]] || ! grep -qx "$so" <<<"$have"; then
            ln -s "$f" "$DEPS/overlay/$so" && added="$added $so"
        fi
    done
    # The GPU machine has no network, so no scipy-openblas32 wheel: the brought OpenBLAS is the system BLAS.
    export GOZARU_HDF5_DIR="$DEPS/hdf5" GOZARU_BLAS=system GOZARU_BLAS_DIR="$DEPS/blas"
    export LD_LIBRARY_PATH="$DEPS/overlay${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    note "deps: HDF5/OpenBLAS from _deps/debs; loader overlay:$added"
}

# ---------------------------------------------------------------- CUDA toolkit and cuBLAS
# The toolkit may ship without cuBLAS; torch's nvidia-cublas wheel has its headers and libraries
# (libcublas.so.13 only: link names are made in $DEPS/cuda-link).
setup_cuda() {
    local nvcc home
    nvcc=$(command -v nvcc || true)
    for home in "${CUDA_HOME:-}" /usr/local/cuda "$( [ -n "$nvcc" ] && dirname "$(dirname "$(readlink -f "$nvcc")")")"; do
        [ -n "$home" ] && [ -f "$home/include/cuda_runtime.h" ] && break
        home=""
    done
    if [ -z "$home" ]; then note "cuda: no CUDA toolkit found (nvcc: ${nvcc:-none})"; return 1; fi
    export CUDA_HOME="$home" PATH="$home/bin:$PATH"
    mkdir -p "$DEPS/cuda-link"
    local wheel_dirs libdirs="" incs=""
    wheel_dirs=$("$PY" - <<'PYEOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for inc in glob.glob(os.path.join(r, "nvidia", "*", "include")):
        print(os.path.dirname(inc))
PYEOF
)
    if [ ! -f "$home/include/cublas_v2.h" ]; then
        for w in $wheel_dirs; do
            [ -f "$w/include/cublas_v2.h" ] && incs="-I$w/include" && break
        done
        [ -n "$incs" ] || { note "cuda: cublas_v2.h is neither in $home/include nor in an nvidia wheel"; return 1; }
        export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:+$NVCC_APPEND_FLAGS }$incs"
    fi
    for lib in cublas cublasLt cudart; do
        if ls "$home"/lib64/lib$lib.so "$home"/lib/lib$lib.so "$home"/targets/x86_64-linux/lib/lib$lib.so >/dev/null 2>&1; then
            continue
        fi
        local found=""
        for w in $wheel_dirs; do
            found=$(ls "$w"/lib/lib$lib.so.* 2>/dev/null | head -1)
            [ -n "$found" ] && break
        done
        [ -n "$found" ] || { note "cuda: lib$lib.so found nowhere"; return 1; }
        ln -sf "$found" "$DEPS/cuda-link/lib$lib.so"
        libdirs="$libdirs -Wl,-rpath,$(dirname "$found")"
    done
    export LDFLAGS="${LDFLAGS:+$LDFLAGS }-L$DEPS/cuda-link$libdirs"
    note "cuda: CUDA_HOME=$home nvcc=$(command -v nvcc) extra includes: ${NVCC_APPEND_FLAGS:-none} LDFLAGS: $LDFLAGS"
}

run_stage() {  # name timeout_s logfile command...
    local name=$1 limit=$2 log=$3
    shift 3
    local t0=$SECONDS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    note "stage $name: rc=$rc in $((SECONDS - t0)) s (log $(basename "$log"))"
    [ $rc -eq 0 ] || FAILED=1
    return $rc
}

setup_deps || FAILED=1
setup_cuda || FAILED=1

if has_stage build; then
    rm -f gozaru/_core*.so
    run_stage build "$LIMIT_build" "$OUTDIR/build.log" env GOZARU_CUDA=1 "$PY" setup.py build_ext --inplace
    so=$(ls gozaru/_core*.so 2>/dev/null | head -1)
    if [ -n "$so" ]; then
        ldd "$so" | grep -E "not found|hdf5|openblas|cublas|cudart|curl" | tee -a "$SUMMARY"
    fi
fi

avail=$("$PY" -c "import gozaru._core as c; print(c.backend_available('cuda'))" 2>&1 | tail -1)
note "gozaru._core.backend_available('cuda'): $avail"

if has_stage test; then
    # GZ_TEST_K: a pytest -k expression, to run part of the file when device time is short
    run_stage test "$LIMIT_test" "$OUTDIR/test_cuda.log" "$PY" -m pytest tests/test_cuda.py -v -rs -p no:cacheprovider \
        ${GZ_TEST_K:+-k "$GZ_TEST_K"}
    tail -3 "$OUTDIR/test_cuda.log" | tee -a "$SUMMARY"
    # pytest exits 0 when everything skipped: that proves nothing about the GPU code
    if ! grep -qE "[0-9]+ passed" "$OUTDIR/test_cuda.log"; then
        note "stage test: skipped (no test ran; see the skip reasons in test_cuda.log)"
        FAILED=1
    fi
fi

if [ "$avail" != "True" ]; then
    note "no usable CUDA backend: benchmarks skipped"
    has_stage small || has_stage bench && FAILED=1
else
    if has_stage small; then
        run_stage small "$LIMIT_small" "$OUTDIR/bench_small.log" "$PY" benchmarks/bench_gpu.py --small --case-timeout 40 \
            --out "$OUTDIR/bench_small.json"
        tail -12 "$OUTDIR/bench_small.log" | tee -a "$SUMMARY"
    fi
    if has_stage bench; then
        run_stage bench "$LIMIT_bench" "$OUTDIR/bench_gpu.log" "$PY" benchmarks/bench_gpu.py --case-timeout 110 \
            --out "$OUTDIR/bench_gpu.json"
        tail -12 "$OUTDIR/bench_gpu.log" | tee -a "$SUMMARY"
    fi
fi

note "gpu_check: $([ $FAILED -eq 0 ] && echo ok || echo FAILED)"
exit $FAILED
