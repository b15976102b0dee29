"""What an experiment trains and measures on: training rows in the target style, held-out rows and prompts,
plain prose, fact questions, and the counts of what did not fit the model."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from .. import data as gzdata
from ..data.rows import Rows, as_rows
from .generate import encode_prompt


@dataclasses.dataclass
class ExperimentData:
    """Everything ``run`` trains and measures on.

    train: SFT rows in the target style (ござる answers), response-only targets; eval: held-out SFT rows (eval
    loss); prompts: held-out prompts in the chat format (generated answers give the ござる-rate); plain: plain-text
    rows (forgetting); facts: ``(prompt, expected answer)`` pairs (fact recall)."""
    tokenizer: Any
    train: Rows | None
    prompts: list[str]
    eval: Rows | None = None
    plain: Rows | None = None
    facts: list = dataclasses.field(default_factory=list)
    original: Rows | None = None    # held-out answers before the rewrite: their loss rising is forgetting
    style: Any = None               # gozaru.lab.study.measures.StyleItems: adoption and suppression
    dropped: dict = dataclasses.field(default_factory=dict)   # what did not fit, by kind (counts)

    def __post_init__(self):
        self.train = as_rows(self.train) if self.train is not None else None
        self.eval = as_rows(self.eval) if self.eval is not None else None
        self.plain = as_rows(self.plain) if self.plain is not None else None
        self.original = as_rows(self.original) if self.original is not None else None
        self.prompts = list(self.prompts)
        self.dropped = dict(self.dropped)

    def drop_long(self, max_positions: int, log: Callable[[str], None] | None = None) -> "ExperimentData":
        """Leaves out prompts (and fact questions) that leave no room to answer within ``max_positions``,
        counting them in ``dropped``; an over-long prompt of real data must not stop a whole grid."""
        def fits(text: str) -> bool:
            return len(encode_prompt(self.tokenizer, text)) < max_positions

        kept = [p for p in self.prompts if fits(p)]
        facts = [f for f in self.facts if fits(f[0])]
        for kind, before, after in (("prompts", self.prompts, kept), ("fact prompts", self.facts, facts)):
            if len(after) < len(before):
                self.dropped[kind] = self.dropped.get(kind, 0) + len(before) - len(after)
                if log:
                    log(f"left out {len(before) - len(after)} of {len(before)} held-out {kind}: longer than "
                        f"the model's {max_positions} positions")
        self.prompts, self.facts = kept, facts
        return self

    @classmethod
    def from_records(cls, tokenizer, train_records, eval_records, *, seq_len: int = 256, style: str = "rinna",
                     plain_texts: Sequence[str] | None = None, facts: Sequence | None = None,
                     n_prompts: int | None = None) -> "ExperimentData":
        """Builds the arrays from dolly-layout records (answers already in the target style, e.g. through
        ``gozaru.data.to_gozaru_dataset``): train rows, held-out eval rows and prompts from ``eval_records``
        (the first ``n_prompts`` of them), plain-text rows and ``(question, answer)`` facts formatted as prompts."""
        data = gzdata
        eval_records = list(eval_records)
        prompt_records = eval_records[:n_prompts] if n_prompts else eval_records
        plain = data.lm_arrays(plain_texts, tokenizer, seq_len) if plain_texts else None
        fact_prompts = [(data.format_prompt({"instruction": q, "output": a}, style, tokenizer), a)
                        for q, a in (_fact_pair(f) for f in (facts or []))]
        train_records = list(train_records)
        train = data.sft_arrays(train_records, tokenizer, seq_len, style=style) if train_records else None
        evals = data.sft_arrays(eval_records, tokenizer, seq_len, style=style) if eval_records else None
        dropped = {k: v for k, v in (("truncated training records", train.n_truncated if train else 0),
                                     ("truncated held-out records", evals.n_truncated if evals else 0)) if v}
        return cls(tokenizer=tokenizer, train=train, eval=evals,
                   prompts=[data.format_prompt(r, style, tokenizer) for r in prompt_records], plain=plain,
                   facts=fact_prompts,
                   dropped=dropped)


def _fact_pair(f) -> tuple[str, str]:
    """(question, expected answer) from a pair or a ``gozaru.data.FactQuestion``."""
    if isinstance(f, (tuple, list)):
        return str(f[0]), str(f[1])
    return str(f.question), str(f.answer)
