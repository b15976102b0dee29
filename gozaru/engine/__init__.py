"""The engine room: a GPT-NeoX model in the C core seen from Python.

``config`` (ModelConfig, presets, the core's tensor table) → ``hf`` (HF folder files) → ``placement``
(backend × precision × threads) → ``model`` (Model) →
``optim`` (AdamW) → ``checkpoint`` (load, info) → ``lora`` (LoRA adapters, PEFT files); ``layers`` (which
tensors to train) reads only ``config``.
"""
from . import lora
from .checkpoint import load
from .config import PRESETS, TENSOR_KINDS, GPTNeoXConfig, LoraSpec, ModelConfig, TensorSpec, preset
from .model import Model, PrecisionError
from .optim import AdamW
from .placement import Placement

__all__ = ["AdamW", "GPTNeoXConfig", "LoraSpec", "Model", "ModelConfig", "PRESETS", "Placement", "PrecisionError",
           "TENSOR_KINDS", "TensorSpec", "load", "lora", "preset"]
