#!/usr/bin/env bash
# The nvcc compile check of csrc/cuda (tests/test_cuda.py) needs cublas_v2.h, and a CUDA toolkit may come
# without cuBLAS. This takes only the headers out of PyPI's nvidia-cublas wheel into _deps/cublas/include
# (git-ignored); no library is installed. Best effort: without them the test compiles the other files.
set -uo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || exit 0
dest=_deps/cublas/include
for d in "$dest" "${CUDA_HOME:-/usr/local/cuda}/include" /usr/local/cuda/include /usr/include; do
  [ -f "$d/cublas_v2.h" ] && exit 0
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "${PYTHON:-python3}" -m pip download -q --no-deps nvidia-cublas -d "$tmp" 2>/dev/null; then
  echo "warning: could not download nvidia-cublas; the CUDA compile check will skip cuBLAS files" >&2
  exit 0
fi
"${PYTHON:-python3}" - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
wheel, dest = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/include/" in name and not name.endswith("/"):
            out = os.path.join(dest, name.split("/include/", 1)[1])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
echo "cuBLAS headers in $dest"
