"""PEFT's LoRA adapter files (adapter_config.json + adapter_model.safetensors): names, patterns, reading and
writing. ``gozaru.lora`` builds models from what this reads; nothing here changes a model.

PEFT names a module as the base model does (``gpt_neox.layers.0.attention.dense``; the head is ``lm_head``
under transformers >= 5) and saves, beside each adapter's ``lora_A`` / ``lora_B``, every parameter of the
``modules_to_save`` (modules trained in full) under the module's own name. ``rank_pattern`` / ``alpha_pattern``
keys are regular expressions matched as ``(.*\\.)?({key})$`` against the full module name, first key wins
(``peft.utils.other.get_pattern_key``); they run with a time limit, so a pattern that backtracks without end
is an error naming it instead of a hang.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import regex

from .. import fileio
from .._core import CheckpointError
from . import hf
from .config import LoraSpec

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."
# transformers >= 5 names the head module lm_head (older versions: embed_out); PEFT files use the module's name.
HF_HEAD = "lm_head"
PATTERN_SECONDS = 1.0  # per match: module names are short, so a sane pattern takes microseconds


def hf_module(tensor: str) -> str:
    """The module PEFT sees for one of gozaru's tensors: 'embed_out.weight' -> 'lm_head'."""
    stem = tensor.rsplit(".", 1)[0]
    return HF_HEAD if stem == "embed_out" else stem


def _param(tensor: str) -> str:
    return tensor.rsplit(".", 1)[1]


def pattern_value(pattern: dict, module: str, default: Any, *, field: str, source: str) -> Any:
    """PEFT's rank_pattern / alpha_pattern lookup for a full module name; errors name the key."""
    for key, v in pattern.items():
        try:
            hit = regex.match(rf"(.*\.)?({key})$", module, timeout=PATTERN_SECONDS)
        except regex.error as e:
            raise CheckpointError(f"{source}: {field} key {key!r} is not a valid regular expression ({e})") from None
        except TimeoutError:
            raise CheckpointError(f"{source}: {field} key {key!r} takes too long to match {module!r} "
                                  "(a pattern that backtracks without end)") from None
        if hit:
            return v
    return default


# ---------------------------------------------------------------- writing

def full_modules(model) -> list[str]:
    """Base modules trained in full beside the adapters (PEFT's modules_to_save), as gozaru stems."""
    adapter_tensors = {n for s in model.lora for n in model.lora_names(s)}
    adapted = {s.target.rsplit(".", 1)[0] for s in model.lora}
    modules = sorted({n.rsplit(".", 1)[0] for n in model.trainable_names() if n not in adapter_tensors})
    both = [m for m in modules if m in adapted]
    if both:
        raise ValueError(f"LoRA: {both[0]} has an adapter and also trains in full; PEFT cannot save both "
                         "(freeze one of them)")
    return modules


def adapter_config(model, base_model_name_or_path: str = "") -> dict:
    """PEFT's adapter_config.json for the model's adapters (rank_pattern / alpha_pattern for exceptions, keyed by
    the escaped full module name) and the modules it trains in full (modules_to_save)."""
    specs = model.lora
    if not specs:
        raise ValueError("this model has no LoRA adapters")
    if len({s.rslora for s in specs}) > 1:
        raise ValueError("LoRA: PEFT's use_rslora is one flag; these adapters mix LoRA and rsLoRA scaling")
    r = Counter(s.r for s in specs).most_common(1)[0][0]
    alpha = Counter(s.alpha for s in specs).most_common(1)[0][0]
    modules = sorted({hf_module(s.target).rsplit(".", 1)[-1] for s in specs})
    by_module: dict[str, set[int]] = {m: set() for m in modules}
    layer_of = {t.name: t.layer for t in model.config.tensors()}
    for s in specs:
        by_module[hf_module(s.target).rsplit(".", 1)[-1]].add(layer_of[s.target])
    L = model.config.num_hidden_layers
    layer_sets = {frozenset(v) for m, v in by_module.items() if m != HF_HEAD}
    layers_to_transform = None
    if HF_HEAD not in by_module and len(layer_sets) == 1:  # the product form PEFT writes itself
        (ls,) = layer_sets
        layers_to_transform = None if len(ls) == L else sorted(ls)
        target_modules = modules
    elif all(v == set(range(L)) for m, v in by_module.items() if m != HF_HEAD):
        target_modules = modules
    else:  # any other set: the full module names (PEFT matches a list entry against the name's end)
        target_modules = sorted({hf_module(s.target) for s in specs})
    saved = [hf_module(m + ".weight") for m in full_modules(model)]
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path or None,
        "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "use_rslora": specs[0].rslora, "bias": "none",
        "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "modules_to_save": saved or None,
        "target_modules": target_modules, "layers_to_transform": layers_to_transform, "layers_pattern": None,
        # escaped: each key matches its own module only, whatever PEFT's order of trying them
        "rank_pattern": {regex.escape(hf_module(s.target)): s.r for s in specs if s.r != r},
        "alpha_pattern": {regex.escape(hf_module(s.target)): s.alpha for s in specs if s.alpha != alpha},
    }


def write_adapter(model, state: dict[str, np.ndarray], folder: Path, base_model_name_or_path: str) -> None:
    """The two files, from ``state`` (one consistent step of the model's tensors)."""
    cfg = adapter_config(model, base_model_name_or_path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = [(f"{PREFIX}{hf_module(s.target)}.lora_{w}.weight", state[n]) for s in model.lora
               for w, n in zip("AB", model.lora_names(s))]
    full = set(full_modules(model))
    tensors += [(f"{PREFIX}{hf_module(n)}.{_param(n)}", state[n]) for n in model.names
                if n.rsplit(".", 1)[0] in full]
    hf._write_safetensors(folder / ADAPTER_WEIGHTS, tensors, {"format": "pt"})
    fileio.write_json_atomic(folder / ADAPTER_CONFIG, cfg)


# ---------------------------------------------------------------- reading

class Adapter:
    """What a PEFT LoRA folder holds for a model of ``shapes`` (its tensor table): adapter specs with their
    A/B values, and the base tensors it replaces (modules_to_save, a head's saved base layer)."""

    def __init__(self, folder: Path, shapes: dict[str, tuple[int, ...]]):
        self.folder = folder
        cfg = self._read_config(folder / ADAPTER_CONFIG)
        self.file = hf._SafetensorsFile(folder / ADAPTER_WEIGHTS)
        self.shapes = shapes
        self.specs: list[LoraSpec] = []
        self.values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.replaced: dict[str, np.ndarray] = {}  # base tensor -> value
        self.full: set[str] = set()                 # base tensors trained in full (modules_to_save)
        self._read(cfg)

    @staticmethod
    def _read_config(cpath: Path) -> dict:
        try:
            cfg = json.loads(cpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{cpath.parent}: no {ADAPTER_CONFIG} (not a PEFT adapter folder)") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"{cpath}: not valid JSON ({type(e).__name__}: {e})") from None
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            raise CheckpointError(f"{cpath}: peft_type is {cfg.get('peft_type') if isinstance(cfg, dict) else None!r}"
                                  "; only LORA adapters can be loaded")
        if cfg.get("fan_in_fan_out") or (cfg.get("bias") or "none") != "none" or cfg.get("use_dora"):
            raise CheckpointError(f"{cpath}: fan_in_fan_out, LoRA biases and DoRA are not supported")
        for key, kind in (("rank_pattern", dict), ("alpha_pattern", dict), ("modules_to_save", list)):
            if cfg.get(key) is not None and not isinstance(cfg[key], kind):
                raise CheckpointError(f"{cpath}: {key} must be {'an object' if kind is dict else 'a list'}, got "
                                      f"{type(cfg[key]).__name__}")
        if not all(isinstance(m, str) for m in cfg.get("modules_to_save") or ()):
            raise CheckpointError(f"{cpath}: modules_to_save must list module names (strings)")
        for key in ("r", "lora_alpha"):
            v = cfg.get(key, 8)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise CheckpointError(f"{cpath}: {key} must be a number, got {v!r}")
        return cfg

    def _tensor(self, key: str, target: str) -> np.ndarray:
        shape, dtype = self.file.entries[key]
        if dtype not in hf.FLOAT_DTYPES:
            raise CheckpointError(f"{self.file.path}: tensor {key} has dtype {dtype}; adapters are floating point")
        a = np.asarray(self.file.read(key), dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{self.file.path}: tensor {key} holds NaN or infinity")
        return a

    def _target(self, module: str, param: str, key: str) -> str:
        name = f"{module}.{param}"
        target = name if name in self.shapes else hf.ALIASES.get(name, name)  # Llama's head is lm_head
        if target not in self.shapes:
            raise CheckpointError(f"{self.folder}: adapter tensor {key} targets {target}, which this model does not "
                                  "have (an adapter for another architecture?)")
        return target

    def _read(self, cfg: dict) -> None:
        saved = cfg.get("modules_to_save") or []
        pairs, base_layers = self._sort_tensors(saved)
        for target in (t for t in self.shapes if t in pairs):
            self._add_adapter(target, pairs[target], cfg)
        missing = [t for t in self.shapes if any(hf_module(t).endswith(m) for m in saved) and t not in self.full
                   and t.rsplit(".", 1)[0] not in {s.target.rsplit(".", 1)[0] for s in self.specs}]
        if missing:  # PEFT cannot load such a folder either
            raise CheckpointError(f"{self.file.path}: modules_to_save covers {missing[0]}, which the file does not "
                                  "hold")
        adapted = {s.target for s in self.specs}
        for target, key in base_layers.items():
            if target not in adapted or target in self.replaced:
                raise CheckpointError(f"{self.file.path}: {key} is the base of a layer without an adapter in "
                                      "this file (or given twice)")
            self.replaced[target] = key
        if not self.specs:
            raise CheckpointError(f"{self.folder}: no adapter tensors in {ADAPTER_WEIGHTS}")
        for target, key in list(self.replaced.items()):
            a = self._tensor(key, target)
            if a.shape != tuple(self.shapes[target]):
                raise CheckpointError(f"{self.folder}: {key} has shape {list(a.shape)}, the model's {target} is "
                                      f"{list(self.shapes[target])}")
            self.replaced[target] = a

    def _sort_tensors(self, saved: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """The file's tensors by what they are: ({target: {"A": key, "B": key}} of the adapters, {target: key} of
        saved base layers); a tensor of a module in modules_to_save goes into self.replaced and self.full."""
        pairs: dict[str, dict[str, str]] = {}
        base_layers: dict[str, str] = {}
        seen: dict[str, str] = {}  # target -> file key (lm_head and embed_out name one tensor)
        for key in self.file.entries:
            if not key.startswith(PREFIX):
                raise CheckpointError(f"{self.file.path}: tensor {key} is not a PEFT LoRA tensor "
                                      f"(names start with {PREFIX})")
            rest = key[len(PREFIX):]
            if rest.endswith(".base_layer.weight"):  # PEFT saves the base of an adapted head beside it
                target = self._target(rest[:-len(".base_layer.weight")], "weight", key)
                if target in base_layers:
                    raise CheckpointError(f"{self.file.path}: {base_layers[target]} and {key} are the same tensor")
                base_layers[target] = key
                continue
            stem, _, which = rest.rpartition(".lora_")
            if stem and which in ("A.weight", "B.weight"):
                target = self._target(stem, "weight", key)
                pair = pairs.setdefault(target, {})
                if which[0] in pair:
                    raise CheckpointError(f"{self.file.path}: {pair[which[0]]} and {key} are the same tensor")
                pair[which[0]] = key
                continue
            module, param = rest.rsplit(".", 1) if "." in rest else (rest, "")
            if not any(module.endswith(m) for m in saved):
                raise CheckpointError(f"{self.file.path}: tensor {key} is neither a LoRA A/B weight nor a "
                                      "parameter of a module in modules_to_save")
            target = self._target(module, param, key)
            if target in seen:
                raise CheckpointError(f"{self.file.path}: {seen[target]} and {key} are the same tensor {target}")
            seen[target] = key
            self.replaced[target] = key
            self.full.add(target)
        return pairs, base_layers

    def _add_adapter(self, target: str, pair: dict[str, str], cfg: dict) -> None:
        """The adapter of ``target`` (file keys of its A and B), checked against the model's weight and the
        config's rank and alpha (patterns included)."""
        where = self.folder / ADAPTER_CONFIG
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"{self.folder}: {target} has lora_{'A' if 'A' in pair else 'B'} but not its "
                                  "partner")
        if target in self.full:
            raise CheckpointError(f"{self.folder}: {target} has an adapter and is also in modules_to_save")
        (sa, _), (sb, _) = self.file.entries[pair["A"]], self.file.entries[pair["B"]]
        out_w, in_w = self.shapes[target]
        if len(sa) != 2 or len(sb) != 2 or sa[1] != in_w or sb[0] != out_w or sa[0] != sb[1]:
            raise CheckpointError(f"{self.folder}: adapter of {target} has A {list(sa)}, B {list(sb)}; the "
                                  f"model's weight is [{out_w}, {in_w}] (an adapter for another model shape?)")
        module = hf_module(target)
        r = pattern_value(cfg.get("rank_pattern") or {}, module, cfg.get("r", 8), field="rank_pattern",
                          source=str(where))
        if r != sa[0]:
            raise CheckpointError(f"{self.folder}: adapter of {target} has rank {sa[0]}, the config says r = {r}")
        alpha = pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", 8), field="alpha_pattern",
                              source=str(where))
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha):
            raise CheckpointError(f"{where}: lora_alpha for {module} must be a number, got {alpha!r}")
        self.specs.append(LoraSpec(target, int(sa[0]), float(alpha), bool(cfg.get("use_rslora", False))))
        self.values[target] = (self._tensor(pair["A"], target), self._tensor(pair["B"], target))
