"""Which tensors to train: layer-group selection and a report of trainable shares.

Everything is computed from the C core's tensor table (``config.tensors()``: name, shape, layer, kind), so no
weights are needed and no tensor name is ever re-parsed.

Kinds (``select(config, kind, ...)``):

=============  ===================================================================================
``full``       every tensor
``mlp``        the MLP of every layer: GPT-NeoX ``mlp.dense_h_to_4h`` + ``mlp.dense_4h_to_h`` (weights and
               biases), Llama / Qwen2 ``mlp.gate_proj`` + ``up_proj`` + ``down_proj``
``non_mlp``    everything else: embeddings, layer norms, attention, final norm and the head
``attention``  attention of every layer: ``attention.query_key_value`` + ``attention.dense`` (GPT-NeoX),
               ``self_attn.q_proj`` / ``k_proj`` / ``v_proj`` (with Qwen2's biases) + ``o_proj`` (Llama / Qwen2)
``norms``      every layer norm, the final one included
``embed``      the token embedding (``gpt_neox.embed_in.weight``, ``model.embed_tokens.weight``)
``head``       the LM head (``embed_out.weight``, ``lm_head.weight``; with tied embeddings the embedding itself)
``first``      the first k whole layers (every tensor of layer i), k from ``budget`` or ``layers``
``last``       the last k whole layers
``random``     k whole layers drawn with ``seed``
``layers``     the whole layers listed in ``layers`` (negative indices count from the end)
``pattern``    tensors whose name matches the regex ``pattern`` (``re.search``)
=============  ===================================================================================

``parts`` (with ``first`` / ``last`` / ``random`` / ``layers``): keep only the chosen layers' tensors of these
core tensor kinds, e.g. ``parts=("qkv", "attn_out")`` for attention-only or ``("mlp_gate", "mlp_up", "mlp_down")``
for MLP-only within the chosen layers (the layer count from ``budget`` still counts whole layers).

The LM head: ``train_head=True`` (the default, as in the reference experiment where the head is always
trained) adds the head (:func:`head_name`) to every kind. ``train_head=False`` only stops adding it; kinds that contain
the head by definition (``full``, ``non_mlp``, ``head``) keep it, so ``mlp ∪ non_mlp`` is every tensor either way.

Budget rule (``first`` / ``last`` / ``random`` with ``budget``): the share of a selection is its parameter
count over *all* parameters of the model (embeddings and head included), counting the head when
``train_head=True``. The number of whole layers k is the one in 0..L whose share is closest to ``budget``
(ties go to the smaller k). :func:`share` gives the share reached.

On the ``rinna-3.6b`` preset (3,607,245,312 parameters; one layer is 95,194,880 = 2.64 %, the head 90,112,000
= 2.50 %), with the head trained: budget 0.05 → 1 layer + head = 5.14 %; budget 0.10 → 3 layers + head =
10.42 %. Without the head: 0.05 → 2 layers = 5.28 %; 0.10 → 4 layers = 10.56 %.
"""
from __future__ import annotations

import random
import re
from typing import Iterable

from .config import TENSOR_KINDS, GPTNeoXConfig

# Selection kinds of select() (not the core's tensor kinds, which are config.TENSOR_KINDS).
SELECTION_KINDS = ("full", "mlp", "non_mlp", "attention", "norms", "embed", "head", "first", "last", "random",
                   "layers", "pattern")
# Core tensor kinds that make up each type-based selection ("head": see head_name, tied embeddings).
_KIND_GROUPS = {"mlp": ("mlp_gate", "mlp_up", "mlp_down"), "attention": ("qkv", "attn_out"), "norms": ("norm",),
                "embed": ("embed",)}


def head_name(config: GPTNeoXConfig) -> str:
    """The LM head's tensor: ``embed_out.weight`` / ``lm_head.weight``, or the embedding when they are tied."""
    return config.head_name


def embed_name(config: GPTNeoXConfig) -> str:
    """The token embedding's tensor."""
    return next(t.name for t in config.tensors() if t.kind == "embed")


def param_counts(config: GPTNeoXConfig) -> dict[str, int]:
    """Parameter count per tensor name, in core order."""
    return {t.name: t.numel for t in config.tensors()}


def layer_of(config: GPTNeoXConfig, name: str) -> int | None:
    """The transformer-layer index of a tensor, or None for embeddings, final norm and head."""
    for t in config.tensors():
        if t.name == name:
            return t.layer if 0 <= t.layer < config.num_hidden_layers else None
    raise ValueError(f"unknown tensor name {name!r} for this config")


def layer_names(config: GPTNeoXConfig, i: int) -> list[str]:
    """Every tensor of transformer layer ``i``."""
    return [t.name for t in config.tensors() if t.layer == i and i < config.num_hidden_layers]


def names_of_kinds(config: GPTNeoXConfig, kinds: Iterable[str]) -> set[str]:
    """Tensors whose core kind is one of ``kinds``."""
    kinds = set(kinds)
    return {t.name for t in config.tensors() if t.kind in kinds}


def select(config: GPTNeoXConfig, kind: str, budget: float | None = None, seed: int = 0, train_head: bool = True,
           layers: int | Iterable[int] | None = None, pattern: str | None = None,
           parts: Iterable[str] | None = None) -> set[str]:
    """The set of HF tensor names to train (see the module docstring for kinds and the budget rule).

    ``first`` / ``last`` / ``random`` need exactly one of ``budget`` (fraction of all parameters, in (0, 1]) or
    ``layers`` (an int: the number of layers). ``layers`` kind needs ``layers`` (indices); ``pattern`` kind
    needs ``pattern``.
    """
    names = [t.name for t in config.tensors()]
    L = config.num_hidden_layers
    if kind == "full":
        chosen = set(names)
    elif kind == "non_mlp":
        chosen = set(names) - names_of_kinds(config, _KIND_GROUPS["mlp"])
    elif kind == "head":
        chosen = {head_name(config)}
    elif kind in _KIND_GROUPS:
        chosen = names_of_kinds(config, _KIND_GROUPS[kind])
    elif kind in ("first", "last", "random"):
        k = _layer_count(config, kind, budget, layers, train_head)
        if kind == "first":
            idx = range(k)
        elif kind == "last":
            idx = range(L - k, L)
        else:
            idx = sorted(random.Random(f"layers-{seed}").sample(range(L), k))
        chosen = {n for i in idx for n in layer_names(config, i)}
    elif kind == "layers":
        if layers is None:
            raise ValueError("kind='layers' needs layers=[indices]")
        idx = _layer_indices(layers, L)
        chosen = {n for i in idx for n in layer_names(config, i)}
    elif kind == "pattern":
        if not pattern:
            raise ValueError("kind='pattern' needs pattern=<regex>")
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"bad pattern {pattern!r}: {e}") from None
        chosen = {n for n in names if rx.search(n)}
        if not chosen:  # almost always a typo
            raise ValueError(f"pattern {pattern!r} matches no tensor")
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(SELECTION_KINDS)}")
    if parts is not None:
        chosen &= _parts(config, kind, parts)
    if train_head:
        chosen.add(head_name(config))
    return chosen


def _parts(config: GPTNeoXConfig, kind: str, parts) -> set[str]:
    """Tensors of the given core kinds; only meaningful for the layer-choosing selection kinds."""
    if kind not in ("first", "last", "random", "layers"):
        raise ValueError(f"parts= narrows a layer choice; kind {kind!r} chooses no layers")
    parts = [parts] if isinstance(parts, str) else list(parts)
    unknown = [p for p in parts if p not in TENSOR_KINDS]
    if unknown or not parts:
        raise ValueError(f"unknown tensor kind(s) {unknown or parts} in parts; choose from {', '.join(TENSOR_KINDS)}")
    return names_of_kinds(config, parts)


def _layer_indices(layers, L: int) -> list[int]:
    if isinstance(layers, int):
        raise ValueError("kind='layers' needs a list of layer indices (use kind='first' for a count)")
    out = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"layer index {i!r} is not an int")
        j = i + L if i < 0 else i
        if not 0 <= j < L:
            raise ValueError(f"layer index {i} is out of range for {L} layers")
        out.append(j)
    if not out:
        raise ValueError("kind='layers' needs at least one layer index")
    return sorted(set(out))


def _layer_count(config: GPTNeoXConfig, kind: str, budget: float | None, layers, train_head: bool) -> int:
    L = config.num_hidden_layers
    if (budget is None) == (layers is None):
        raise ValueError(f"kind={kind!r} needs exactly one of budget=<fraction> or layers=<count>")
    if layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int) or not 0 <= layers <= L:
            raise ValueError(f"layers must be a count in 0..{L} for kind={kind!r}, got {layers!r}")
        return layers
    return layers_for_budget(config, budget, train_head=train_head)


def layers_for_budget(config: GPTNeoXConfig, budget: float, *, train_head: bool = True) -> int:
    """The number of whole layers whose share (plus the head if trained) is closest to ``budget``."""
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a fraction in (0, 1], got {budget!r}")
    counts = param_counts(config)
    total = sum(counts.values())
    per_layer = sum(counts[n] for n in layer_names(config, 0))
    base = counts[head_name(config)] if train_head else 0
    best_k, best_gap = 0, float("inf")
    for k in range(config.num_hidden_layers + 1):
        gap = abs((base + k * per_layer) / total - budget)
        if gap < best_gap - 1e-15:
            best_k, best_gap = k, gap
    return best_k


def share(config: GPTNeoXConfig, names: Iterable[str]) -> float:
    """Trainable parameters of ``names`` over all parameters."""
    counts = param_counts(config)
    names = _checked(counts, names)
    return sum(counts[n] for n in names) / sum(counts.values())


def trained_layers(config: GPTNeoXConfig, names: Iterable[str]) -> list[int]:
    """Indices of the layers all of whose tensors are in ``names``."""
    names = set(names)
    return [i for i in range(config.num_hidden_layers) if set(layer_names(config, i)) <= names]


def ordered(config: GPTNeoXConfig, names: Iterable[str]) -> list[str]:
    """``names`` in the core's tensor order."""
    counts = param_counts(config)
    wanted = _checked(counts, names)
    return [n for n in counts if n in wanted]


def _checked(counts: dict[str, int], names: Iterable[str]) -> set[str]:
    names = set(names)
    unknown = sorted(names - counts.keys())
    if unknown:
        raise ValueError(f"unknown tensor name(s) for this config: {', '.join(unknown[:5])}")
    return names


def report(config: GPTNeoXConfig, names: Iterable[str]) -> tuple[str, dict]:
    """(table, info) of trainable / total / % overall and per group: embed, each layer, final_norm, head.

    ``info`` = ``{"trainable", "total", "percent", "tensors", "layers_trained", "groups": {group: {"trainable",
    "total", "percent"}}}`` with groups ``embed``, ``layer.0`` … ``layer.{L-1}``, ``final_norm``, ``head``.
    """
    counts = param_counts(config)
    chosen = _checked(counts, names)
    groups: dict[str, dict] = {}
    L = config.num_hidden_layers
    for t in config.tensors():
        name, n = t.name, t.numel
        g = "embed" if t.layer < 0 else f"layer.{t.layer}" if t.layer < L else "final_norm" if t.layer == L \
            else "head"
        entry = groups.setdefault(g, {"trainable": 0, "total": 0})
        entry["total"] += n
        if name in chosen:
            entry["trainable"] += n
    for entry in groups.values():
        entry["percent"] = 100.0 * entry["trainable"] / entry["total"]
    trainable = sum(counts[n] for n in chosen)
    total = sum(counts.values())
    info = {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total,
            "tensors": len(chosen), "layers_trained": trained_layers(config, chosen), "groups": groups}
    width = max(len(g) for g in groups)
    lines = [f"{'group':<{width}}  {'trainable':>15}  {'total':>15}  {'%':>7}"]
    for g, e in groups.items():
        lines.append(f"{g:<{width}}  {e['trainable']:>15,}  {e['total']:>15,}  {e['percent']:>6.2f}%")
    lines.append(f"{'all':<{width}}  {trainable:>15,}  {total:>15,}  {info['percent']:>6.2f}%")
    return "\n".join(lines), info
