"""Rotary position embedding (RoPE) settings: read from an HF config, turned into the core's frequencies.

One place computes a model's rotary frequencies: ``frequencies`` mirrors transformers' rope init functions
(``transformers.modeling_rope_utils``: the same float32 operations in the same order) and returns the inverse
frequencies and the factor cos and sin are multiplied by; the C core builds its cos/sin tables from them
(``gz_model_set_rope``), so the kernels never recompute ``base^(-2i/d)``. Any model family with rotary
attention passes its head size, rotary share and settings here.

``scaling`` is the part of HF's ``rope_parameters`` beyond ``rope_theta`` and ``partial_rotary_factor``:
``None`` for plain RoPE, else a dict with ``rope_type`` and that type's fields, ``original_max_position_embeddings``
filled in where transformers fills it. Types whose frequencies follow the current sequence length are exact
here because the core never runs past ``max_position_embeddings``: ``dynamic`` changes nothing below it, and
``longrope`` is taken only when its long factors start at or beyond it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# rope_type -> (required fields, optional fields), as transformers validates them
ROPE_TYPES: dict[str, tuple[frozenset, frozenset]] = {
    "default": (frozenset(), frozenset()),
    "linear": (frozenset({"factor"}), frozenset()),
    "dynamic": (frozenset({"factor"}), frozenset()),
    "yarn": (frozenset({"factor", "original_max_position_embeddings"}),
             frozenset({"attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"})),
    "llama3": (frozenset({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}),
               frozenset()),
    "longrope": (frozenset({"short_factor", "long_factor", "original_max_position_embeddings"}),
                 frozenset({"attention_factor", "factor"})),
}
# fields the model's own config holds (rotary_emb_base, rotary_pct) or that only spell the type
_BASE_KEYS = {"rope_type", "type", "rope_theta", "partial_rotary_factor"}
# types for which transformers fills original_max_position_embeddings from the model's limit
_ORIGINAL_MAX_TYPES = ("llama3", "yarn", "longrope")


def hf_rope_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """The RoPE dict of an HF config: ``rope_parameters`` (transformers 5) or the legacy ``rope_scaling``
    ({} when neither). Both present and different is ambiguous and refused."""
    new, old = d.get("rope_parameters"), d.get("rope_scaling")
    for key, v in (("rope_parameters", new), ("rope_scaling", old)):
        if v is not None and not isinstance(v, Mapping):
            raise ValueError(f"{key} must be an object, got {type(v).__name__}")
    if new and old and _scaling_part(new) != _scaling_part(old):
        raise ValueError(f"rope_parameters and rope_scaling disagree "
                         f"({dict(new)!r} vs {dict(old)!r}); keep one")
    return dict(new or old or {})


def _scaling_part(rp: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rp.items() if k not in _BASE_KEYS}
    out["rope_type"] = rp.get("rope_type", rp.get("type", "default"))
    return out


def scaling_part(rp: Mapping[str, Any], original_max_position_embeddings: Any = None) -> dict[str, Any] | None:
    """The scaling fields of an HF RoPE dict (None when it has none), unchecked (``read_scaling`` checks).
    ``original_max_position_embeddings``: a top-level config value, which transformers prefers over the
    dict's for the types that use it."""
    if not rp:
        return None
    part = _scaling_part(rp)
    if part["rope_type"] in _ORIGINAL_MAX_TYPES and original_max_position_embeddings is not None:
        part["original_max_position_embeddings"] = original_max_position_embeddings
    return part


def _number(v: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{where} must be a finite {'positive ' if positive else ''}number, got {v!r}")
    return float(v)


def read_scaling(rp: Mapping[str, Any], *, max_position_embeddings: int) -> dict[str, Any] | None:
    """The checked scaling dict of an HF RoPE dict or of ``scaling_part``'s result, None for plain RoPE (the
    form ``GPTNeoXConfig.rope_scaling`` keeps). A type or field gozaru does not implement is refused, naming
    it."""
    if not rp:
        return None
    where = "rope_parameters"
    part = _scaling_part(rp)
    rope_type = part.pop("rope_type")
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"{where}.rope_type {rope_type!r} is not supported (gozaru implements "
                         f"{', '.join(ROPE_TYPES)})")
    required, optional = ROPE_TYPES[rope_type]
    if rope_type in _ORIGINAL_MAX_TYPES:
        part.setdefault("original_max_position_embeddings", max_position_embeddings)
    unknown = sorted(set(part) - required - optional)
    if unknown:
        raise ValueError(f"{where} has field(s) {', '.join(unknown)} that rope_type {rope_type!r} does not take")
    missing = sorted(k for k in required if part.get(k) is None)
    if missing:
        raise ValueError(f"{where}: rope_type {rope_type!r} needs {', '.join(missing)}")
    out: dict[str, Any] = {"rope_type": rope_type}
    for k, v in part.items():
        if v is None:
            continue
        if k in ("short_factor", "long_factor"):
            if not isinstance(v, (list, tuple)):
                raise ValueError(f"{where}.{k} must be a list of numbers, got {type(v).__name__}")
            out[k] = [_number(x, f"{where}.{k}[{i}]") for i, x in enumerate(v)]
        elif k == "truncate":
            if not isinstance(v, bool):
                raise ValueError(f"{where}.truncate must be true or false, got {v!r}")
            out[k] = v
        elif k == "original_max_position_embeddings":
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{where}.original_max_position_embeddings must be a positive int, got {v!r}")
            out[k] = v
        else:
            out[k] = _number(v, f"{where}.{k}", positive=k not in ("beta_fast", "beta_slow"))
    if rope_type == "default":
        return None
    if rope_type == "longrope" and out["original_max_position_embeddings"] < max_position_embeddings:
        raise ValueError(f"{where}: longrope with original_max_position_embeddings = "
                         f"{out['original_max_position_embeddings']} < max_position_embeddings = "
                         f"{max_position_embeddings} switches frequencies with each batch's length; not supported")
    return out


def frequencies(scaling: Mapping[str, Any] | None, *, base: float, head_dim: int, partial_rotary_factor: float,
                max_position_embeddings: int) -> tuple[np.ndarray, float]:
    """(inv_freq float32 [ceil(d/2)], attention_factor) with d = int(head_dim * partial_rotary_factor), as
    transformers' rope init function of ``scaling['rope_type']`` computes them for positions below
    ``max_position_embeddings``. ValueError naming the field when the settings cannot make frequencies."""
    dim = int(head_dim * partial_rotary_factor)
    rope_type = scaling["rope_type"] if scaling else "default"
    s = dict(scaling or {})
    exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim  # float32, as torch
    attention_factor = 1.0
    if rope_type in ("default", "linear", "llama3"):
        inv_freq = 1.0 / (base ** exps)
        if rope_type == "linear":
            inv_freq = inv_freq / s["factor"]
        elif rope_type == "llama3":
            inv_freq = _llama3(inv_freq, s)
    elif rope_type == "dynamic":
        if dim <= 2:
            raise ValueError(f"rope_type 'dynamic' needs more than 2 rotary dims, the model has {dim}")
        # the core's positions stay below max_position_embeddings, so seq_len is that limit (no change)
        seq_len = max_position_embeddings
        factor = s["factor"]
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
        inv_freq = 1.0 / (base ** exps)
    elif rope_type == "yarn":
        inv_freq, attention_factor = _yarn(s, base, dim, exps, max_position_embeddings)
    elif rope_type == "longrope":
        inv_freq, attention_factor = _longrope(s, base, dim, exps, max_position_embeddings)
    else:
        raise ValueError(f"rope_type {rope_type!r} is not supported (gozaru implements {', '.join(ROPE_TYPES)})")
    inv_freq = np.ascontiguousarray(inv_freq, dtype=np.float32)
    if not np.all(np.isfinite(inv_freq)) or not math.isfinite(attention_factor) or attention_factor <= 0:
        raise ValueError(f"rope_parameters ({rope_type}) give non-finite frequencies or a non-positive "
                         f"attention factor")
    return inv_freq, float(attention_factor)


def _llama3(inv_freq: np.ndarray, s: Mapping[str, Any]) -> np.ndarray:
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_context_len = s["original_max_position_embeddings"]
    if high == low:
        raise ValueError("rope_parameters: llama3 needs high_freq_factor != low_freq_factor")
    low_freq_wavelen, high_freq_wavelen = old_context_len / low, old_context_len / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(s: Mapping[str, Any], base: float, dim: int, exps: np.ndarray, max_pos: int) -> tuple[np.ndarray, float]:
    if dim % 2:
        raise ValueError(f"rope_parameters: yarn needs an even rotary dimension, the model has {dim}")
    factor, original = s["factor"], s["original_max_position_embeddings"]
    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = s.get("mscale"), s.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction_dim(num_rotations):
        return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    pos_freqs = base ** exps
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation_factor = 1 - ramp
    return (interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor), attention_factor


def _longrope(s: Mapping[str, Any], base: float, dim: int, exps: np.ndarray,
              max_pos: int) -> tuple[np.ndarray, float]:
    original = s["original_max_position_embeddings"]
    short = np.asarray(s["short_factor"], dtype=np.float32)
    if short.shape != exps.shape:
        raise ValueError(f"rope_parameters.short_factor has {short.size} values, the model's "
                         f"{dim} rotary dims need {exps.size}")
    if len(s["long_factor"]) != exps.size:
        raise ValueError(f"rope_parameters.long_factor has {len(s['long_factor'])} values, the model's "
                         f"{dim} rotary dims need {exps.size}")
    factor = s.get("factor")
    if factor is None:
        factor = max_pos / original
    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    # positions stay below max_position_embeddings <= original: transformers' short factors
    return 1.0 / (short * base ** exps), attention_factor
