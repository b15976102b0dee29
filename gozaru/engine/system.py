"""What this process computes on: ``gozaru.build_info()`` and ``gozaru info --system``.

The compiled core reports BLAS (library, version, the kernel set OpenBLAS picked for this CPU), thread
counts, the OpenMP runtime and CPU features; this module adds what Python sees more easily (CPU model,
versions). Benchmarks store the dict beside their numbers: speed and rounding depend on every field.
"""
from __future__ import annotations

import os
import platform

import numpy as np

from .. import _core
from .._version import __version__
from .placement import share_bf16_switches

# printed first, in this order; every other key follows
_ORDER = ("cpu_model", "cpu_count", "cpu_features", "blas", "blas_version", "blas_corename", "blas_threads",
          "threads", "openmp_spec", "openmp_library", "backends_built", "cuda_usable", "precisions",
          "bf16")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_info() -> dict:
    """A dict describing the BLAS, threads, OpenMP runtime, CPU and backends of this process."""
    share_bf16_switches()   # "precisions" follows GOZARU_BF16_ANY_CPU as it is now
    info = dict(_core.build_info())
    config = info.get("blas_config", "")
    parts = config.split()
    # "OpenBLAS 0.3.34.481.3 DYNAMIC_ARCH ..." -> "0.3.34.481.3"
    info["blas_version"] = parts[1] if len(parts) > 1 and parts[0] == "OpenBLAS" else ""
    info["cpu_model"] = cpu_model()
    info["cpu_count"] = os.cpu_count()
    info["machine"] = platform.machine()
    info["python"] = platform.python_version()
    info["numpy"] = np.__version__
    info["gozaru"] = __version__
    return {k: info[k] for k in _ORDER if k in info} | {k: v for k, v in info.items() if k not in _ORDER}


def format_build_info(info: dict) -> str:
    """The dict as aligned ``key: value`` lines (cpu_features as the list of those present)."""
    lines = []
    for k, v in info.items():
        if k == "cpu_features":
            v = " ".join(name for name, on in v.items() if on) or "(none of those checked)"
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        lines.append(f"{k:>16}: {v}")
    return "\n".join(lines)
