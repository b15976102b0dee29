"""The run record: what a checkpoint of a training run stores beside its weights, written and read only here.

It travels in the checkpoint's ``extra`` payload as versioned JSON: the training settings, where the data stream
stands (seed and cursor, so a resume continues the same order bit-exactly), the loss history and gradient-norm
sums, the placement the model computed with (backend, precision, engine threads) and — for experiment runs — the
condition and the trained tensor names.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..fileio import json_payload

RECORD_KIND = "gozaru.run"
RECORD_VERSION = 1


@dataclasses.dataclass
class RunRecord:
    train_config: dict                  # TrainConfig.to_dict()
    n_rows: int                         # training rows the cursor counts over
    cursor: int = 0                     # examples consumed from the data stream
    history: list = dataclasses.field(default_factory=list)
    eval_history: list = dataclasses.field(default_factory=list)
    grad_norm_sums: dict = dataclasses.field(default_factory=dict)
    grad_norm_steps: int = 0
    condition: dict | None = None       # experiment runs: Condition.to_dict()
    trainable: list | None = None       # experiment runs: the tensors trained
    placement: dict | None = None       # Placement.to_dict() of the model trained: backend, precision, threads

    @property
    def data_seed(self) -> int:
        return int(self.train_config.get("seed", 0))

    def mean_grad_norms(self) -> dict[str, float]:
        n = max(self.grad_norm_steps, 1)
        return {k: v / n for k, v in self.grad_norm_sums.items()}

    def to_bytes(self) -> bytes:
        body = {"kind": RECORD_KIND, "version": RECORD_VERSION, **dataclasses.asdict(self)}
        return json.dumps(body).encode()

    @classmethod
    def from_payload(cls, value: Any, source: str) -> "RunRecord | None":
        """The record in a checkpoint's ``extra`` payload; None when the checkpoint has none (not a training run).
        ValueError naming ``source`` when it is of another kind or version, or malformed."""
        try:
            body = json_payload(value)
        except (UnicodeDecodeError, ValueError, TypeError):
            raise ValueError(f"{source}: the run record is not valid JSON") from None
        if not body:
            return None
        if body.get("kind") != RECORD_KIND:
            return None
        if body.get("version") != RECORD_VERSION:
            raise ValueError(f"{source}: run record version {body.get('version')!r} is not supported "
                             f"(this gozaru reads version {RECORD_VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in body.items() if k in names})
        except TypeError as e:
            raise ValueError(f"{source}: malformed run record ({e})") from None
