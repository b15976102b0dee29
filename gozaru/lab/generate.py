"""Text in, text out: batches prompts through ``Model.generate`` and decodes the answers (stopping at EOS)."""
from __future__ import annotations

from typing import Sequence

from .progress import progress_bar


def generate_ids(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 64, batch_size: int = 32,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 eos_token_id: int | None = None, progress: bool = False) -> list[list[int]]:
    """New token ids per prompt (EOS and what follows removed). Prompts are grouped by length so each batch
    wastes little work; batch ``i`` samples with seed ``seed + i``, so results are reproducible."""
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: every prompt needs at least one token")
    eos = model.config.eos_token_id if eos_token_id is None else eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    limit = model.config.max_position_embeddings
    out: list[list[int] | None] = [None] * len(prompts)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        batches = progress_bar(iterable=batches, desc="generate", unit="batch", leave=False)
    for b, members in enumerate(batches):
        rows = [prompts[i] for i in members]
        room = limit - max(len(r) for r in rows)
        if room <= 0:
            raise ValueError(f"a prompt of {max(len(r) for r in rows)} tokens leaves no room within "
                             f"max_position_embeddings={limit}")
        new = model.generate(rows, max_new_tokens=min(max_new_tokens, room), temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed + b, eos_token_id=eos)
        for i, ids in zip(members, new):
            ids = list(ids)
            if eos is not None and eos >= 0 and eos in ids:
                ids = ids[:ids.index(eos)]
            out[i] = ids
    return out  # type: ignore[return-value]


def generate_text(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 64, batch_size: int = 32,
                  temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                  progress: bool = False) -> list[str]:
    """Answers to ``prompts`` (already in the model's prompt format, e.g. ending in ``システム: ``), decoded.

    Greedy by default (``temperature=0``); ``temperature``/``top_k``/``top_p``/``seed`` sample instead."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    eos = getattr(tokenizer, "eos_id", None)
    new = generate_ids(model, ids, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
                       top_k=top_k, top_p=top_p, seed=seed, eos_token_id=eos, progress=progress)
    # Models often pad their vocabulary past the tokenizer's (to a multiple of 64 or 128); those ids have no text.
    limit = getattr(tokenizer, "vocab_size", None)
    if limit is not None:
        new = [[i for i in x if i < limit] for x in new]
    return [tokenizer.decode(x) for x in new]


def encode_prompt(tokenizer, text: str) -> list[int]:
    """A prompt's ids as the model saw them in training (the tokenizer's prompt convention: no EOS appended)."""
    encode_prompt_fn = getattr(tokenizer, "encode_prompt", None)
    if encode_prompt_fn is not None:
        return list(encode_prompt_fn(text))
    return list(tokenizer.encode(text))
