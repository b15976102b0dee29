"""gozaru — a fine-tuning lab for GPT-NeoX and Llama / Qwen2 language models with a C engine.

    import gozaru as gz
    m = gz.Model(gz.preset("tiny"), seed=0)
    m.train_only(m.names); opt = gz.AdamW(m, lr=1e-3)
    loss = m.loss(tokens, targets); m.backward(); opt.step()

The package has three rooms over the compiled core ``gozaru._core`` (see docs/ARCHITECTURE.md):
``gozaru.engine`` (model, optimizer, checkpoints, HF files, layer selection), ``gozaru.data`` (records,
ござる rewriting, synthetic corpus, tokenizer, SFT rows) and ``gozaru.lab`` (trainer, evaluation, experiments,
plots, demo, CLI). The names most used are re-exported here.
"""
from __future__ import annotations

import ctypes
import os
import sys

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
# Builds with precision="bf16" (setup.py: GOZARU_BF16) link MKL's libmkl_rt.so.3 by soname; pip puts it in
# <prefix>/lib, which the rpath of an installed _core also names. Loading it here (RTLD_LOCAL: none of its
# symbols become global) covers a _core built elsewhere, as the import above does for OpenBLAS.
_mkl = os.path.join(sys.prefix, "lib", "libmkl_rt.so.3")
if os.path.exists(_mkl):
    try:
        ctypes.CDLL(_mkl)
    except OSError:
        pass

from ._core import IGNORE_INDEX, CheckpointError, get_num_threads, set_num_threads  # noqa: E402
from ._version import __version__  # noqa: E402
from . import data, engine, lab  # noqa: E402
from .engine import checkpoint, hf, layers, lora  # noqa: E402
from .engine import AdamW, GPTNeoXConfig, Model, ModelConfig, load, preset  # noqa: E402
from .engine.system import build_info  # noqa: E402
from .lab import demo, evaluate, experiment, generate, plots  # noqa: E402
from .lab import EvalConfig, TrainConfig, Trainer  # noqa: E402

__all__ = ["AdamW", "CheckpointError", "EvalConfig", "GPTNeoXConfig", "IGNORE_INDEX", "Model", "ModelConfig", "TrainConfig",
           "Trainer", "__version__", "build_info", "checkpoint", "data", "demo", "engine", "evaluate", "experiment",
           "generate", "get_num_threads", "hf", "lab", "layers", "load", "lora", "plots", "preset", "set_num_threads"]
