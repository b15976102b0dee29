"""Builds gozaru._core from csrc/ (C11, OpenMP, CBLAS, libhdf5; optional CUDA backend).

Environment variables
  GOZARU_CUDA=1        also compile csrc/cuda/*.cu with nvcc and link cuBLAS + CUDA runtime
  GOZARU_SANITIZE=1    build with AddressSanitizer + UndefinedBehaviorSanitizer (-O1 -g)
  GOZARU_TEST_OPS=1    also build _gozaru_testops (csrc/testops: the CPU ops on NumPy arrays, for the test
                       suite only; a top-level module outside the gozaru package, so never installed with it);
                       =only builds just that module (scripts/run_tests.sh: the installed _core stays as built)
  GOZARU_HDF5_DIR      prefix holding include/ and lib/ of HDF5 (when pkg-config has none)
  GOZARU_BLAS          "scipy-openblas32" (default) or "system"
  GOZARU_BLAS_DIR      with GOZARU_BLAS=system: prefix holding include/cblas.h and lib/ (else pkg-config openblas)
  GOZARU_BLAS_LIBS     with GOZARU_BLAS=system: comma-separated libraries to link (default "openblas"; e.g.
                       "mkl_rt" for MKL)
  GOZARU_BF16          "auto" (default): build precision="bf16" when MKL is found; "mkl": require it; "off"
  GOZARU_MKL_DIR       prefix holding include/mkl_cblas.h and lib/libmkl_rt.so.3 (default: this Python's
                       prefix, where `pip install mkl-devel` puts them)

BLAS: by default the OpenBLAS of the PyPI package scipy-openblas32 (what NumPy/SciPy ship): built with
DYNAMIC_ARCH, so it picks AVX2/AVX-512 kernels on the CPU it runs on, the same release on every machine.
(Debian 12's OpenBLAS 0.3.21 falls back to generic Prescott kernels on newer Xeons: 3.6x slower.) Its symbols
carry a scipy_ prefix; csrc/blas.h maps the plain CBLAS names to them (GZ_BLAS_PREFIX). At run time
gozaru/__init__.py imports scipy_openblas32 before _core, which loads the library by its soname, so the
extension finds it wherever pip put it (a wheel built in an isolated build env cannot rely on the rpath of
that temporary env); the rpath entries below are a fallback for builds that import _core directly.

bf16 GEMMs (precision="bf16", csrc/precision.h): MKL's cblas_gemm_bf16bf16f32 (AVX512-BF16 and AMX kernels), an
optional feature because MKL is large (PyPI mkl: 221 MB download, 845 MB installed with its dependencies). It is
linked by soname (libmkl_rt.so.3) with rpath entries for the prefix pip installs it into; gozaru/__init__.py loads
it first when present there. Without it the build still runs "bf16-emulated" everywhere (README: precision).
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def pkg_config(name, search_path=None):
    """(include_dirs, library_dirs, libraries) from pkg-config, or None. search_path: a folder of .pc files
    searched before the default ones."""
    env = None
    if search_path:
        env = dict(os.environ, PKG_CONFIG_PATH=os.pathsep.join(filter(None, [search_path,
                                                                             os.environ.get("PKG_CONFIG_PATH")])))
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs", name], check=True, capture_output=True,
                             text=True, env=env).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    inc, libdirs, libs = [], [], []
    for tok in shlex.split(out):
        if tok.startswith("-I"):
            inc.append(tok[2:])
        elif tok.startswith("-L"):
            libdirs.append(tok[2:])
        elif tok.startswith("-l"):
            libs.append(tok[2:])
    return inc, libdirs, libs


def dependency(name, env, default_libs):
    prefix = os.environ.get(env)
    if prefix:
        return [os.path.join(prefix, "include")], [os.path.join(prefix, "lib")], default_libs
    found = pkg_config(name)
    if found is None:
        sys.stderr.write(f"warning: pkg-config found no {name}; set {env} to its install prefix\n")
        return [], [], default_libs
    return found


def rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


# csrc/ holds the shared headers and glue; each floor of the core is a folder (model, checkpoint, optim, cpu, py)
CORE_FOLDERS = ("model", "checkpoint", "optim", "cpu", "py")
sources = rel(glob.glob(os.path.join(ROOT, "csrc", "*.c"))
              + [f for d in CORE_FOLDERS for f in glob.glob(os.path.join(ROOT, "csrc", d, "*.c"))])
include_dirs = [os.path.join("csrc"), np.get_include()]
library_dirs, libraries = [], []
i, d, l = dependency("hdf5", "GOZARU_HDF5_DIR", ["hdf5"])
include_dirs += i
library_dirs += d
libraries += l
define_macros = []
runtime_library_dirs = list(library_dirs)

BLAS = os.environ.get("GOZARU_BLAS", "scipy-openblas32")
if BLAS == "scipy-openblas32":
    try:
        import scipy_openblas32
    except ImportError:
        sys.exit("gozaru builds against the PyPI package scipy-openblas32 (a build requirement in pyproject.toml): "
                 "`pip install scipy-openblas32`, or set GOZARU_BLAS=system to use a system BLAS")
    blas_lib = scipy_openblas32.get_lib_dir()
    include_dirs.append(scipy_openblas32.get_include_dir())
    library_dirs.append(blas_lib)
    libraries.append(scipy_openblas32.get_library())
    # the package's cblas.h declares scipy_cblas_* etc.; csrc/blas.h pastes this prefix onto the plain names
    define_macros.append(("GZ_BLAS_PREFIX", "scipy_"))
    runtime_library_dirs += [blas_lib, "$ORIGIN/../scipy_openblas32/lib"]
elif BLAS == "system":
    blas_libs = [x for x in os.environ.get("GOZARU_BLAS_LIBS", "openblas").split(",") if x]
    i, d, l = dependency("openblas", "GOZARU_BLAS_DIR", blas_libs)
    if os.environ.get("GOZARU_BLAS_LIBS"):
        l = blas_libs
    include_dirs += i
    library_dirs += d
    runtime_library_dirs += d
    libraries += l
    if any("openblas" in x for x in l):  # thread control and kernel queries are OpenBLAS extensions
        define_macros.append(("GZ_BLAS_SYSTEM_OPENBLAS", "1"))
else:
    sys.exit(f"GOZARU_BLAS={BLAS!r}: choose 'scipy-openblas32' (default) or 'system'")

BF16 = os.environ.get("GOZARU_BF16", "auto")
if BF16 not in ("auto", "mkl", "off"):
    sys.exit(f"GOZARU_BF16={BF16!r}: choose 'auto' (default), 'mkl' or 'off'")
if BF16 != "off":
    mkl = os.environ.get("GOZARU_MKL_DIR", sys.prefix)
    found = (os.path.exists(os.path.join(mkl, "include", "mkl_cblas.h"))
             and os.path.exists(os.path.join(mkl, "lib", "libmkl_rt.so.3")))
    if found:
        include_dirs.append(os.path.join(mkl, "include"))
        library_dirs.append(os.path.join(mkl, "lib"))
        libraries.append(":libmkl_rt.so.3")  # by soname: pip's wheels carry no libmkl_rt.so link
        runtime_library_dirs += [os.path.join(mkl, "lib"), "$ORIGIN/../../.."]  # <prefix>/lib from site-packages
        define_macros.append(("GZ_WITH_MKL_BF16", "1"))
    elif BF16 == "mkl":
        sys.exit(f"GOZARU_BF16=mkl: no include/mkl_cblas.h and lib/libmkl_rt.so.3 under {mkl} "
                 "(`pip install mkl-devel`, or set GOZARU_MKL_DIR)")

# -ffp-contract=off: no fused multiply-adds, so every vector width (see GZ_VECTOR_CLONES) rounds alike.
# -fno-math-errno, -fno-trapping-math: sqrtf and clamped loops vectorise (errno and FP traps are never used;
# neither flag changes a computed value).
extra_compile = ["-std=c11", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-Wall",
                 "-Wno-unused-function", "-Wno-format-truncation", "-D_GNU_SOURCE",
                 "-DNPY_NO_DEPRECATED_API=NPY_1_20_API_VERSION"]
extra_link = ["-fopenmp"]
if os.environ.get("GOZARU_SANITIZE") == "1":
    extra_compile += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                      "-fno-sanitize-recover=undefined"]
    extra_link += ["-fsanitize=address,undefined"]
else:
    extra_compile += ["-O3", "-march=x86-64-v2" if os.uname().machine == "x86_64" else "-O3"]

WITH_CUDA = os.environ.get("GOZARU_CUDA") == "1"
cuda_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
if WITH_CUDA and not cuda_sources:
    sys.exit(f"GOZARU_CUDA=1 but {os.path.join(ROOT, 'csrc', 'cuda')} holds no .cu sources: this source tree is "
             "incomplete (an sdist made without MANIFEST.in?); build from a full checkout or a complete sdist")
if not WITH_CUDA and not cuda_sources and (shutil.which("nvcc") or os.path.exists("/usr/local/cuda/include")):
    sys.stderr.write("note: a CUDA toolkit is installed but csrc/cuda/ holds no .cu sources; building CPU only\n")
if WITH_CUDA:
    def find_cuda_home():
        """The first candidate holding include/cuda_runtime.h (nvcc on PATH may be a wrapper script)."""
        nvcc_path = shutil.which("nvcc")
        candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                      nvcc_path and os.path.dirname(os.path.dirname(os.path.realpath(nvcc_path))), "/usr/local/cuda"]
        for home in filter(None, candidates):
            if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
                return home
        sys.exit("GOZARU_CUDA=1: no CUDA toolkit found (set CUDA_HOME to the folder holding include/cuda_runtime.h)")

    cuda_home = find_cuda_home()
    define_macros.append(("GOZARU_WITH_CUDA", "1"))
    include_dirs.append(os.path.join(cuda_home, "include"))
    for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
        p = os.path.join(cuda_home, sub)
        if os.path.isdir(p):
            library_dirs.append(p)
            runtime_library_dirs.append(p)
    libraries += ["cublas", "cublasLt", "cudart"]


class BuildExt(build_ext):
    """Compiles the .cu files with nvcc into objects linked into the extension."""

    def build_extension(self, ext):
        if WITH_CUDA and cuda_sources and ext.name == "gozaru._core":
            nvcc = shutil.which("nvcc") or os.path.join(cuda_home, "bin", "nvcc")
            arch = os.environ.get("GOZARU_CUDA_ARCH", "90")
            objs = []
            os.makedirs(self.build_temp, exist_ok=True)
            for src in cuda_sources:
                obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
                cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
                       f"-gencode=arch=compute_{arch},code=sm_{arch}", "-Icsrc", "-DGOZARU_WITH_CUDA=1",
                       "--expt-relaxed-constexpr"]
                print(" ".join(cmd))
                subprocess.run(cmd, check=True)
                objs.append(obj)
            ext.extra_objects = list(ext.extra_objects or []) + objs
            ext.libraries = list(ext.libraries) + ["stdc++"]
        super().build_extension(ext)


ext_args = dict(include_dirs=include_dirs, library_dirs=library_dirs, runtime_library_dirs=runtime_library_dirs,
                libraries=libraries, define_macros=define_macros, extra_compile_args=extra_compile,
                extra_link_args=extra_link,
                depends=rel(glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True)))
TEST_OPS = os.environ.get("GOZARU_TEST_OPS", "")
ext_modules = [] if TEST_OPS == "only" else [Extension("gozaru._core", sources=sources, **ext_args)]
if TEST_OPS in ("1", "only"):
    testops_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "testops", "*.c"))
                          + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.c")))
    testops_sources += ["csrc/util.c", "csrc/blas.c", "csrc/py/args.c"]
    ext_modules.append(Extension("_gozaru_testops", sources=testops_sources, **ext_args))

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
