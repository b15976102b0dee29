"""gozaru — a fine-tuning lab for GPT-NeoX language models with a C engine.

    import gozaru as gz
    m = gz.Model(gz.preset("tiny"), seed=0)
    m.train_only(m.names); opt = gz.AdamW(m, lr=1e-3)
    loss = m.loss(tokens, targets); m.backward(); opt.step()

Submodules (``gozaru.data``, ``gozaru.train``, ``gozaru.hf``, ...) are imported on demand.
The names that need the compiled core (Model, AdamW, load, ...) are resolved on first use, so the
pure-Python parts (config, tokenizer, data) import even before ``gozaru._core`` is built.
"""
from __future__ import annotations

import os

# Idle OpenMP threads spin only briefly (~1000 iterations), then sleep. Long spinning steals the cores
# from BLAS and from the next loop whenever the machine has other load (measured up to 4x slower); no
# spinning at all makes every parallel region pay a wake-up, which halves generation speed. Measured on
# 2 cores, quiet and with a competing process. Read once, when _core loads libgomp; the user's settings win.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

# OpenBLAS's pthread workers busy-wait 2^28 cycles (~0.1 s) after each BLAS call before sleeping; on a busy
# core that steals it from the OpenMP loop that follows (greedy decoding measured several times slower on 2
# loaded cores). Since blas.c routes OpenBLAS's jobs onto OpenMP, those workers only exist idle.
# 2^4 cycles: they sleep at once. Read when the library loads, i.e. by the import below; the user's value wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# Loads libscipy_openblas.so (the BLAS _core links, by soname) before _core is imported, wherever pip put it;
# absent only in builds with GOZARU_BLAS=system (see setup.py).
try:
    import scipy_openblas32  # noqa: F401
except ImportError:
    pass

from .config import GPTNeoXConfig, preset

__version__ = "0.1.0"

__all__ = ["GPTNeoXConfig", "preset", "Model", "AdamW", "load", "set_num_threads", "get_num_threads",
           "CheckpointError", "build_info", "__version__"]

# name -> (module, attribute)
_LAZY = {
    "Model": (".model", "Model"),
    "load": (".model", "load"),
    "AdamW": (".optim", "AdamW"),
    "set_num_threads": ("._core", "set_num_threads"),
    "get_num_threads": ("._core", "get_num_threads"),
    "CheckpointError": ("._core", "CheckpointError"),
    "build_info": (".engine.system", "build_info"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'gozaru' has no attribute {name!r}")
    import importlib
    module_name, attr = _LAZY[name]
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as e:
        if "_core" not in str(e):
            raise
        raise ImportError(f"gozaru.{name} needs the compiled core gozaru._core, which did not import ({e}); "
                          "build it with `pip install -e .` (or `python setup.py build_ext --inplace`)") from e
    value = getattr(module, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
