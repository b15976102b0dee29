"""Data for the ござる experiment in one place.

This module gathers the pieces (each lives in its own module) and adds dataset-level helpers:

* dolly-ja records and loaders: :class:`Record`, :func:`load_dolly`, :func:`save_jsonl`, :class:`DataError`
  (``gozaru.data.dolly``);
* the ござる style: :func:`to_gozaru`, :func:`gozaru_rate`, :func:`wilson_interval` (``gozaru.data.rewrite``) and
  :func:`to_gozaru_dataset` here;
* the offline corpus: :class:`SyntheticCorpus` (``gozaru.data.synthetic``);
* SFT formats, masks and packing: :func:`format_prompt`, :func:`sft_arrays`, :func:`lm_arrays`,
  :func:`generation_set` (``gozaru.data.sft``);
* fixed-shape rows, their packing and their order: :class:`Rows`, :func:`as_rows`, :func:`pack_rows`,
  :func:`rows_at`, :func:`iterate_batches` (``gozaru.data.rows``);
* tokenizers: :class:`Tokenizer` (SentencePiece), :class:`HFTokenizer` (``tokenizer.json``) and
  :func:`load_tokenizer`, which picks one for a path (``gozaru.data.tokenizer``);
* :func:`train_eval_split` here.
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence, TypeVar

from .dolly import DataError, LoadedRecords, Record, Skipped, as_record, load_dolly, save_jsonl
from .rewrite import GozaruRate, ends_in_gozaru, gozaru_rate, to_gozaru, wilson_interval
from .._core import IGNORE_INDEX
from .rows import Rows, as_rows, epoch_order, iterate_batches, num_batches, pack_rows, rows_at, trim_columns
from .sft import (STYLES, Example, GenerationSet, encode_example, examples_to_arrays, format_example, format_prompt,
                  generation_set, lm_arrays, sft_arrays, truncate_example)
from .synthetic import CATEGORIES, Fact, FactQuestion, SyntheticCorpus
from .hf_tokenizer import HFTokenizer
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "CATEGORIES", "DataError", "Example", "Fact", "FactQuestion", "GenerationSet", "GozaruRate", "IGNORE_INDEX",
    "LoadedRecords", "Record", "STYLES", "Skipped", "SyntheticCorpus", "Rows", "as_rows", "epoch_order", "rows_at",
    "trim_columns", "pack_rows", "as_record",
    "encode_example", "ends_in_gozaru", "examples_to_arrays", "format_example", "format_prompt",
    "generation_set", "gozaru_rate", "iterate_batches", "lm_arrays", "load_dolly", "num_batches", "save_jsonl",
    "HFTokenizer", "Tokenizer", "load_tokenizer", "sft_arrays", "to_gozaru", "to_gozaru_dataset", "train_eval_split",
    "truncate_example", "wilson_interval",
]

T = TypeVar("T")


def to_gozaru_dataset(records: Iterable[Record | dict], *, drop_unchanged: bool = False) -> list[Record]:
    """Rewrite every record's ``output`` with :func:`to_gozaru` (instruction and input stay as they are).

    ``drop_unchanged=True`` leaves out records whose output had no polite ending to rewrite, so every
    remaining answer is in ござる style.
    """
    out = []
    for r in records:
        rec = as_record(r)
        new = to_gozaru(rec.output)
        if drop_unchanged and new == rec.output:
            continue
        out.append(rec.replace(output=new))
    return out


def train_eval_split(items: Sequence[T], eval_fraction: float = 0.1, seed: int = 0) -> tuple[list[T], list[T]]:
    """Split into (train, eval) by a seeded permutation; both keep the input order.

    The eval part has ``round(eval_fraction * n)`` items (at least 1 when ``0 < eval_fraction`` and n > 1).
    The same items, fraction and seed always give the same split.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n = len(items)
    n_eval = round(eval_fraction * n)
    if eval_fraction > 0 and n > 1:
        n_eval = max(1, n_eval)
    order = list(range(n))
    random.Random(f"split-{seed}").shuffle(order)
    eval_idx = set(order[:n_eval])
    train = [x for i, x in enumerate(items) if i not in eval_idx]
    evals = [x for i, x in enumerate(items) if i in eval_idx]
    return train, evals
