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
from typing import Any

import numpy as np

from ...data import rewrite
from ...engine.placement import Placement
from ...fileio import read_json, write_json_atomic
from ..evaluate import EvalConfig, eval_loss
from ..generate import generate_text
from ..source import BaseSource
from ..tracking import numbers
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
    placement: Placement = dataclasses.field(default_factory=Placement)  # backend, precision, engine threads
    tracker: Any = None      # a gozaru.lab.tracking.Tracker: one tracked run per study run


def study_task(run: StudyRun, base, data) -> dict:
    """Trains and measures one run (see the module docstring); returns its record. ``base``: what
    ``BaseSource.ship`` sent, placed as ``run.placement`` says."""
    from ..experiment import Condition
    t0 = time.perf_counter()
    base = BaseSource.of(base).load(run.placement)
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
    tracked = run.tracker.start(run.meta["name"], {"meta": run.meta, "condition": run.condition,
                                                   "train": config.to_dict()}) if run.tracker else None

    def on_step(trainer, record):
        if tracked:
            tracked.on_step(trainer, record)
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
              "trainable_params": int(trainer.model.num_trainable()), "placement": trainer.model.placement.to_dict()}
    if run.validation:
        loss = eval_loss(trainer.model, held) if not diverged else math.inf
        record["val_loss"] = loss if math.isfinite(loss) else None
    else:
        record.update(measure(trainer.model, data, run.eval, run.samples))
        record["curve"] = curve
    record["seconds"] = time.perf_counter() - t0
    if tracked:   # the run's measures (means over prompts and items, losses) close its tracked run
        tracked.on_eval(numbers({**record, **_means(record)}), trainer.step)
        tracked.on_end(trainer)
    write_json_atomic(run.path, record)
    return record


def _means(record: dict) -> dict:
    """The per-prompt and per-item lists of a record as means (``sampled`` as a rate), for a tracker."""
    means = {k: float(np.mean(record[k])) for k in ("adoption", "suppression", "greedy", "sampled")
             if record.get(k)}
    if "sampled" in means:
        means["sampled"] /= record["samples"]
    return means


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
