"""One run of a study, where it executes (this process or a Ray worker): trains one cell at one seed and one
learning rate, measures adoption every ``curve_every`` steps (the learning curve), and at the end every measure
per held-out prompt or item. It writes ``runs/<slug>.json`` atomically and last, so a study killed at any
moment is continued by rerunning it: a run with a record is never trained again.

A sweep run trains on all but the last ``sweep_validation`` share of the training rows and records the
validation loss of the held-back rows (the criterion of the tuned learning rate)."""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import time

import numpy as np

from ... import _core
from ...data import rewrite
from ...fileio import read_json, write_json_atomic
from ..evaluate import EvalConfig, eval_loss
from ..generate import generate_text
from ..task import _resolve_base
from ..train import DivergedError, TrainConfig, Trainer
from .measures import adoption_suppression, sampled_counts


@dataclasses.dataclass
class StudyRun:
    """What one task needs besides the base model and the data."""
    condition: dict          # experiment.Condition fields
    meta: dict               # the cell, seed, lr, policies: copied into the record
    train: TrainConfig
    eval: EvalConfig
    path: str                # the record's path
    samples: int = 4
    curve_every: int = 10
    validation: int = 0      # > 0: a sweep run, holding back this many training rows
    threads: int | None = None
    backend: str = "cpu"


def study_task(run: StudyRun, base, data) -> dict:
    """Trains and measures one run (see the module docstring); returns its record."""
    from ..experiment import Condition
    t0 = time.perf_counter()
    if run.threads:
        _core.set_num_threads(run.threads)
    base = _resolve_base(base, run.backend)
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            data = pickle.load(f)
    cond = Condition.from_dict(run.condition)
    model = cond.model_for(base, cond.select(base.config))
    config = dataclasses.replace(run.train, progress=False, checkpoint_every=0, **cond.hparams)
    rows = data.train
    if run.validation:
        n = len(rows)
        rows, held = rows.take(slice(0, n - run.validation)), rows.take(slice(n - run.validation, n))
    curve = []

    def on_step(trainer, record):
        if not run.validation and (trainer.step % run.curve_every == 0 or trainer.step == config.steps):
            curve.append({"step": trainer.step,
                          "adoption": float(adoption_suppression(trainer.model, data.style)[0].mean())})

    trainer = Trainer(model, rows, config, save_at_end=False, on_step=on_step)
    diverged = False
    try:
        trainer.fit()
    except DivergedError:
        diverged = True
    record = {"meta": run.meta, "condition": run.condition, "train_config": trainer.config.to_dict(),
              "diverged": diverged, "steps": trainer.step,
              "train_loss": float(np.mean([h["loss"] for h in trainer.history[-10:]])) if trainer.history else None,
              "train_seconds": sum(h.get("seconds", 0.0) for h in trainer.history),
              "trainable_params": int(trainer.model.num_trainable())}
    if run.validation:
        loss = eval_loss(trainer.model, held) if not diverged else math.inf
        record["val_loss"] = loss if math.isfinite(loss) else None
    else:
        record.update(measure(trainer.model, data, run.eval, run.samples))
        record["curve"] = curve
    record["seconds"] = time.perf_counter() - t0
    write_json_atomic(run.path, record)
    return record


def measure(model, data, eval_config: EvalConfig, samples: int) -> dict:
    """Per prompt (greedy outcome, sampled hits), per item (adoption, suppression) and the two losses."""
    answers = generate_text(model, data.tokenizer, data.prompts, **eval_config.generation())
    sampled = sampled_counts(model, data.tokenizer, data.prompts, samples=samples,
                             max_new_tokens=eval_config.max_new_tokens, batch_size=eval_config.batch_size,
                             seed=eval_config.seed)
    adoption, suppression = adoption_suppression(model, data.style)
    return {"greedy": [int(rewrite.GOZARU in a) for a in answers], "sampled": [int(x) for x in sampled],
            "samples": samples, "adoption": [round(float(x), 6) for x in adoption],
            "suppression": [round(float(x), 4) for x in suppression],
            "eval_loss": eval_loss(model, data.eval) if data.eval is not None else None,
            "orig_loss": eval_loss(model, data.original) if data.original is not None else None,
            "answers": answers}


def load_record(path: str, meta: dict) -> dict | None:
    """The finished record at ``path``, or None; a record of another definition is refused."""
    if not os.path.exists(path):
        return None
    record = read_json(path)
    if record.get("meta", {}).get("name") != meta["name"] or record.get("meta", {}).get("lr") != meta["lr"]:
        raise ValueError(f"{path} holds another run ({record.get('meta', {}).get('name')!r}); pick another --out")
    return record
