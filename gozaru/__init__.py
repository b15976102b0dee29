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

from ._runtime import load_core

_core = load_core()   # the compiled core, with its runtimes' defaults (gozaru/_runtime.py); os.environ untouched
from ._core import IGNORE_INDEX, CheckpointError, get_num_threads, set_num_threads  # noqa: E402
from ._version import __version__  # noqa: E402
from . import data, engine, lab  # noqa: E402
from .engine import checkpoint, hf, layers, lora  # noqa: E402
from .engine import AdamW, GPTNeoXConfig, Model, ModelConfig, Placement, load, preset  # noqa: E402
from .engine.system import build_info  # noqa: E402
from .lab import demo, evaluate, experiment, generate, plots  # noqa: E402
from .lab import EvalConfig, TrainConfig, Trainer  # noqa: E402

__all__ = ["AdamW", "CheckpointError", "EvalConfig", "GPTNeoXConfig", "IGNORE_INDEX", "Model", "ModelConfig",
           "Placement", "TrainConfig", "Trainer", "__version__", "build_info", "checkpoint", "data", "demo", "engine",
           "evaluate", "experiment", "generate", "get_num_threads", "hf", "lab", "layers", "load", "lora", "plots",
           "preset", "set_num_threads"]
