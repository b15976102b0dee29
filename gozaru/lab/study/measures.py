"""What a study measures per held-out item: adoption and suppression of the ござる ending (teacher forced), and
the ござる-rate of sampled and greedy answers.

For each held-out answer in polite form ``o`` and its ござる rewrite ``g = to_gozaru(o)`` (``gozaru.data.rewrite``
knows the mapping), both are cut after the first sentence whose ending was rewritten and encoded after the
same prompt. The shared token prefix ``P`` is the context; the rest of each, ``c_g`` and ``c_o``, are the two
ending alternatives the rewriter knows for that sentence. Per item:

* **adoption** = p(c_g | P) / (p(c_g | P) + p(c_o | P)) — the probability of the ござる ending, normalised over the
  two alternatives (0.5 = no preference). Bounded in [0, 1], so a model that only pushes the polite ending
  further down gains little: the reason it, not the log ratio, is the primary measure;
* **suppression** = log p(c_o | P) (nats): how far the polite ending was pushed down, reported on its own;
* the log ratio ``log p(c_g | P) − log p(c_o | P)`` (the old "style score") = logit(adoption).

All items go through one batched forward pass per batch (rows sorted by length, so padding is small).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from ...data import rewrite
from ...data.dolly import as_record
from ...data.sft import format_prompt
from ..generate import encode_prompt, generate_text

# What closes a sentence (the rewriter treats an ending before one of these as final).
_SENTENCE_END = re.compile(r"[。．.！？!?…\n]")


@dataclasses.dataclass
class StyleItems:
    """Per held-out answer: the shared context ids and the two continuations (ござる form, polite form)."""
    prefixes: list[list[int]]
    gozaru: list[list[int]]
    plain: list[list[int]]
    dropped: int = 0     # answers without a rewritten ending, or too long for the model

    def __len__(self) -> int:
        return len(self.prefixes)


def _cut_after_sentence(text: str, start: int) -> int:
    m = _SENTENCE_END.search(text, start)
    return m.end() if m else len(text)


def style_items(tokenizer, records: Sequence, *, style: str = "rinna", max_len: int | None = None) -> StyleItems:
    """Items from held-out records whose ``output`` is in the plain polite form (the ござる form is made here).

    ``max_len`` (the model's positions): a longer context loses its start; items whose endings alone do not
    fit are dropped."""
    items = StyleItems([], [], [])
    for r in records:
        rec = as_record(r)
        plain = rec.output
        goz = rewrite.to_gozaru(plain)
        if goz == plain:
            items.dropped += 1
            continue
        d = next(i for i, (a, b) in enumerate(zip(plain + "\0", goz + "\0")) if a != b)
        prompt = encode_prompt(tokenizer, format_prompt(rec, style, tokenizer))
        ids_o = prompt + list(tokenizer.encode(plain[:_cut_after_sentence(plain, d)]))
        ids_g = prompt + list(tokenizer.encode(goz[:_cut_after_sentence(goz, d)]))
        c = 0
        while c < min(len(ids_o), len(ids_g)) and ids_o[c] == ids_g[c]:
            c += 1
        if c == 0 or c == len(ids_o) or c == len(ids_g):
            items.dropped += 1
            continue
        prefix, cont_g, cont_o = ids_o[:c], ids_g[c:], ids_o[c:]
        if max_len is not None:
            room = max_len - max(len(cont_g), len(cont_o))
            if room < 1:
                items.dropped += 1
                continue
            prefix = prefix[-room:]
        items.prefixes.append(prefix)
        items.gozaru.append(cont_g)
        items.plain.append(cont_o)
    return items


def continuation_logprobs(model, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                          batch_size: int = 16, pad_id: int = 0) -> np.ndarray:
    """``log p(continuation | prefix)`` per pair (sum over the continuation's tokens, teacher forced)."""
    seqs = [list(p) + list(c) for p, c in zip(prefixes, continuations)]
    out = np.zeros(len(seqs))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(order), batch_size):
        members = order[start:start + batch_size]
        width = max(len(seqs[i]) for i in members)
        tokens = np.full((len(members), width), pad_id, dtype=np.int32)
        for row, i in enumerate(members):
            tokens[row, :len(seqs[i])] = seqs[i]
        logits = np.asarray(model.logits(tokens), dtype=np.float64)
        for row, i in enumerate(members):
            p, n = len(prefixes[i]), len(continuations[i])
            z = logits[row, p - 1:p - 1 + n]                 # position t predicts token t + 1
            peak = z.max(axis=1, keepdims=True)
            logz = (peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1)))
            out[i] = float((z[np.arange(n), seqs[i][p:p + n]] - logz).sum())
    return out


def ending_logprobs(model, items: StyleItems, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per item (log p(ござる ending), log p(polite ending)) given the same prefix (nats)."""
    if not len(items):
        return np.zeros(0), np.zeros(0)
    both = continuation_logprobs(model, items.prefixes + items.prefixes, items.gozaru + items.plain, batch_size)
    n = len(items)
    return both[:n], both[n:]


def style_scores(model, items: StyleItems, batch_size: int = 16) -> np.ndarray:
    """Per item ``log p(ござる ending) − log p(polite ending)`` given the same prefix (nats) = logit(adoption)."""
    g, o = ending_logprobs(model, items, batch_size)
    return g - o


def adoption_suppression(model, items: StyleItems, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per item (adoption in [0, 1], suppression = log p(polite ending) in nats); see the module docstring."""
    g, o = ending_logprobs(model, items, batch_size)
    return 1.0 / (1.0 + np.exp(o - g)), o


def sampled_counts(model, tokenizer, prompts: Sequence[str], *, samples: int, max_new_tokens: int,
                   batch_size: int = 32, seed: int = 0) -> np.ndarray:
    """Per prompt, how many of ``samples`` answers sampled at temperature 1 (no top-k/top-p cut, seeded)
    contain ござる."""
    repeated = [p for p in prompts for _ in range(samples)]
    answers = generate_text(model, tokenizer, repeated, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            temperature=1.0, seed=seed)
    hits = np.array([rewrite.GOZARU in a for a in answers], dtype=float).reshape(len(prompts), samples)
    return hits.sum(axis=1)
