#!/usr/bin/env bash
# fetch_gpu_deps.sh — fills _deps/debs/ (git-ignored) with the Debian packages that the GPU machine
# lacks to build gozaru: HDF5 and OpenBLAS headers and libraries, and the shared libraries they load.
# benchmarks/gpu_check.sh unpacks them there with dpkg-deb (no root, no apt, no network needed).
#
# Run here, on the development machine (Debian 12; its glibc 2.36 is older than the GPU image's,
# so these libraries load there):   bash benchmarks/fetch_gpu_deps.sh
# then name _deps in the device run's carry list. About 25 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=_deps/debs
mkdir -p "$DEST"

# Headers + the libraries linked directly, then what they need at run time: HDF5 needs libsz/libaec
# and libcurl (its read-only S3 driver), libcurl its TLS/HTTP/LDAP/Kerberos stack, OpenBLAS libgfortran.
# gpu_check.sh puts a library on the loader path only when the machine has no library of that soname.
PACKAGES=(
    libhdf5-dev libhdf5-103-1 libsz2 libaec0
    libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
    libcurl4 libnghttp2-14 librtmp1 libssh2-1 libpsl5 libldap-2.5-0 libsasl2-2 libgssapi-krb5-2 libkrb5-3
    libk5crypto3 libkrb5support0 libkeyutils1 libbrotli1 libidn2-0 libzstd1 libssl3
    libcom-err2 libdb5.3 libffi8 libgmp10 libgnutls30 libhogweed6 libnettle8 libp11-kit0
    libsasl2-modules-db libtasn1-6 libunistring2
)

if ! apt-cache show "${PACKAGES[0]}" >/dev/null 2>&1; then
    apt-get update -qq
fi
rm -f "$DEST"/*.deb
(cd "$DEST" && apt-get download "${PACKAGES[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
n=$(ls "$DEST"/*.deb | wc -l)
if [ "$n" -ne "${#PACKAGES[@]}" ]; then
    echo "fetch_gpu_deps: expected ${#PACKAGES[@]} packages, got $n in $DEST" >&2
    exit 1
fi
du -sh "$DEST"
echo "fetch_gpu_deps: ok ($n packages in $DEST)"
