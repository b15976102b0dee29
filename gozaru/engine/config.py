"""Model configuration mirroring transformers' ``GPTNeoXConfig``, ``LlamaConfig`` and ``Qwen2Config`` (the fields
gozaru uses). One dataclass for every family: ``model_type`` picks the tensor layout, norm and MLP; the C core
reads them as data (``core_dict``)."""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from .. import _core
from ..fileio import loads
from . import rope

# Fields passed to the C core, in gz_config order.
CORE_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "rotary_pct", "rotary_emb_base", "max_position_embeddings", "layer_norm_eps",
    "use_parallel_residual", "tie_word_embeddings", "arch", "norm_kind", "mlp_kind", "num_key_value_heads",
    "qkv_bias",
)

# model_type -> (core arch, norm kind, MLP kind, hidden_act, q/k/v bias by default, HF architecture class).
# The Llama family (separate q/k/v/o, RMSNorm, SwiGLU, grouped-query attention) holds Llama and Qwen2; Qwen2
# differs only by its q/k/v biases. The numbers are gozaru.h's GZ_ARCH_*, GZ_NORM_*, GZ_MLP_*.
FAMILIES = {
    "gpt_neox": (0, 0, 0, "gelu", True, "GPTNeoXForCausalLM"),
    "llama": (1, 1, 1, "silu", False, "LlamaForCausalLM"),
    "qwen2": (1, 1, 1, "silu", True, "Qwen2ForCausalLM"),
}
MODEL_TYPES = tuple(FAMILIES)
# model_type -> the name reports print
FAMILY_NAMES = {"gpt_neox": "GPT-NeoX", "llama": "Llama", "qwen2": "Qwen2"}
assert FAMILY_NAMES.keys() == FAMILIES.keys(), "every family has a name"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 8000
    hidden_size: int = 256
    num_hidden_layers: int = 8
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    rotary_pct: float = 1.0
    rotary_emb_base: float = 10000.0          # rope_theta
    max_position_embeddings: int = 2048
    layer_norm_eps: float = 1e-5              # the norm's eps (Llama's rms_norm_eps)
    use_parallel_residual: bool = False
    tie_word_embeddings: bool = False
    hidden_act: str | None = None             # None: the family's ("gelu" GPT-NeoX, "silu" Llama / Qwen2)
    initializer_range: float = 0.02
    bos_token_id: int = 2
    eos_token_id: int = 3
    # HF allows a list of end ids: the first is eos_token_id, the others end generation too
    extra_eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    # RoPE scaling beyond rotary_emb_base/rotary_pct (gozaru.engine.rope): None, or a dict with rope_type and
    # that type's fields, as HF's rope_parameters spells them. Not hashed (a dict), compared.
    rope_scaling: dict | None = dataclasses.field(default=None, hash=False)
    model_type: str = "gpt_neox"              # one of MODEL_TYPES
    num_key_value_heads: int | None = None    # None: num_attention_heads (no grouped-query attention)
    attention_bias: bool | None = None        # biases on q/k/v; None: the family's (Qwen2 yes, Llama no)

    def __post_init__(self):
        if self.model_type not in FAMILIES:
            raise ValueError(f"model_type={self.model_type!r} is not supported; choose one of {', '.join(MODEL_TYPES)}")
        _, _, _, act, bias, _ = FAMILIES[self.model_type]
        # the family's defaults fill the open fields, so equal models compare (and hash) equal
        if self.hidden_act is None:
            object.__setattr__(self, "hidden_act", act)
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.attention_bias is None:
            object.__setattr__(self, "attention_bias", bias)
        if self.hidden_act != act:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported for {self.model_type} (only {act!r})")
        if self.model_type == "gpt_neox":
            if self.tie_word_embeddings:
                raise ValueError("tie_word_embeddings=True is not supported: GPT-NeoX keeps embed_out separate")
            if self.num_key_value_heads != self.num_attention_heads or not self.attention_bias:
                raise ValueError("GPT-NeoX has every head in its fused query_key_value, with a bias: "
                                 "num_key_value_heads and attention_bias cannot be changed")
        elif self.model_type == "qwen2" and not self.attention_bias:
            raise ValueError("attention_bias=False: Qwen2 always has q/k/v biases")
        elif self.model_type == "llama" and self.attention_bias:
            raise ValueError("attention_bias=True is not supported for llama (transformers then puts a bias on o_proj "
                             "too); a Qwen2 config has q/k/v biases only")
        if self.is_llama_family:
            if self.rotary_pct != 1.0:
                raise ValueError(f"rotary_pct={self.rotary_pct}: Llama-family models rotate the whole head")
            if self.use_parallel_residual:
                raise ValueError("use_parallel_residual=True: Llama-family blocks are sequential")
        for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "num_key_value_heads"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{f} must be a positive int, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not divisible by "
                             f"num_key_value_heads={self.num_key_value_heads}")
        object.__setattr__(self, "extra_eos_token_ids", tuple(self.extra_eos_token_ids))
        for f, v in [("bos_token_id", self.bos_token_id), ("eos_token_id", self.eos_token_id),
                     ("pad_token_id", self.pad_token_id), *[("eos_token_id", x) for x in self.extra_eos_token_ids]]:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"{f} must be an int, got {v!r}")
        if not 0.0 <= self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct must be in [0, 1], got {self.rotary_pct}")
        tensor_table(self)  # the core's validation (ranges, rotary dims): one place decides what is a model
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, Mapping):
                raise ValueError(f"rope_scaling must be a dict or None, got {type(self.rope_scaling).__name__}")
            object.__setattr__(self, "rope_scaling", rope.read_scaling(
                self.rope_scaling, max_position_embeddings=self.max_position_embeddings))
        self.rope()  # settings that cannot make frequencies fail here, not at the first forward

    # -- derived sizes ---------------------------------------------------
    @property
    def is_llama_family(self) -> bool:
        """Llama and Qwen2: separate q/k/v/o, RMSNorm, SwiGLU, grouped-query attention."""
        return FAMILIES[self.model_type][0] == 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_ndims(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    def rope(self) -> tuple["np.ndarray", float]:
        """The core's rotary settings: (inverse frequencies float32 [ceil(rotary_ndims / 2)], attention factor),
        as transformers computes them for this config (gozaru.engine.rope)."""
        return rope.frequencies(self.rope_scaling, base=self.rotary_emb_base, head_dim=self.head_dim,
                                partial_rotary_factor=self.rotary_pct,
                                max_position_embeddings=self.max_position_embeddings)

    @property
    def head_name(self) -> str:
        """The tensor the LM head multiplies by: lm_head / embed_out, or the embedding when they are tied."""
        return next(t.name for t in self.tensors() if t.kind == ("embed" if self.tie_word_embeddings else "head"))

    def tensors(self) -> tuple["TensorSpec", ...]:
        """Every tensor of the model in the C core's order (the core's own table; no weights needed)."""
        return tensor_table(self)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """HF state-dict names and shapes, in the C core's order."""
        return {t.name: t.shape for t in self.tensors()}

    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors())

    # -- conversion ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def core_dict(self) -> dict[str, Any]:
        arch, norm, mlp = FAMILIES[self.model_type][:3]
        derived = {"arch": arch, "norm_kind": norm, "mlp_kind": mlp, "qkv_bias": bool(self.attention_bias)}
        return {f: derived[f] if f in derived else getattr(self, f) for f in CORE_FIELDS}

    def replace(self, **changes) -> "ModelConfig":
        if "num_attention_heads" in changes and self.num_key_value_heads == self.num_attention_heads:
            changes.setdefault("num_key_value_heads", None)  # "every head" stays every head
        if changes.get("model_type", self.model_type) != self.model_type:
            for k in ("hidden_act", "attention_bias"):  # the new family's defaults
                changes.setdefault(k, None)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "ModelConfig":
        """Build from a gozaru or HF config dict; unknown keys are ignored, missing required ones named. HF
        spellings (transformers 5's ``rope_parameters``, the hub's ``rope_theta`` / ``rope_scaling``,
        ``rms_norm_eps``) are read too; what gozaru cannot compute the same way is refused by name."""
        from .hf_config import hf_fields  # the HF spellings

        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in d and d[f.name] is not None:
                kw[f.name] = d[f.name]
        eos = d.get("eos_token_id")
        if isinstance(eos, (list, tuple)):  # valid in HF configs: any of them ends a generation
            if not eos:
                raise ValueError(f"{source}: eos_token_id is an empty list")
            kw["eos_token_id"], kw["extra_eos_token_ids"] = eos[0], tuple(eos[1:])
        try:  # the family's spellings, rope_parameters / rope_scaling included (gozaru.engine.hf_config)
            kw.update(hf_fields(d, kw))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        if "intermediate_size" not in kw:
            kw["intermediate_size"] = 4 * int(d["hidden_size"])
        for k in ("rotary_pct", "rotary_emb_base", "layer_norm_eps", "initializer_range"):
            if k in kw:
                kw[k] = float(kw[k])
        for k in ("use_parallel_residual", "tie_word_embeddings", "attention_bias"):
            if k in kw:
                kw[k] = bool(kw[k])
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "config") -> "ModelConfig":
        d = loads(text, source)
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object")
        return cls.from_dict(d, source=source)

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers' GPTNeoXForCausalLM / LlamaForCausalLM / Qwen2ForCausalLM loads."""
        from .hf_config import to_hf_dict

        return to_hf_dict(self, FAMILIES[self.model_type][5])


# Most of the code base predates the Llama family: the GPT-NeoX name stays an alias of the one config class.
GPTNeoXConfig = ModelConfig


class TensorSpec(NamedTuple):
    """One tensor of the model as the C core lays it out (``_core.tensor_table``)."""
    name: str                 # HF state-dict name
    shape: tuple[int, ...]
    layer: int                # -1 the embedding, 0..L-1 transformer layers, L the final norm, L+1 the LM head
    kind: str                 # one of TENSOR_KINDS
    is_matrix_weight: bool    # Linear / embedding weight (weight decay applies by default)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


# The core's tensor kinds, in the order of a layer's computation (the columns of weight-change heatmaps).
TENSOR_KINDS = ("embed", "norm", "qkv", "attn_out", "mlp_gate", "mlp_up", "mlp_down", "head")


@functools.lru_cache(maxsize=64)
def tensor_table(config: ModelConfig) -> tuple[TensorSpec, ...]:
    """The C core's tensor table for ``config`` (validated by the core; cached per config)."""
    return tuple(TensorSpec(*row) for row in _core.tensor_table(config.core_dict()))


PRESETS: dict[str, ModelConfig] = {
    # CPU demo / benchmark shape.
    "tiny": GPTNeoXConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=8, num_attention_heads=4,
                          intermediate_size=1024, max_position_embeddings=512),
    # rinna/japanese-gpt-neox-3.6b
    "rinna-3.6b": GPTNeoXConfig(vocab_size=32000, hidden_size=2816, num_hidden_layers=36, num_attention_heads=22,
                                intermediate_size=11264, rotary_pct=1.0, rotary_emb_base=10000.0,
                                max_position_embeddings=2048, layer_norm_eps=1e-5, use_parallel_residual=False,
                                bos_token_id=2, eos_token_id=3),
    # Llama-shaped CPU demo / benchmark model of about the size of "tiny" (GQA with 2 kv heads).
    "llama-tiny": ModelConfig(model_type="llama", vocab_size=8000, hidden_size=256, num_hidden_layers=8,
                              num_attention_heads=4, num_key_value_heads=2, intermediate_size=688,
                              max_position_embeddings=512, layer_norm_eps=1e-6, bos_token_id=1, eos_token_id=2),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset (``tiny``, ``llama-tiny``, ``rinna-3.6b``, …), optionally with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


class LoraSpec(NamedTuple):
    """One LoRA adapter: on weight ``target`` (a base tensor name), rank r, scale alpha/r (alpha/sqrt(r) with
    rslora). The core only needs the scale; alpha and rslora are kept for PEFT's adapter_config.json."""
    target: str
    r: int
    alpha: float
    rslora: bool = False

    @property
    def scale(self) -> float:
        if self.r <= 0:  # the core refuses the rank, naming the tensor
            return 0.0
        return self.alpha / (self.r ** 0.5 if self.rslora else self.r)

    def to_dict(self) -> dict:
        return {"target": self.target, "r": self.r, "alpha": self.alpha, "rslora": self.rslora}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LoraSpec":
        return cls(str(d["target"]), int(d["r"]), float(d["alpha"]), bool(d.get("rslora", False)))
