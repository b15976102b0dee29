"""``gozaru.Model``: a GPT-NeoX, Llama or Qwen2 model in the C core, seen from Python.

Parameters are NumPy views into the core's buffer (zero copy, writable), named as in HF's state dict.
Token arrays of any integer dtype are accepted and narrowed to int32 (``engine.arrays``), refusing ids that
would wrap around; the vocabulary range check is the core's, and ``gozaru._core`` itself takes only int32.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from .. import _core
from . import hf, hf_export
from .arrays import ParamViews, as_bytes, as_doc_ids, as_token_array, names_list, next_token_targets
from .config import GPTNeoXConfig, LoraSpec
from .placement import Placement, emulation_fallback, share_bf16_switches


# --------------------------------------------------------------------------- the model
class PrecisionError(RuntimeError):
    """The precision asked for cannot run here (the CPU lacks its instructions, or the build its library)."""


class Model:
    """A causal LM with HF ``GPTNeoXForCausalLM`` / ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` math and names (by
    ``config.model_type``) in the gozaru C core.

    ``seed`` (an int) gives HF-style random init with std ``config.initializer_range``; ``seed=None``
    leaves every parameter zero (for loading). A new model has every tensor frozen: choose what to train
    with ``train_only`` / ``set_trainable`` / ``train_all`` (frozen tensors cost no gradient memory).
    ``lora``: LoRA adapters (``LoraSpec``s) fixed at creation; ``gozaru.lora.attach`` is the usual way.

    ``placement`` (``gozaru.engine.placement.Placement``: backend, precision, threads) says where the model runs
    and how it computes; ``backend`` / ``precision`` given as keywords replace those fields of it.
    ``precision`` ("fp32", "bf16" or "bf16-emulated"; None keeps the backend's own: fp32 on the CPU) is how the
    Linear layers compute (csrc/precision.h); weights, gradients and optimizer state stay fp32, so it is a run
    setting, not part of a checkpoint. "bf16" needs AVX512-BF16 or AMX-BF16 on the CPU (a RuntimeError names
    what is missing); with GOZARU_BF16_EMULATE=1 such a CPU runs "bf16-emulated" instead (same rounding, slow)."""

    def __init__(self, config: GPTNeoXConfig, seed: int | None = 0, backend: str | None = None,
                 lora: Iterable[LoraSpec] = (), precision: str | None = None, *, placement: Placement | None = None):
        if not isinstance(config, GPTNeoXConfig):
            raise TypeError(f"config must be a gozaru.ModelConfig, got {type(config).__name__}")
        placement = Placement.of(placement, backend=backend, precision=precision)
        placement.apply_threads()
        self._config = config
        self._lora = tuple(s if isinstance(s, LoraSpec) else LoraSpec(*s) for s in lora)
        self._core = _core.Model(config.core_dict(), backend=placement.backend, seed=seed,
                                 init_std=config.initializer_range,
                                 lora=[(s.target, s.r, s.scale) for s in self._lora] or None,
                                 rope=config.rope())
        self._params = ParamViews(self._core, writable=self._writes_seen())
        if placement.precision is not None:
            self.set_precision(placement.precision)

    # -- description -------------------------------------------------------------
    @property
    def config(self) -> GPTNeoXConfig:
        return self._config

    @property
    def lora(self) -> tuple[LoraSpec, ...]:
        """The model's LoRA adapters (empty for a plain model)."""
        return self._lora

    def lora_names(self, spec: LoraSpec) -> tuple[str, str]:
        """Tensor names of the A and B matrices of one adapter."""
        for target, _, _, a, b in self._core.lora:
            if target == spec.target:
                return a, b
        raise ValueError(f"{spec.target} has no LoRA adapter")

    @property
    def names(self) -> tuple[str, ...]:
        """HF tensor names in the core's order."""
        return self._core.names

    @property
    def num_params(self) -> int:
        return self._core.num_params

    @property
    def backend(self) -> str:
        return self._core.backend

    @property
    def precision(self) -> str:
        """How the Linear layers compute: "fp32", "bf16" or "bf16-emulated" (CUDA: "tf32" too)."""
        return self._core.precision

    @property
    def placement(self) -> Placement:
        """Where this model runs and how it computes now: its backend, the precision the core runs (after any
        fallback) and the engine threads in effect. A model made from this one with it computes the same way."""
        return Placement(self.backend, self.precision, _core.get_num_threads())

    def set_precision(self, precision: str) -> None:
        """See the class docstring; ValueError for an unknown name, RuntimeError when this CPU cannot run it."""
        if not isinstance(precision, str):
            raise TypeError(f"precision must be a str, got {type(precision).__name__}")
        share_bf16_switches()
        try:
            self._core.set_precision(precision)
        except _core.ModelBusyError:  # another thread is inside a call: not a property of this CPU
            raise
        except RuntimeError as e:  # the core's GZ_ERR_BACKEND: not runnable on this CPU or build
            fallback = emulation_fallback(precision)
            if fallback is None:
                raise PrecisionError(str(e)) from None
            self._core.set_precision(fallback)
        self._params.set_writable(self._writes_seen())

    def _writes_seen(self) -> bool:
        """Whether a write into a parameter view reaches the computation as it is: on the CPU in fp32 only
        (bf16 working copies are rounded from the masters; a device computes from its own copy)."""
        return self.backend == "cpu" and self.precision == "fp32"

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        return self._params

    @property
    def core(self) -> _core.Model:
        """The underlying ``gozaru._core.Model``."""
        return self._core

    def tensor_info(self, name: str) -> dict:
        return self._core.tensor_info(name)

    def num_trainable(self) -> int:
        return sum(self._core.tensor_info(n)["numel"] for n in self.trainable_names())

    def __repr__(self) -> str:
        c = self._config
        return (f"gozaru.Model({c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
                f"intermediate {c.intermediate_size}, vocab {c.vocab_size}; {self.num_params:,} params, "
                f"{self.num_trainable():,} trainable; backend={self.backend}, precision={self.precision})")

    # -- trainable flags ---------------------------------------------------------
    def _check_names(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self._params]
        if unknown:
            raise ValueError(f"unknown tensor name(s): {', '.join(map(repr, unknown[:5]))}"
                             f"{' ...' if len(unknown) > 5 else ''} (see Model.names)")

    def set_trainable(self, names: str | Iterable[str], flag: bool = True) -> None:
        """Marks the named tensors trainable (True) or frozen (False); all names are checked first."""
        names = names_list(names)
        self._check_names(names)
        for n in names:
            self._core.set_trainable(n, bool(flag))

    def train_only(self, names: str | Iterable[str]) -> None:
        """Exactly these tensors trainable, every other frozen."""
        names = names_list(names)
        self._check_names(names)
        keep = set(names)
        for n in self.names:  # freeze first, so peak gradient memory never holds both sets
            if n not in keep:
                self._core.set_trainable(n, False)
        for n in names:
            self._core.set_trainable(n, True)

    def train_all(self) -> None:
        self.set_trainable(self.names, True)

    def freeze_all(self) -> None:
        self.set_trainable(self.names, False)

    def trainable_names(self) -> list[str]:
        return [n for n in self.names if self._core.is_trainable(n)]

    def is_trainable(self, name: str) -> bool:
        return self._core.is_trainable(name)

    # -- forward / backward ------------------------------------------------------
    def _tokens(self, tokens: Any) -> np.ndarray:
        return as_token_array(tokens, "tokens", self._config.vocab_size)

    def forward(self, tokens: Any, targets: Any = None, return_logits: bool = False,
                keep_activations: bool = True, doc_ids: Any = None):
        """(loss or None, number of counted targets, logits [B, T, V] or None); keeps activations for backward
        when targets are given, unless keep_activations=False (evaluation: less memory, no backward).

        ``doc_ids`` (integers [B, T], or None for one document per row) packs several documents into a row: each
        run of equal ids in a row is one document (e.g. ``0 0 0 1 1 2 2 2 -1 -1``, -1 on padding), which attends
        only to itself and whose positions start at 0, so it gets the loss and gradients it has in a row of its
        own. A document's tokens are contiguous: an id coming back in its row after another is a ValueError."""
        tok = self._tokens(tokens)
        tgt = None
        if targets is not None:
            tgt = as_token_array(targets, "targets", self._config.vocab_size, allow_ignore=True)
            if tgt.shape != tok.shape:
                raise ValueError(f"targets must have the shape of tokens {tok.shape}, got {tgt.shape}")
        docs = None if doc_ids is None else as_doc_ids(doc_ids, tok.shape)
        return self._core.forward(tok, tgt, return_logits, keep_activations, docs)

    def loss(self, tokens: Any, targets: Any = None, keep_activations: bool = True, doc_ids: Any = None) -> float:
        """Mean cross-entropy over targets != -100 (NaN when none count); keeps activations for ``backward``
        (keep_activations=False for evaluation). targets=None means next-token prediction on ``tokens`` (within
        each document: the last token of one does not predict the next one's first). ``doc_ids``: packed rows,
        see ``forward``."""
        tok = self._tokens(tokens)
        docs = None if doc_ids is None else as_doc_ids(doc_ids, tok.shape)
        if targets is None:
            targets = next_token_targets(tok, docs)
        return self.forward(tok, targets, keep_activations=keep_activations, doc_ids=docs)[0]

    def logits(self, tokens: Any) -> np.ndarray:
        """Logits [B, T, vocab_size] (float32)."""
        return self.forward(tokens, None, True, keep_activations=False)[2]

    def backward(self, scale: float = 1.0) -> None:
        """Accumulates d(scale * loss)/d(param) into the gradients of trainable tensors."""
        self._core.backward(scale)

    def zero_grad(self) -> None:
        self._core.zero_grad()

    def grad(self, name: str) -> np.ndarray:
        """A copy of a trainable tensor's gradient (ValueError for a frozen one)."""
        return self._core.grad(name)

    def grad_norms(self) -> dict[str, float]:
        """L2 norm of each tensor's gradient (NaN for frozen tensors)."""
        return {n: float(v) for n, v in zip(self.names, self._core.grad_norms())}

    # -- generation --------------------------------------------------------------
    def generate(self, prompts: Iterable[Iterable[int]], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 eos_token_id: int | None = None, return_logits: bool = False):
        """New tokens for each prompt (a list of token ids), EOS included when hit. Greedy when
        temperature below 1e-6 (0 included); Ctrl-C stops it with KeyboardInterrupt. eos_token_id=None uses the
        config's; a negative one never stops early. return_logits=True also returns, per prompt, a float32 array
        [n_new, vocab] of the logits each new token was chosen from (before temperature)."""
        rows = [np.asarray(p) for p in prompts]
        if not rows:
            raise ValueError("prompts is empty: a zero-size batch cannot be processed")
        for i, r in enumerate(rows):
            if r.ndim != 1 or r.size == 0:
                raise ValueError(f"prompts[{i}] must be a non-empty list of token ids, got shape {r.shape}")
            # each row checked on its own: padding is never read, so it needs no valid id
            rows[i] = as_token_array(r[None, :], f"prompts[{i}]", self._config.vocab_size)[0]
        padded = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int32)
        for i, r in enumerate(rows):
            padded[i, :len(r)] = r
        lens = np.array([len(r) for r in rows], dtype=np.int32)
        extra_eos: set[int] = set()
        if eos_token_id is None:  # the config's, unless this (small) vocabulary has no such id
            eos_token_id = self._config.eos_token_id if self._config.eos_token_id < self._config.vocab_size else -1
            extra_eos = set(self._config.extra_eos_token_ids)
        res = self._core.generate(padded, lens, max_new_tokens, temperature=max(temperature, 0.0), top_k=top_k,
                                  top_p=top_p, seed=seed, eos_token_id=eos_token_id, return_logits=return_logits)
        out, out_lens = res[0], res[1]
        tokens = [out[i, :out_lens[i]].tolist() for i in range(len(rows))]
        if extra_eos:  # the config's other end ids end a row too (HF's eos_token_id list), included like EOS
            out_lens = [next((j + 1 for j, t in enumerate(row) if t in extra_eos), len(row)) for row in tokens]
            tokens = [row[:n] for row, n in zip(tokens, out_lens)]
        if return_logits:
            return tokens, [res[2][i, :out_lens[i]].copy() for i in range(len(rows))]
        return tokens

    # -- copies ------------------------------------------------------------------
    def snapshot(self, timeout: float = 10.0) -> np.ndarray:
        """A copy of all parameters (flat, the core's order) from one consistent step: taken under the model's
        busy guard, waiting up to ``timeout`` seconds while another thread is inside a call on this model
        (then RuntimeError)."""
        return self._core.snapshot(timeout)

    def _tensors_of(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor (adapters included) as a view into ``flat`` (the core's order)."""
        out, offset = {}, 0
        for name in self.names:
            shape = self._params[name].shape
            n = int(np.prod(shape))
            out[name] = flat[offset: offset + n].reshape(shape)
            offset += n
        return out

    def clone(self) -> "Model":
        """Same config and backend, copied parameters (one consistent step, see ``snapshot``) and trainable
        flags (no gradients)."""
        flat = self.snapshot()
        other = Model(self._config, seed=None, lora=self._lora, placement=self.placement)
        other._core.flat_params()[...] = flat
        other._core.params_changed()
        other.set_trainable(self.trainable_names(), True)
        return other

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every tensor, by HF name, all from one consistent step (see ``snapshot``)."""
        return self._tensors_of(self.snapshot())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copies tensors in by HF name; names and shapes must match exactly (checked before anything changes)."""
        missing = [n for n in self.names if n not in state]
        unexpected = [k for k in state if k not in self._params]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                parts.append(f"unexpected {', '.join(map(str, unexpected[:5]))}{' ...' if len(unexpected) > 5 else ''}")
            raise ValueError("load_state_dict: " + "; ".join(parts))
        arrays = {}
        for n in self.names:
            a = np.asarray(state[n])
            if a.shape != self._params[n].shape:
                raise ValueError(f"load_state_dict: {n} has shape {a.shape}, the model's is {self._params[n].shape}")
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise TypeError(f"load_state_dict: {n} has dtype {a.dtype}, expected floating point")
            arrays[n] = a
        with self.edit_params() as params:
            for n, a in arrays.items():
                params[n][...] = a

    @contextlib.contextmanager
    def edit_params(self) -> Iterator[Mapping[str, np.ndarray]]:
        """``with model.edit_params() as p: p[name][...] = x`` — the one way to write weights that works under every
        placement: ``p`` holds writable views, and when the block ends the core is told (bf16 working copies are
        re-rounded from the masters, a device uploads) and those views turn read-only."""
        views = ParamViews(self._core, writable=True)
        try:
            yield views
        finally:
            views.set_writable(False)
            self._core.params_changed()

    def params_changed(self) -> None:
        """Tells the core its parameters were written behind its back (through ``core.flat_params()``, or views
        on the CPU in fp32): bf16 working copies are re-rounded, a device uploads. ``edit_params`` calls it."""
        self._core.params_changed()

    def sync_to_host(self) -> None:
        """Refresh the ``params`` views from the device after training there (no-op on the CPU)."""
        self._core.sync_to_host()

    # -- files -------------------------------------------------------------------
    def save(self, path: str | os.PathLike, optimizer=None, step: int = 0, tokens_seen: int = 0, rng: Any = None,
             extra: Any = None) -> None:
        """Atomic HDF5 checkpoint: parameters, trainable flags, config, optimizer state (when given), step,
        tokens seen, and two opaque payloads (``rng``, ``extra``: bytes, str, or JSON-serialisable)."""
        opt_core, lr = None, 0.0
        if optimizer is not None:
            # Whether it belongs to this model is the core's check (one owner).
            opt_core, lr = getattr(optimizer, "core", None), getattr(optimizer, "lr", None)
            if not isinstance(opt_core, _core.AdamW):
                raise TypeError(f"optimizer must be a gozaru.AdamW, got {type(optimizer).__name__}")
        self._core.save_checkpoint(os.fspath(path), opt_core, lr=lr, config_json=self.config_json(),
                                   step=step, tokens_seen=tokens_seen, rng=as_bytes(rng, "rng"),
                                   extra=as_bytes(extra, "extra"))

    def config_json(self) -> str:
        """The config a checkpoint stores: the model config, plus ``lora`` (the adapter specs) when present."""
        d = self._config.to_dict()
        if self._lora:
            d["lora"] = [s.to_dict() for s in self._lora]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_hf(cls, folder: str | os.PathLike, *, backend: str | None = None, strict: bool = True,
                progress=None, precision: str | None = None, placement: Placement | None = None) -> "Model":
        """A model with the config and weights of an HF GPT-NeoX / Llama / Qwen2 folder (config.json + safetensors /
        .bin), placed as ``placement`` says (``backend`` / ``precision`` replace its fields).

        strict=False ignores tensors gozaru does not know; missing tensors are always an error. progress, when
        given, is called with each tensor name as it is copied."""
        config = hf.read_hf_config(folder)
        hf.check_weights_size(folder, config)
        model = cls(config, seed=None, placement=Placement.of(placement, backend=backend, precision=precision))
        with model.edit_params() as params:
            hf.read_weights_into(folder, model.config, params, strict=strict, progress=progress)
        return model

    def to_hf(self, folder: str | os.PathLike, *, dtype: str = "fp32", max_shard_size: int | str | None = None,
              pad_token_id: int | None = None) -> list[str]:
        """Writes a folder that transformers' ``AutoModelForCausalLM.from_pretrained`` loads as the config's family
        (GPT-NeoX, Llama, Qwen2): config.json, generation_config.json and the weights in ``dtype`` (fp32, bf16,
        fp16), sharded past ``max_shard_size`` (e.g. "500MB"); see ``gozaru.engine.hf_export``. Returns the file
        names written."""
        if self._lora:
            raise ValueError("to_hf: this model has LoRA adapters; write gozaru.lora.merge(model).to_hf(folder) for "
                             "a plain HF model, or gozaru.lora.save_adapter(model, folder) for PEFT's format")
        tensors = self._tensors_of(self.snapshot())  # one consistent step even while another thread trains
        return hf_export.write_folder(folder, self.config, [(name, tensors[name]) for name in self.names],
                                      dtype=dtype, max_shard_size=max_shard_size, pad_token_id=pad_token_id)
