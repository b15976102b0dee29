"""LoRA adapters (PEFT's math and file format) on a gozaru model.

    import gozaru as gz
    lm = gz.lora.attach(model, r=8, alpha=16)        # a new Model: base weights frozen, adapters trainable
    opt = gz.AdamW(lm, lr=1e-3); ...                  # train as usual; checkpoints carry the adapters
    gz.lora.save_adapter(lm, "out/adapter")           # adapter_model.safetensors + adapter_config.json (PEFT)
    gz.lora.merge(lm).to_hf("out/merged")             # a plain HF model with W += scale * B A

The adapters live in the C core (csrc/model/lora.c) as tensors of the model's table, named as PEFT saves them
(``base_model.model.gpt_neox.layers.0.attention.query_key_value.lora_A.weight``), so gradients, AdamW state and
checkpoints cover them like any other tensor. Forward adds scale * (x A^T) B^T to each adapted Linear; the frozen
base gets no gradient and no optimizer state.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .config import LoraSpec
from .lora_peft import Adapter, adapter_config, write_adapter
from .model import Model

# PEFT's module names (target_modules) of both families -> the core's tensor kinds.
MODULE_KINDS = {"query_key_value": "qkv", "dense": "attn_out", "dense_h_to_4h": "mlp_up",
                "dense_4h_to_h": "mlp_down", "embed_out": "head",
                "q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "attn_out", "gate_proj": "mlp_gate",
                "up_proj": "mlp_up", "down_proj": "mlp_down", "lm_head": "head"}
# Every Linear of a layer, per family (targets=None picks the model's)
DEFAULT_TARGETS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

__all__ = ["DEFAULT_TARGETS", "LLAMA_TARGETS", "LoraSpec", "default_targets", "adapter_config", "adapter_targets",
           "attach", "load_adapter", "merge", "save_adapter", "weight_change"]


def _module(target: str) -> str:
    """'gpt_neox.layers.3.attention.dense.weight' -> 'dense'; 'model.layers.0.self_attn.q_proj.weight' -> 'q_proj'."""
    return target[:-len(".weight")].rsplit(".", 1)[-1]


def default_targets(config) -> tuple[str, ...]:
    """Every Linear of a layer in the config's family: PEFT's module names."""
    return LLAMA_TARGETS if config.is_llama_family else DEFAULT_TARGETS


def adapter_targets(model: Model, targets: Iterable[str] | None = None, layers: Iterable[int] | None = None,
                    names: Iterable[str] | None = None) -> list[str]:
    """The weight names adapters go on: PEFT-style module names (None: every Linear of a layer,
    :func:`default_targets`) x layers, or the adaptable matrix weights among ``names`` (e.g.
    ``layers.select(...)``: biases, norms and the embedding are skipped)."""
    tensors = model.config.tensors()
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
        known = {t.name for t in tensors}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"LoRA: unknown tensor name(s) {', '.join(map(repr, unknown[:5]))} (see Model.names)")
        chosen = set(names)
        return [t.name for t in tensors if t.name in chosen and t.kind in MODULE_KINDS.values()
                and t.name.endswith(".weight")]
    targets = default_targets(model.config) if targets is None else targets
    targets = [targets] if isinstance(targets, str) else list(targets)
    modules = {_module(t.name): t.kind for t in tensors if t.kind in MODULE_KINDS.values()
               and t.name.endswith(".weight")}
    bad = [t for t in targets if t not in modules]
    if bad or not targets:
        raise ValueError(f"LoRA: unknown target module(s) {', '.join(map(repr, bad)) or '(none given)'} for this "
                         f"{model.config.model_type} model; choose from {', '.join(modules)}")
    L = model.config.num_hidden_layers
    if layers is not None:
        layers = sorted({int(l) for l in layers})
        out = [l for l in layers if not 0 <= l < L]
        if out:
            raise ValueError(f"LoRA: layer(s) {out} out of range (the model has {L} layers, 0..{L - 1})")
    return [t.name for t in tensors if _module(t.name) in targets and t.kind in MODULE_KINDS.values()
            and t.name.endswith(".weight") and (t.kind == "head" or layers is None or t.layer in layers)]


def attach(model: Model, targets: Iterable[str] | None = None, layers: Iterable[int] | None = None,
           r: int | Mapping[str, int] = 8, alpha: float | None = 16, rslora: bool = False, seed: int = 0,
           names: Iterable[str] | None = None) -> Model:
    """A new Model with the base weights of ``model`` (copied, frozen) and LoRA adapters (trainable, PEFT's
    init from ``seed``) on ``targets`` (None: every Linear of a layer) x ``layers`` (None: every layer), or on the
    matrix weights among ``names``.
    r may be a dict by module name; alpha None means alpha = r (scale 1). Adapters already on ``model`` are
    kept (an adapter on a tensor that has one is an error naming it)."""
    chosen = adapter_targets(model, targets, layers, names)
    if not chosen:
        raise ValueError("LoRA: no weight matches the given targets / names")

    def rank(t: str) -> int:
        v = r.get(_module(t)) if isinstance(r, Mapping) else r
        if v is None:
            raise ValueError(f"LoRA: no rank given for {t} (r has no entry {_module(t)!r})")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"LoRA: rank for {t} must be an int, got {v!r}")
        return int(v)

    new = [LoraSpec(t, rank(t), float(rank(t) if alpha is None else alpha), bool(rslora)) for t in chosen]
    return _with_adapters(model, new, seed)[0]


def _with_adapters(model: Model, new: list[LoraSpec], seed: int) -> tuple[Model, dict[str, np.ndarray]]:
    """The new model (``model``'s tensors, its adapters and ``new``; only adapters trainable; placed as ``model``
    is) and the state it was copied from: one consistent step, taken under the model's busy guard like a
    checkpoint."""
    state = model.state_dict()
    out = Model(model.config, seed=None, lora=model.lora + tuple(new), placement=model.placement)
    out.core.init_lora(int(seed))
    with out.edit_params() as params:
        for name in model.names:  # base weights and the adapters ``model`` already had
            params[name][...] = state[name]
    out.train_only([n for s in out.lora for n in out.lora_names(s)])
    return out, state


def merge(model: Model) -> Model:
    """A plain Model (no adapters, nothing trainable) with W += scale * B A for every adapter (float64 sums),
    from one consistent step of ``model``, placed as ``model`` is."""
    state = model.state_dict()
    out = Model(model.config, seed=None, placement=model.placement)
    with out.edit_params() as params:
        for name in out.names:
            params[name][...] = state[name]
        for s in model.lora:
            a, b = (state[n].astype(np.float64) for n in model.lora_names(s))
            params[s.target][...] = state[s.target].astype(np.float64) + s.scale * (b @ a)
    return out


def weight_change(model: Model, base: Model | None = None) -> dict[str, float]:
    """Per adapted weight: ||scale * B A|| / ||W|| (Frobenius), the adapter's relative change of W."""
    state = model.state_dict()
    base_state = state if base is None else base.state_dict()
    out = {}
    for s in model.lora:
        a, b = (state[n].astype(np.float64) for n in model.lora_names(s))
        w = base_state[s.target].astype(np.float64)
        nw = float(np.linalg.norm(w))
        out[s.target] = float(np.linalg.norm(s.scale * (b @ a))) / nw if nw > 0 else float("nan")
    return out


# ---------------------------------------------------------------- PEFT files (gozaru/engine/lora_peft.py)

def save_adapter(model: Model, folder: str | os.PathLike, base_model_name_or_path: str = "") -> None:
    """adapter_model.safetensors + adapter_config.json that ``peft.PeftModel.from_pretrained`` loads onto
    transformers' GPTNeoXForCausalLM (each file written atomically), from one consistent step of ``model``.
    Base tensors the model trains in full beside its adapters (e.g. the head) are saved as PEFT's
    ``modules_to_save``, whole modules, as PEFT saves them."""
    write_adapter(model, model.state_dict(), Path(folder), base_model_name_or_path)


def load_adapter(model: Model, folder: str | os.PathLike) -> Model:
    """A new Model: ``model``'s weights plus the adapters of a PEFT LoRA folder (trainable), with the
    ``modules_to_save`` it holds (trainable too, as in PEFT). Everything is read and checked before a model is
    made, so a bad folder is an error naming file and tensor and ``model`` is never touched."""
    adapter = Adapter(Path(folder), dict(model.config.tensor_shapes()))
    out, _ = _with_adapters(model, adapter.specs, 0)
    with out.edit_params() as params:
        for s in adapter.specs:
            for n, v in zip(out.lora_names(s), adapter.values[s.target]):
                params[n][...] = v
        for target, value in adapter.replaced.items():  # as PEFT does: saved modules replace the model's
            params[target][...] = value
    if adapter.full:
        out.set_trainable(sorted(adapter.full), True)
    return out
