"""Measurements of a fine-tuned model: ござる-rate with a Wilson 95 % CI on generated answers, eval loss on
held-out answers, forgetting on plain text, fact recall, and how far each tensor moved from the base."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from .._core import IGNORE_INDEX
from ..data import rewrite
from ..data.rows import as_rows
from ..engine import lora
from ..engine.config import TENSOR_KINDS, GPTNeoXConfig
from .generate import generate_text
from .study.measures import adoption_suppression, sampled_counts


def tensor_cells(config: GPTNeoXConfig) -> dict[str, tuple[str, str]]:
    """Heatmap cell (row, column) of every tensor, from the core's tensor table: rows are ``embed``, the layer
    index as text, ``top`` (final norm and head); columns are the core's tensor kinds (``TENSOR_KINDS``)."""
    L = config.num_hidden_layers
    return {t.name: ("embed" if t.layer < 0 else str(t.layer) if t.layer < L else "top", t.kind)
            for t in config.tensors()}


# --------------------------------------------------------------------------- the ござる-rate
def rate_of_texts(texts: Sequence[str]):
    """The ござる-rate of given answers as ``gozaru.data.gozaru_rate`` counts it (any answer containing ござる),
    with its Wilson 95 % interval: a ``GozaruRate`` (rate, low, high, k, n, ending_rate)."""
    return rewrite.gozaru_rate(list(texts))


def generated_rate(model, tokenizer, prompts: Sequence[str], **generation):
    """Generates answers to held-out prompts (greedy unless told otherwise) and measures their ござる-rate:
    ``(GozaruRate, answers)``."""
    answers = generate_text(model, tokenizer, prompts, **generation)
    return rate_of_texts(answers), answers


# --------------------------------------------------------------------------- losses
def eval_loss(model, data, batch_size: int = 32) -> float:
    """Mean cross-entropy per counted target token over all rows (answers only for SFT rows; packed rows with their
    ``doc_ids``)."""
    rows = as_rows(data)
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        tok, tgt, docs = rows.batch(start, start + batch_size)
        n = int((tgt != IGNORE_INDEX).sum())
        if n:
            total += model.loss(tok, tgt, keep_activations=False, doc_ids=docs) * n
            count += n
    return total / count if count else float("nan")


def forgetting(loss_before: float, loss_after: float) -> float:
    """How much worse the model got on plain (non-ござる) text: loss after minus loss before fine-tuning."""
    return loss_after - loss_before


# --------------------------------------------------------------------------- facts
def fact_recall(model, tokenizer, questions: Iterable, **generation) -> tuple[float, list[str]]:
    """Share of fact questions whose generated answer contains the expected answer.

    ``questions``: ``(prompt, answer)`` pairs, or objects/dicts with prompt (or question) and answer fields."""
    pairs = [_question_pair(q) for q in questions]
    if not pairs:
        return float("nan"), []
    answers = generate_text(model, tokenizer, [p for p, _ in pairs], **generation)
    hits = sum(expected in got for (_, expected), got in zip(pairs, answers))
    return hits / len(pairs), answers


def _question_pair(q) -> tuple[str, str]:
    if isinstance(q, (tuple, list)):
        return str(q[0]), str(q[1])
    get = q.get if isinstance(q, dict) else (lambda k, d=None: getattr(q, k, d))
    prompt = get("prompt") or get("question") or get("instruction")
    answer = get("answer") or get("expected")
    if prompt is None or answer is None:
        raise TypeError(f"fact question {q!r} has no prompt/answer")
    return str(prompt), str(answer)


# --------------------------------------------------------------------------- weight motion
def weight_change(base, model):
    """Per-tensor ‖ΔW‖ and ‖W_base‖ and their ratio, with the heatmap row/kind of each tensor (a DataFrame).
    A model with LoRA adapters is compared through its merged weights (W + s B A), like a full-weight run."""
    import pandas as pd
    trainable = set(model.trainable_names())
    if model.lora:  # an adapted weight counts as trained
        trainable = {s.target for s in model.lora} | {n for n in trainable if n in base.params}
        model = lora.merge(model)
    for m in (base, model):
        m.sync_to_host()  # device backends: the views must hold the latest weights
    cells = tensor_cells(model.config)
    records = []
    for name in model.names:
        w0 = np.asarray(base.params[name], dtype=np.float64)
        w1 = np.asarray(model.params[name], dtype=np.float64)
        delta = float(np.linalg.norm(w1 - w0))
        norm = float(np.linalg.norm(w0))
        records.append({"name": name, "row": cells[name][0], "kind": cells[name][1], "numel": w0.size,
                        "trainable": name in trainable, "base_norm": norm, "delta_norm": delta,
                        "rel_change": delta / norm if norm > 0 else float("nan")})
    return pd.DataFrame.from_records(records)


def change_grid(frame, value: str = "rel_change"):
    """Heatmap table (rows: embed, 0..L-1, top; columns: the core's tensor kinds ``TENSOR_KINDS``).

    ``rel_change`` combines weights and biases of a cell as sqrt(Σ‖ΔW‖²)/sqrt(Σ‖W‖²); any other column (e.g.
    ``grad_norm``) combines as the root of the sum of squares. Cells without tensors are NaN."""
    import pandas as pd
    frame = pd.DataFrame(frame)
    if value == "rel_change":
        sq = frame.assign(d2=frame["delta_norm"] ** 2, b2=frame["base_norm"] ** 2)
        cells = sq.groupby(["row", "kind"])[["d2", "b2"]].sum()
        series = np.sqrt(cells["d2"]) / np.sqrt(cells["b2"]).replace(0.0, np.nan)
    else:
        series = np.sqrt((frame[value] ** 2).groupby([frame["row"], frame["kind"]]).sum(min_count=1))
    table = series.unstack("kind")
    layers = sorted((r for r in table.index if r.isdigit()), key=int)
    rows = [r for r in ["embed", *layers, "top"] if r in table.index]
    return table.reindex(index=rows, columns=list(TENSOR_KINDS))


# --------------------------------------------------------------------------- everything at once
@dataclasses.dataclass
class EvalConfig:
    max_new_tokens: int = 48
    batch_size: int = 32        # prompts per generate call and rows per loss batch
    temperature: float = 0.0    # greedy by default: the rate then measures what the model prefers
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    samples: int = 0            # answers sampled at T = 1 per prompt for the sampled ござる-rate (0 = not measured)

    def generation(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size,
                "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p, "seed": self.seed}


def evaluate(model, data, config: EvalConfig | None = None, *, plain_loss_before: float | None = None,
             orig_loss_before: float | None = None) -> dict:
    """All scalar measurements for one model on experiment data (see ``gozaru.experiment.ExperimentData``).

    ``forgetting`` is the increase of the loss on the original (polite) held-out answers when the data hold them
    and ``orig_loss_before`` (the base's) is given, else on plain prose; ``plain_forgetting`` is always the latter.
    Returns a flat dict (one results-table row) plus ``answers``, ``fact_answers`` and per-item lists."""
    config = config or EvalConfig()
    rate, answers = generated_rate(model, data.tokenizer, data.prompts, **config.generation())
    row = {"gozaru_rate": rate.rate, "rate_low": rate.low, "rate_high": rate.high, "n_prompts": rate.n,
           "ends_rate": rate.ending_rate}
    row["eval_loss"] = eval_loss(model, data.eval, config.batch_size) if data.eval is not None else float("nan")
    plain = eval_loss(model, data.plain, config.batch_size) if data.plain is not None else float("nan")
    row["plain_loss"] = plain
    row["plain_forgetting"] = forgetting(plain_loss_before, plain) if plain_loss_before is not None else \
        (0.0 if plain == plain else float("nan"))   # the base forgets nothing; without plain text: not measured
    original = getattr(data, "original", None)
    orig = eval_loss(model, original, config.batch_size) if original is not None else float("nan")
    row["orig_loss"] = orig
    if orig == orig:   # the default: forgetting of the very answers the style rewrites
        before = orig if orig_loss_before is None and plain_loss_before is None else orig_loss_before
        row["forgetting"] = forgetting(before, orig) if before is not None else float("nan")
    else:
        row["forgetting"] = row["plain_forgetting"]
    items = getattr(data, "style", None)
    if items is not None and len(items):
        adoption, suppression = adoption_suppression(model, items, config.batch_size)
        row["adoption"] = float(adoption.mean())
        row["suppression"] = float(suppression.mean())
        row["adoption_items"] = [float(x) for x in adoption]
    if config.samples:
        counts = sampled_counts(model, data.tokenizer, data.prompts, samples=config.samples,
                                max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, seed=config.seed)
        row["sampled_rate"] = float(counts.mean() / config.samples)
    recall, fact_answers = fact_recall(model, data.tokenizer, data.facts or [], **config.generation())
    row["fact_recall"] = recall
    row["answers"] = answers
    row["fact_answers"] = fact_answers
    return row
