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

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .. import fileio
from .._core import CheckpointError
from . import hf
from .config import LoraSpec
from .model import Model

# PEFT's module names (target_modules) of both families -> the core's tensor kinds.
MODULE_KINDS = {"query_key_value": "qkv", "dense": "attn_out", "dense_h_to_4h": "mlp_up",
                "dense_4h_to_h": "mlp_down", "embed_out": "head",
                "q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "attn_out", "gate_proj": "mlp_gate",
                "up_proj": "mlp_up", "down_proj": "mlp_down", "lm_head": "head"}
# Every Linear of a layer, per family (targets=None picks the model's)
DEFAULT_TARGETS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."
# transformers >= 5 names the head module lm_head (older versions: embed_out); PEFT files use the module's name.
HF_HEAD = "lm_head"


def _hf_stem(target: str) -> str:
    """The module name PEFT sees for a weight: 'embed_out.weight' -> 'lm_head'."""
    stem = target[:-len(".weight")]
    return HF_HEAD if stem == "embed_out" else stem

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
    return _with_adapters(model, new, seed)


def _with_adapters(model: Model, new: list[LoraSpec], seed: int) -> Model:
    out = Model(model.config, seed=None, lora=model.lora + tuple(new), placement=model.placement)
    out.core.init_lora(int(seed))
    model.sync_to_host()
    with out.edit_params() as params:
        for name in model.names:  # base weights and the adapters ``model`` already had
            params[name][...] = model.params[name]
    out.train_only([n for s in out.lora for n in out.lora_names(s)])
    return out


def merge(model: Model) -> Model:
    """A plain Model (no adapters, nothing trainable) with W += scale * B A for every adapter (float64 sums),
    placed as ``model`` is."""
    model.sync_to_host()
    out = Model(model.config, seed=None, placement=model.placement)
    with out.edit_params() as params:
        for name in out.names:
            params[name][...] = model.params[name]
        for s in model.lora:
            a, b = (model.params[n].astype(np.float64) for n in model.lora_names(s))
            params[s.target][...] = model.params[s.target].astype(np.float64) + s.scale * (b @ a)
    return out


def weight_change(model: Model, base: Model | None = None) -> dict[str, float]:
    """Per adapted weight: ||scale * B A|| / ||W|| (Frobenius), the adapter's relative change of W."""
    model.sync_to_host()
    out = {}
    for s in model.lora:
        a, b = (model.params[n].astype(np.float64) for n in model.lora_names(s))
        w = (base or model).params[s.target].astype(np.float64)
        nw = float(np.linalg.norm(w))
        out[s.target] = float(np.linalg.norm(s.scale * (b @ a))) / nw if nw > 0 else float("nan")
    return out


# ---------------------------------------------------------------- PEFT files

def adapter_config(model: Model, base_model_name_or_path: str = "") -> dict:
    """PEFT's adapter_config.json for the model's adapters (rank_pattern / alpha_pattern for exceptions)."""
    specs = model.lora
    if not specs:
        raise ValueError("this model has no LoRA adapters")
    if len({s.rslora for s in specs}) > 1:
        raise ValueError("LoRA: PEFT's use_rslora is one flag; these adapters mix LoRA and rsLoRA scaling")
    r = Counter(s.r for s in specs).most_common(1)[0][0]
    alpha = Counter(s.alpha for s in specs).most_common(1)[0][0]
    modules = sorted({_hf_stem(s.target).rsplit(".", 1)[-1] for s in specs})
    by_module: dict[str, set[int]] = {m: set() for m in modules}
    layer_of = {t.name: t.layer for t in model.config.tensors()}
    for s in specs:
        by_module[_hf_stem(s.target).rsplit(".", 1)[-1]].add(layer_of[s.target])
    L = model.config.num_hidden_layers
    layer_sets = {frozenset(v) for m, v in by_module.items() if m != HF_HEAD}
    full = {_hf_stem(s.target) for s in specs}
    layers_to_transform = None
    if HF_HEAD not in by_module and len(layer_sets) == 1:  # the product form PEFT writes itself
        (ls,) = layer_sets
        layers_to_transform = None if len(ls) == L else sorted(ls)
        target_modules = modules
    elif all(v == set(range(L)) for m, v in by_module.items() if m != HF_HEAD):
        target_modules = modules
    else:  # any other set: the full module names (PEFT matches a list entry against the name's end)
        target_modules = sorted(full)
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path or None,
        "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "use_rslora": specs[0].rslora, "bias": "none",
        "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
        "target_modules": target_modules, "layers_to_transform": layers_to_transform, "layers_pattern": None,
        "rank_pattern": {_hf_stem(s.target): s.r for s in specs if s.r != r},
        "alpha_pattern": {_hf_stem(s.target): s.alpha for s in specs if s.alpha != alpha},
    }


def save_adapter(model: Model, folder: str | os.PathLike, base_model_name_or_path: str = "") -> None:
    """adapter_model.safetensors + adapter_config.json that ``peft.PeftModel.from_pretrained`` loads onto
    transformers' GPTNeoXForCausalLM / LlamaForCausalLM / Qwen2ForCausalLM (each file written atomically)."""
    cfg = adapter_config(model, base_model_name_or_path)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.sync_to_host()
    tensors = [(f"{_PREFIX}{_hf_stem(s.target)}.lora_{w}.weight", model.params[n]) for s in model.lora
               for w, n in zip("AB", model.lora_names(s))]
    hf._write_safetensors(folder / ADAPTER_WEIGHTS, tensors, {"format": "pt"})
    fileio.write_json_atomic(folder / ADAPTER_CONFIG, cfg)


def load_adapter(model: Model, folder: str | os.PathLike) -> Model:
    """A new Model: ``model``'s weights plus the adapters of a PEFT LoRA folder (trainable). Adapted tensors are
    read from the weight file's names; r, alpha and rslora from adapter_config.json (rank/alpha patterns too)."""
    folder = Path(folder)
    cpath = folder / ADAPTER_CONFIG
    try:
        cfg = json.loads(cpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: no {ADAPTER_CONFIG} (not a PEFT adapter folder)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cpath}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise CheckpointError(f"{cpath}: peft_type is {cfg.get('peft_type') if isinstance(cfg, dict) else None!r}; "
                              "only LORA adapters can be loaded")
    if cfg.get("fan_in_fan_out") or (cfg.get("bias") or "none") != "none" or cfg.get("use_dora"):
        raise CheckpointError(f"{cpath}: fan_in_fan_out, LoRA biases and DoRA are not supported")
    wf = hf._SafetensorsFile(folder / ADAPTER_WEIGHTS)
    shapes = model.config.tensor_shapes()
    pairs: dict[str, dict[str, str]] = {}
    base_layers: dict[str, str] = {}  # PEFT saves the base weight of an adapted head / embedding beside it
    for key in wf.entries:
        if key.startswith(_PREFIX) and key.endswith(".base_layer.weight"):
            w = key[len(_PREFIX):-len(".base_layer.weight")] + ".weight"
            target = w if w in shapes else hf.ALIASES.get(w, w)
            if shapes.get(target) != wf.entries[key][0]:
                raise CheckpointError(f"{folder}: {key} has shape {list(wf.entries[key][0])}, the model's {target} "
                                      f"is {list(shapes.get(target, ()))}")
            base_layers[target] = key
            continue
        stem, _, which = key.rpartition(".lora_")
        if not key.startswith(_PREFIX) or which not in ("A.weight", "B.weight"):
            raise CheckpointError(f"{folder / ADAPTER_WEIGHTS}: tensor {key} is not a LoRA A/B weight")
        w = stem[len(_PREFIX):] + ".weight"
        target = w if w in shapes else hf.ALIASES.get(w, w)
        if target not in shapes:
            raise CheckpointError(f"{folder}: adapter tensor {key} targets {target}, which this model does not have "
                                  "(an adapter for another architecture?)")
        pairs.setdefault(target, {})[which[0]] = key
    specs, values = [], {}
    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    for target in (t for t in shapes if t in pairs):
        p = pairs[target]
        if set(p) != {"A", "B"}:
            raise CheckpointError(f"{folder}: {target} has lora_{'A' if 'A' in p else 'B'} but not its partner")
        (ra, ina), (outb, rb) = wf.entries[p["A"]][0], wf.entries[p["B"]][0]
        out_w, in_w = shapes[target]
        if ina != in_w or outb != out_w or ra != rb:
            raise CheckpointError(f"{folder}: adapter of {target} has A {list(wf.entries[p['A']][0])}, B "
                                  f"{list(wf.entries[p['B']][0])}; the model's weight is [{out_w}, {in_w}] "
                                  "(an adapter for another model shape?)")
        stem = _hf_stem(target)
        r = _pattern(rank_pattern, stem, cfg.get("r", 8))
        if r != ra:
            raise CheckpointError(f"{folder}: adapter of {target} has rank {ra}, the config says r = {r}")
        alpha = float(_pattern(alpha_pattern, stem, cfg.get("lora_alpha", 8)))
        specs.append(LoraSpec(target, int(ra), alpha, bool(cfg.get("use_rslora", False))))
        values[target] = (wf.read(p["A"]), wf.read(p["B"]))
    if not specs:
        raise CheckpointError(f"{folder}: no adapter tensors in {ADAPTER_WEIGHTS}")
    out = _with_adapters(model, specs, 0)
    with out.edit_params() as params:
        for s in specs:
            for n, v in zip(out.lora_names(s), values[s.target]):
                params[n][...] = v
        for target, key in base_layers.items():  # as PEFT does: the saved base weight replaces the model's
            params[target][...] = wf.read(key)
    return out


def _pattern(pattern: dict, stem: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key matching the end of the module name wins."""
    for key, v in pattern.items():
        if re.match(rf"(.*\.)?{key}$", stem):
            return v
    return default
