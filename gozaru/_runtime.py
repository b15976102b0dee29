"""Loading the compiled core (``gozaru._core``) with the defaults its runtimes need, leaving the process as it was.

libgomp (OpenMP) and OpenBLAS read their settings from the environment once, when the dynamic loader brings them in
with ``_core``, and offer no call to change them afterwards. gozaru's defaults are therefore put into the
environment only while ``_core`` loads, for the variables the user has not set, and taken out again: after
``import gozaru`` the process environment is exactly what it was (tests/test_imports.py checks it).

- ``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT=1000``: idle OpenMP threads spin only briefly (~1000 iterations),
  then sleep. Long spinning steals the cores from BLAS and from the next loop whenever the machine has other load
  (measured up to 4x slower); no spinning at all makes every parallel region pay a wake-up, which halves
  generation speed. Measured on 2 cores, quiet and with a competing process.
- ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's pthread workers busy-wait 2^28 cycles (~0.1 s) after each BLAS call
  before sleeping; on a busy core that steals it from the OpenMP loop that follows (greedy decoding measured several
  times slower on 2 loaded cores). Since blas.c routes OpenBLAS's jobs onto OpenMP, those workers only exist idle;
  2^4 cycles: they sleep at once.

Libraries ``_core`` links by soname (libscipy_openblas.so from the scipy-openblas32 wheel; libmkl_rt.so.3 in
builds with precision "bf16", setup.py) are found through its rpath. Only when that fails — a ``_core`` built
elsewhere — are they loaded from where pip put them (RTLD_LOCAL: none of their symbols become global) and the
import tried again.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys

RUNTIME_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000", "OPENBLAS_THREAD_TIMEOUT": "4"}


@contextlib.contextmanager
def runtime_defaults():
    """RUNTIME_DEFAULTS in the environment for the variables the user has not set, for the block only."""
    added = [k for k in RUNTIME_DEFAULTS if k not in os.environ]
    for k in added:
        os.environ[k] = RUNTIME_DEFAULTS[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _preload_libraries() -> bool:
    """Loads the BLAS / MKL libraries from where pip puts them; True when one was found."""
    paths = [os.path.join(sys.prefix, "lib", "libmkl_rt.so.3")]
    try:
        import scipy_openblas32
        paths.append(os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"))
    except ImportError:   # builds with GOZARU_BLAS=system link the system's BLAS
        pass
    found = False
    for path in paths:
        if os.path.exists(path):
            try:
                ctypes.CDLL(path)
                found = True
            except OSError:
                pass
    return found


def load_core():
    """The ``gozaru._core`` module (see the module docstring)."""
    with runtime_defaults():
        try:
            return importlib.import_module("gozaru._core")
        except ImportError:
            if not _preload_libraries():
                raise
            return importlib.import_module("gozaru._core")
