"""Supervised fine-tuning data: prompt formats, response-only loss masks, truncation, packing and batches.

Token/target convention (what ``Model.loss(tokens, targets)`` takes): a sequence of ids ``s`` becomes
``tokens = s[:-1]`` and ``targets = s[1:]``, so ``targets[b, t]`` is the id to predict after
``tokens[b, :t+1]``. Targets are :data:`IGNORE_INDEX` (-100) on prompt ids and on padding, so only the answer
and its closing ``</s>`` are learned. No BOS is added (rinna's prompts are encoded without special tokens).
Every array is C-contiguous int32 of shape ``[rows, seq_len]``. Packed rows (``pack=True``) hold several
examples each and come with ``doc_ids`` (``Rows.doc_ids``), which ``Model.loss(tokens, targets, doc_ids=)``
takes so that each example attends only to itself and its positions start at 0.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from .._core import IGNORE_INDEX
from .dolly import Record, as_record
from .rows import Rows, pack_rows
from .tokenizer import NEWLINE_PIECE, Tokenizer, to_nl

STYLES = ("rinna", "alpaca", "chat")

_ALPACA_HEAD_INPUT = ("以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。"
                      "要求を適切に満たす応答を書きなさい。")
_ALPACA_HEAD = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"


# -- prompt formats --------------------------------------------------------------

def format_prompt(record: Record | dict, style: str = "rinna", tokenizer=None) -> str:
    """The prompt text that precedes the answer.

    rinna: ``ユーザー: {instruction}<NL>{input}<NL>システム: `` (the input line is left out when empty);
    alpaca: the alpaca-ja preamble, ``### 指示:``, ``### 入力:`` (when there is input) and ``### 回答:``;
    chat: the tokenizer's own chat template (``tokenizer_config.json``) with one user message, the instruction
    and then the input after a blank line, and the generation prompt (needs ``tokenizer``).
    A dict needs only ``instruction`` (and optionally ``input``) here.
    """
    r = as_record(record, require_output=False)
    if style == "rinna":
        parts = [f"ユーザー: {to_nl(r.instruction)}"]
        if r.input.strip():
            parts.append(to_nl(r.input))
        return NEWLINE_PIECE.join(parts) + NEWLINE_PIECE + "システム: "
    if style == "alpaca":
        if r.input.strip():
            return (f"{_ALPACA_HEAD_INPUT}\n\n### 指示:\n{r.instruction}\n\n### 入力:\n{r.input}\n\n"
                    f"### 回答:\n")
        return f"{_ALPACA_HEAD}\n\n### 指示:\n{r.instruction}\n\n### 回答:\n"
    if style == "chat":
        return _chat_tokenizer(tokenizer).apply_chat_template(chat_messages(r, answer=False),
                                                              add_generation_prompt=True)
    raise ValueError(f"unknown prompt style {style!r}; choose from {', '.join(STYLES)}")


def chat_messages(r: Record, answer: bool = True) -> list[dict]:
    """A record as a one-turn conversation: the user's message, then (with ``answer``) the assistant's."""
    user = r.instruction + (f"\n\n{r.input}" if r.input.strip() else "")
    messages = [{"role": "user", "content": user}]
    if answer:
        messages.append({"role": "assistant", "content": r.output})
    return messages


def _chat_tokenizer(tokenizer):
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        source = getattr(tokenizer, "source", "the tokenizer")
        raise ValueError(f"style 'chat' needs a tokenizer with a chat template (tokenizer_config.json's "
                         f"'chat_template'); {source} has none")
    return tokenizer


def format_example(record: Record | dict, style: str = "rinna", tokenizer=None) -> tuple[str, str]:
    """(prompt, answer) texts; the full training text is ``prompt + answer`` followed by ``</s>``. With the chat
    style the answer is what the template writes after the prompt (the reply and its end-of-turn marker)."""
    r = as_record(record)
    prompt = format_prompt(r, style, tokenizer)
    if style != "chat":
        return prompt, r.output
    full = tokenizer.apply_chat_template(chat_messages(r))
    if not full.startswith(prompt):
        raise ValueError(f"{tokenizer.source}: the chat template does not render the conversation as the prompt "
                         "followed by the answer; the chat style cannot split it")
    return prompt, full[len(prompt):].rstrip()


# -- encoded examples --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Example:
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]   # the answer followed by </s> (unless truncated away)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def encode_example(record: Record | dict, tokenizer: Tokenizer, style: str = "rinna") -> Example:
    """Prompt encoded without special tokens; answer encoded and terminated by ``</s>``."""
    prompt, answer = format_example(record, style, tokenizer)
    if style == "chat":   # the template closes the turn itself; eos is added only when it does not
        ids = tokenizer.encode(answer)
        if not ids or ids[-1] != tokenizer.eos_id:
            ids.append(tokenizer._require("eos"))
        return Example(tuple(tokenizer.encode_prompt(prompt)), tuple(ids))
    return Example(tuple(tokenizer.encode_prompt(prompt)), tuple(tokenizer.encode_answer(answer)))


def truncate_example(ex: Example, max_ids: int, min_prompt_tokens: int | None = None) -> Example:
    """Fit an example into ``max_ids`` ids (``seq_len + 1``), keeping the start of the answer.

    The prompt is guaranteed ``min_prompt_tokens`` ids (default ``max_ids // 2``, at least 1, or all of a shorter
    prompt); the answer keeps as much of its start as the rest allows; the prompt then fills what is left
    from its *end* (where the answer cue such as ``システム: `` is). So a long context is cut before a short
    answer is, and a long answer loses its tail (and its ``</s>``).
    """
    if max_ids < 2:
        raise ValueError(f"max_ids must be at least 2, got {max_ids}")
    p, a = len(ex.prompt_ids), len(ex.answer_ids)
    if p + a <= max_ids:
        return ex
    floor = max_ids // 2 if min_prompt_tokens is None else min_prompt_tokens
    floor = min(max(floor, 1), max_ids - 1, p)
    keep_answer = min(a, max_ids - floor)
    keep_prompt = min(p, max_ids - keep_answer)
    return Example(ex.prompt_ids[p - keep_prompt:], ex.answer_ids[:keep_answer])


# -- fixed-shape arrays ------------------------------------------------------------------

def _rows_to_arrays(rows: list[tuple[list[int], list[bool]]], seq_len: int, pad_id: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of up to seq_len+1 ids with per-id 'is target' flags → (tokens, targets), right-padded."""
    pad_id = pad_id if pad_id >= 0 else 0
    ids = np.full((len(rows), seq_len + 1), pad_id, dtype=np.int32)
    flags = np.zeros((len(rows), seq_len + 1), dtype=bool)
    for i, (row_ids, row_flags) in enumerate(rows):
        ids[i, : len(row_ids)] = row_ids
        flags[i, : len(row_flags)] = row_flags
    tokens = np.ascontiguousarray(ids[:, :-1])
    targets = np.where(flags[:, 1:], ids[:, 1:], IGNORE_INDEX).astype(np.int32)
    return tokens, np.ascontiguousarray(targets)


def examples_to_arrays(examples: Sequence[Example], seq_len: int, pad_id: int, *, pack: bool = False,
                       seed: int = 0, min_prompt_tokens: int | None = None) -> Rows:
    """One example per row (``pack=False``, input order), or examples packed into rows in a seed-shuffled order
    (``pack=True``: next-fit, an example never spans two rows; :func:`gozaru.data.rows.pack_rows`). Targets are
    -100 on prompts and padding.

    Packed rows carry ``doc_ids`` (0, 1, 2, ... per example in a row, -1 on padding), and each example holds its
    own tokens and targets (``ids[:-1]`` and ``ids[1:]``: its last token predicts nothing, not the next
    example's first). Given to ``Model.loss(..., doc_ids=rows.doc_ids)`` (the Trainer passes them), every
    example attends only to itself with positions from 0, so its loss and gradients are the ones it has in a row
    of its own, and padding costs less compute. Packing is off by default (``TrainConfig.pack`` / ``--pack``
    turn it on for training)."""
    max_ids = seq_len + 1
    fitted = [truncate_example(ex, max_ids, min_prompt_tokens) for ex in examples]
    n_truncated = sum(f is not ex for f, ex in zip(fitted, examples))
    rows: list[tuple[list[int], list[bool]]] = []
    for ex in fitted:
        rows.append((list(ex.prompt_ids) + list(ex.answer_ids),
                     [False] * len(ex.prompt_ids) + [True] * len(ex.answer_ids)))
    tokens, targets = _rows_to_arrays(rows, seq_len, pad_id)
    out = Rows(tokens, targets, n_examples=len(examples), n_truncated=n_truncated)
    return pack_rows(out, seed=seed, pad_id=max(pad_id, 0)) if pack else out


def sft_arrays(records: Iterable[Record | dict], tokenizer: Tokenizer, seq_len: int, *, style: str = "rinna",
               pack: bool = False, seed: int = 0, min_prompt_tokens: int | None = None) -> Rows:
    """Records → response-only SFT arrays (see the module docstring for the convention)."""
    examples = [encode_example(r, tokenizer, style) for r in records]
    return examples_to_arrays(examples, seq_len, tokenizer.pad_id, pack=pack, seed=seed,
                              min_prompt_tokens=min_prompt_tokens)


def lm_arrays(texts: Iterable[str], tokenizer: Tokenizer, seq_len: int, *, add_eos: bool = True) -> Rows:
    """Plain language-model arrays for pretraining: all texts (each followed by ``</s>``) form one stream cut
    into rows of ``seq_len + 1`` ids that overlap by one, so every id but the first is a target exactly once."""
    stream: list[int] = []
    n = 0
    for t in texts:
        stream.extend(tokenizer.encode(t, add_eos=add_eos))
        n += 1
    rows = []
    for start in range(0, max(len(stream) - 1, 0), seq_len):
        chunk = stream[start: start + seq_len + 1]
        rows.append((chunk, [True] * len(chunk)))
    tokens, targets = _rows_to_arrays(rows, seq_len, tokenizer.pad_id)
    return Rows(tokens, targets, n_examples=n)


# -- generation inputs ---------------------------------------------------------------------

@dataclasses.dataclass
class GenerationSet:
    """Prompt ids for ``Model.generate`` and the reference answers, aligned with ``records``."""
    prompts: list[list[int]]
    references: list[str]
    records: list[Record]
    style: str = "rinna"

    def __len__(self) -> int:
        return len(self.prompts)


def generation_set(records: Iterable[Record | dict], tokenizer: Tokenizer, *, style: str = "rinna",
                   max_prompt_tokens: int | None = None) -> GenerationSet:
    """Prompts (encoded without special tokens, ending with the answer cue) and reference answers.

    ``max_prompt_tokens`` keeps only the end of longer prompts, like :func:`truncate_example` does.
    Decode the generated ids with ``tokenizer.decode_answer`` and measure with ``gozaru_rate``.
    """
    recs = [as_record(r, require_output=False) for r in records]
    prompts = []
    for r in recs:
        ids = tokenizer.encode_prompt(format_prompt(r, style, tokenizer))
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            ids = ids[len(ids) - max_prompt_tokens:]
        prompts.append(ids)
    return GenerationSet(prompts, [r.output for r in recs], recs, style)
