"""One run of a grid, where it executes (this process or a Ray worker): the task ``run_task`` and how the base
model and the data reach it.

A task trains one condition from the base, saves ``<slug>.h5`` and then writes its record ``<slug>.json``, both
atomically, under the runs folder; an attempt killed midway leaves at most ``<slug>.partial.h5`` (resumed by the
next attempt) or ``<slug>.h5`` without a record (evaluated again, not retrained). It never touches results.csv:
that is the driver's (``gozaru.lab.experiment.run``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import time
from typing import Any

from .. import _core
from ..engine import lora
from ..engine.checkpoint import load
from ..engine.model import Model
from ..fileio import atomic_writer, write_json_atomic
from .evaluate import EvalConfig, evaluate, weight_change
from .record import RunRecord
from .train import TrainConfig, Trainer

BASE_NAME = "base"


@dataclasses.dataclass
class RunSpec:
    """What one task needs besides the base model and the data (passed beside it, see ``sources``)."""
    condition: Any                     # a Condition; None: the evaluation of the base itself
    train: TrainConfig
    eval: EvalConfig
    runs_dir: str
    plain_before: float | None = None  # the base's plain-text loss (forgetting is measured against it)
    orig_before: float | None = None   # the base's loss on the original (polite) held-out answers
    threads: int | None = None         # engine threads; None keeps the process's setting
    backend: str = "cpu"
    precision: str | None = None       # how the Linear layers compute (a run setting; None: the backend's own)
    progress: bool = False             # the training bar


@dataclasses.dataclass
class BaseArrays:
    """A base model as plain arrays (a Model itself cannot be pickled), for the object store."""
    config: Any
    flat: Any       # every parameter, one float32 array in the engine's layout
    backend: str = "cpu"


def run_task(spec: RunSpec, base, data) -> tuple[dict, float]:
    """One run from start to end (the per-condition task): trains, saves ``<slug>.h5`` then writes the record
    ``<slug>.json``, both atomically, under ``spec.runs_dir``; resumes ``<slug>.partial.h5`` when an earlier
    attempt was killed. ``base``: a Model, a checkpoint path or BaseArrays; ``data``: ExperimentData or the
    path of its pickle. Returns (record, wall seconds)."""
    t0 = time.perf_counter()
    if spec.threads:
        _core.set_num_threads(spec.threads)
    base = _resolve_base(base, spec.backend, spec.precision)
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            data = pickle.load(f)
    if spec.condition is None:
        record = _base_record(base, data, spec.eval, spec.runs_dir)
    else:
        record = _run_condition(spec.condition, base, data, spec.train, spec.eval, spec.runs_dir,
                                spec.plain_before, spec.progress, spec.orig_before)
    return record, time.perf_counter() - t0


def sources(base, data, out, executor, backend):
    """How the base and the data travel to the runs (``executor.transfer``): the objects themselves, files
    under ``out/inputs`` on shared storage (a base path is used where it is), or the object store."""
    if executor.transfer == "memory":
        return _as_model(base, backend), data
    if executor.transfer == "storage":
        inputs = os.path.abspath(os.path.join(out, "inputs"))
        os.makedirs(inputs, exist_ok=True)
        if not isinstance(base, (str, os.PathLike)):
            path = os.path.join(inputs, "base.h5")
            base.save(path)
            base = path
        data_path = os.path.join(inputs, "data.pkl")
        with atomic_writer(data_path, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        return os.path.abspath(os.fspath(base)), data_path
    model = _as_model(base, backend)
    model.sync_to_host()
    return executor.put(BaseArrays(model.config, model.core.flat_params(), model.backend)), executor.put(data)


def _resolve_base(base, backend: str, precision: str | None = None):
    if isinstance(base, BaseArrays):
        model = Model(base.config, seed=None, backend=backend, precision=precision)
        model.core.flat_params()[...] = base.flat
        model.core.params_changed()
        return model
    model = _as_model(base, backend, precision)
    if precision is not None and model.precision != precision:
        model.set_precision(precision)
    return model


def backend_of(base, backend: str | None) -> str:
    return base.backend if isinstance(base, Model) else (backend or "cpu")


def _base_record(base, data, eval_config, runs_dir) -> dict:
    path = os.path.join(runs_dir, BASE_NAME + ".json")
    row = evaluate(base, data, eval_config)
    lists = _lists_of(row)
    row.update(name=BASE_NAME, group="base", position="none", budget=float("nan"), seed=0, trainable_params=0,
               trainable_pct=0.0, steps=0, train_loss=float("nan"), train_seconds=0.0, tokens_seen=0, checkpoint="")
    record = {"row": row, **lists}
    write_json_atomic(path, record)
    return record


def _run_condition(cond, base, data, train_config, eval_config, runs_dir, plain_before, progress,
                   orig_before=None) -> dict:
    final = os.path.join(runs_dir, cond.slug + ".h5")
    partial = os.path.join(runs_dir, cond.slug + ".partial.h5")
    names = cond.select(base.config)
    if not names:
        raise ValueError(f"condition {cond.name!r} selects no tensors")
    if os.path.exists(final):   # trained, but killed before its record was written
        model, _, info = load(final, backend=base.backend, precision=base.precision)
        record = RunRecord.from_payload(info.get("extra"), final)
        if record is None:
            raise ValueError(f"{final}: no run record; delete the file to train condition {cond.name!r} again")
    else:
        config = dataclasses.replace(train_config, progress=progress and train_config.progress,
                                     **train_overrides(cond.hparams))
        common = dict(config=config, checkpoint=partial, eval_data=data.eval, save_at_end=False)
        if os.path.exists(partial):
            trainer = Trainer(None, data.train, resume=partial, backend=base.backend, precision=base.precision,
                              **common)
        else:
            trainer = Trainer(cond.model_for(base, names), data.train, **common)
        trainer.fit()
        model = trainer.model
        record = dataclasses.replace(trainer.run_record(), condition=cond.to_dict(),
                                     trainable=sorted(model.trainable_names()))
        model.save(final, step=trainer.step, tokens_seen=trainer.tokens_seen, extra=record.to_bytes())
        with contextlib.suppress(FileNotFoundError):  # an overlapping attempt of this run may have removed it
            os.remove(partial)
    row = evaluate(model, data, eval_config, plain_loss_before=plain_before, orig_loss_before=orig_before)
    lists = _lists_of(row)
    details = {"condition": record.condition, "history": record.history, "eval_history": record.eval_history,
               "grad_norms": record.mean_grad_norms(), "train_config": record.train_config,
               "trainable": record.trainable}
    history = record.history
    total = base.num_params
    trained = model.num_trainable()
    row.update(name=cond.name, group=cond.group, position=cond.position, budget=cond.budget, seed=cond.seed,
               trainable_params=trained, trainable_pct=100.0 * trained / total, steps=len(history),
               train_loss=_final_loss(history), train_seconds=sum(h.get("seconds", 0.0) for h in history),
               tokens_seen=history[-1]["tokens"] if history else 0, checkpoint=os.path.relpath(final, runs_dir))
    change = weight_change(base, model)  # LoRA: of the merged weights, comparable with full-weight runs
    record = {"row": row, **lists, **details,
              "weight_change": change.to_dict(orient="records")}
    if model.lora:
        record["lora_change"] = lora.weight_change(model)  # ||s B A|| / ||W|| per adapted weight
    write_json_atomic(os.path.join(runs_dir, cond.slug + ".json"), record)
    return record


def _lists_of(row: dict) -> dict:
    """Per-item measurements (answers, per-answer style scores …) leave the table row for the run record."""
    return {k: row.pop(k) for k in [k for k, v in row.items() if isinstance(v, list)]}


def train_overrides(hparams: dict) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(hparams) - names
    if unknown:
        raise ValueError(f"unknown training hyper-parameter(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(sorted(names))}")
    return dict(hparams)


def _final_loss(history: list[dict], window: int = 10) -> float:
    """Mean training loss over the last steps (single steps are noisy)."""
    tail = [h["loss"] for h in history[-window:]]
    return sum(tail) / len(tail) if tail else float("nan")


def _as_model(base, backend: str | None = None, precision: str | None = None):
    if isinstance(base, (str, os.PathLike)):
        return load(os.fspath(base), backend=backend or "cpu", precision=precision)[0]
    return base
