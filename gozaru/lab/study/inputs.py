"""What a study measures on: the ござる-rewritten data with the held-out originals and ending items, and the
prompt-only floor (the untrained base with a few ござる examples in its prompt)."""
from __future__ import annotations

import os

from ...data import rewrite
from ...data.dolly import as_record
from ...data.sft import format_example, sft_arrays
from ...fileio import read_json, write_json_atomic
from ..evaluate import EvalConfig, rate_of_texts
from ..experiment_data import ExperimentData
from ..generate import generate_text
from .measures import style_items


def study_data(tokenizer, train_records, held_records, *, seq_len: int, max_positions: int, style: str = "rinna",
               plain_texts=None, facts=None, n_prompts: int | None = None, log=print):
    """(ExperimentData, ござる training records) from records in the plain polite form: the answers are rewritten
    to ござる (records without a polite ending are left out); the held-out originals measure forgetting, and their
    first rewritten sentence end gives the adoption and suppression items."""
    train = [r for r in (as_record(x) for x in train_records) if rewrite.to_gozaru(r.output) != r.output]
    held = [r for r in (as_record(x) for x in held_records) if rewrite.to_gozaru(r.output) != r.output]
    if not train or not held:
        raise ValueError("no record has a polite ending to rewrite: the study needs polite (です/ます) answers")
    goz_train = [r.replace(output=rewrite.to_gozaru(r.output)) for r in train]
    goz_held = [r.replace(output=rewrite.to_gozaru(r.output)) for r in held]
    data = ExperimentData.from_records(tokenizer, goz_train, goz_held, seq_len=seq_len, style=style,
                                       plain_texts=plain_texts, facts=facts, n_prompts=n_prompts)
    data.original = sft_arrays(held, tokenizer, seq_len, style=style)
    data.style = style_items(tokenizer, held, style=style, max_len=max_positions)
    if data.style.dropped:
        data.dropped["ending items"] = data.style.dropped
    for kind, n in data.dropped.items():
        log(f"{kind}: {n}")
    return data, goz_train


def prompt_floor(base, data: ExperimentData, examples, shots: int, eval_config: EvalConfig, out: str) -> dict:
    """The base model, untrained, with ``shots`` ござる examples (prompt + answer) before each held-out prompt:
    what the prompt alone achieves (greedy). Cached in ``out/floor.json``."""
    path = os.path.join(out, "floor.json")
    if os.path.exists(path):
        saved = read_json(path)
        if saved.get("shots") == shots and saved.get("n") == len(data.prompts):
            return saved
    examples = sorted(examples, key=lambda r: len(r.output))[:shots]   # the shortest, to leave room
    context = "".join(p + a + "<NL>" for p, a in (format_example(r) for r in examples))
    limit = base.config.max_position_embeddings - 1
    tok = data.tokenizer
    prompts = [context + p if len(tok.encode(context + p)) < limit - 4 else p for p in data.prompts]
    answers = generate_text(base, tok, prompts, **eval_config.generation())
    rate = rate_of_texts(answers)
    result = {"shots": shots, "n": len(prompts), "rate": rate.rate, "low": rate.low, "high": rate.high,
              "k": rate.k, "with_context": sum(p != q for p, q in zip(prompts, data.prompts)),
              "outcomes": [int(rewrite.GOZARU in a) for a in answers], "answers": answers}
    write_json_atomic(path, result)
    return result
