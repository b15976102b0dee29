"""Helpers shared by the tests that compare gozaru with a reference (transformers, or the CPU backend)."""
import numpy as np


def rel_err(a, b):
    """max |a - b| / max |b|: the strictest scale-aware comparison, used for logits and gradients."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def random_batch(cfg, B, T, seed=1):
    """Random tokens and targets [B, T] with about 30 % of targets ignored (response-only style masking)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(B, T), dtype=np.int32)
    targets = rng.integers(0, cfg.vocab_size, size=(B, T), dtype=np.int32)
    targets[rng.random((B, T)) < 0.3] = -100
    return tokens, targets


def hf_params(hf):
    """A transformers model's parameters under gozaru's names (transformers 5 calls embed_out `lm_head`)."""
    named = dict(hf.named_parameters())
    if "lm_head.weight" in named:
        named["embed_out.weight"] = named.pop("lm_head.weight")
    return named
