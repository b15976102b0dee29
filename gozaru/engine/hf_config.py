"""The spellings of transformers' config.json for the families gozaru runs, both ways.

Read: transformers 5 writes ``rope_parameters`` ({"rope_type", "rope_theta", ...}) and ``dtype``; the hub's
existing checkpoints carry top-level ``rope_theta`` + ``rope_scaling`` and ``torch_dtype``; Llama calls the
norm's eps ``rms_norm_eps``; Qwen2 adds sliding-window keys. What gozaru would compute differently from
transformers is refused by name: rope types gozaru.engine.rope does not implement, an active sliding
window, a ``head_dim`` other than hidden_size / num_attention_heads, Llama's ``attention_bias`` (it biases
o_proj too) and ``mlp_bias``.
Write: the transformers 5 spelling plus the legacy top-level ``rope_theta``, so older versions load it too."""
from __future__ import annotations

from typing import Any

from . import rope


def _rope(d: dict[str, Any]) -> tuple[dict[str, Any], float | None, dict[str, Any] | None]:
    """(the rope dict, partial_rotary_factor, its scaling part) from either spelling: gozaru.engine.rope reads
    it for every family, and ModelConfig checks the scaling (rope.read_scaling)."""
    rp = rope.hf_rope_dict(d)
    partial = rp.get("partial_rotary_factor", d.get("partial_rotary_factor"))
    return rp, partial, rope.scaling_part(rp, d.get("original_max_position_embeddings"))


def hf_fields(d: dict[str, Any], have: dict[str, Any]) -> dict[str, Any]:
    """gozaru fields for the HF keys of config dict d (fields already in ``have`` win); ValueError naming the key
    for what cannot be run as transformers runs it."""
    out: dict[str, Any] = {}
    model_type = d.get("model_type", "gpt_neox")
    rp, partial, scaling = _rope(d)
    # the rope dict's values win over gozaru's own spellings (transformers 5 reads rope_parameters first)
    if d.get("rope_theta") is not None and "rotary_emb_base" not in have:
        out["rotary_emb_base"] = d["rope_theta"]
    if rp.get("rope_theta") is not None:
        out["rotary_emb_base"] = rp["rope_theta"]
    if partial is not None:
        out["rotary_pct"] = partial
    out["rope_scaling"] = scaling
    if "rms_norm_eps" in d and "layer_norm_eps" not in have:
        out["layer_norm_eps"] = d["rms_norm_eps"]
    if model_type in ("llama", "qwen2"):
        if d.get("mlp_bias"):
            raise ValueError("mlp_bias=true is not supported (Llama-family MLPs without biases only)")
        heads = d["num_attention_heads"]
        head_dim = d.get("head_dim")
        if head_dim is not None and isinstance(heads, int) and heads > 0 and head_dim * heads != d["hidden_size"]:
            raise ValueError(f"head_dim={head_dim} with num_attention_heads={heads} does not equal hidden_size="
                             f"{d['hidden_size']} (gozaru's heads split the hidden size)")
        if model_type == "qwen2":
            layer_types = d.get("layer_types") or []
            if d.get("use_sliding_window") or "sliding_attention" in layer_types:
                raise ValueError("use_sliding_window: sliding-window attention is not supported (gozaru attends to "
                                 "the whole context); a config with use_sliding_window=false runs")
            out.pop("attention_bias", None)  # Qwen2Config has no such key: its q/k/v always have biases
        if "num_key_value_heads" not in have:
            out["num_key_value_heads"] = d.get("num_key_value_heads") or None
    return out


def to_hf_dict(config, architecture: str) -> dict[str, Any]:
    """config.json for transformers (any version >= 4.40 for Llama / Qwen2)."""
    c = config
    common = {
        "architectures": [architecture], "model_type": c.model_type,
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings, "hidden_act": c.hidden_act,
        "initializer_range": c.initializer_range, "bos_token_id": c.bos_token_id, "pad_token_id": c.pad_token_id,
        "eos_token_id": [c.eos_token_id, *c.extra_eos_token_ids] if c.extra_eos_token_ids else c.eos_token_id,
        "tie_word_embeddings": c.tie_word_embeddings, "attention_dropout": 0.0, "torch_dtype": "float32",
        "rope_theta": c.rotary_emb_base,
        # transformers 5 reads rope_parameters first; it repeats rope_theta (and GPT-NeoX's rotary_pct)
        "rope_parameters": {"rope_type": "default", **(c.rope_scaling or {}), "rope_theta": c.rotary_emb_base},
    }
    if c.model_type == "gpt_neox":
        return {**common, "rotary_pct": c.rotary_pct, "rotary_emb_base": c.rotary_emb_base,
                "layer_norm_eps": c.layer_norm_eps, "use_parallel_residual": c.use_parallel_residual,
                "hidden_dropout": 0.0, "attention_bias": True,
                "rope_parameters": {**common["rope_parameters"], "partial_rotary_factor": c.rotary_pct}}
    out = {**common, "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
           "rms_norm_eps": c.layer_norm_eps, "use_cache": True}
    if c.model_type == "llama":
        out.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
    else:
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=c.num_hidden_layers)
    return out
