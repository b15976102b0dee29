"""One run of a grid, where it executes (this process or a Ray worker): the task ``run_task`` and how the base
model and the data reach it.

A task trains one condition from the base, saves ``<slug>.h5`` and then writes its record ``<slug>.json``, both
atomically, under the runs folder; an attempt killed midway leaves at most ``partial/<slug>.h5`` (resumed by the
next attempt) or ``<slug>.h5`` without a record (evaluated again, not retrained). Partial checkpoints live in
their own folder, so no condition name reaches another condition's file (``x.partial`` is a name like any
other). Both checkpoints store the condition's definition (its ``to_dict()`` and the training settings that
shape the model); reusing one whose definition differs from the condition's now is refused with one line.
It never touches results.csv: that is the driver's (``gozaru.lab.experiment.run``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import time
from typing import Any

from .. import _core
from ..engine import lora
from ..engine.checkpoint import load
from ..engine.placement import Placement
from ..fileio import atomic_writer, write_json_atomic
from .evaluate import EvalConfig, evaluate, weight_change
from .record import RunRecord
from .source import BaseSource
from .train import TrainConfig, Trainer

BASE_NAME = "base"
PARTIAL_DIR = "partial"  # runs/partial/<slug>.h5: an interrupted run's checkpoint
# training settings that do not change the trained model (a rerun may change them freely)
_NOT_DEFINING = ("progress", "checkpoint_every")


@dataclasses.dataclass
class RunSpec:
    """What one task needs besides the base model and the data (passed beside it, see ``sources``)."""
    condition: Any                     # a Condition; None: the evaluation of the base itself
    train: TrainConfig
    eval: EvalConfig
    runs_dir: str
    plain_before: float | None = None  # the base's plain-text loss (forgetting is measured against it)
    orig_before: float | None = None   # the base's loss on the original (polite) held-out answers
    placement: Placement = dataclasses.field(default_factory=Placement)  # backend, precision, engine threads
    progress: bool = False             # the training bar
    tracker: Any = None                # a gozaru.lab.tracking.Tracker: one tracked run per condition


def run_task(spec: RunSpec, base, data) -> tuple[dict, float]:
    """One run from start to end (the per-condition task): trains, saves ``<slug>.h5`` then writes the record
    ``<slug>.json``, both atomically, under ``spec.runs_dir``; resumes ``partial/<slug>.h5`` when an earlier
    attempt was killed. ``base``: what ``BaseSource.ship`` sent (a Model, a checkpoint path or BaseArrays),
    placed as ``spec.placement`` says; ``data``: ExperimentData or the path of its pickle. Returns (record, wall
    seconds)."""
    t0 = time.perf_counter()
    base = BaseSource.of(base).load(spec.placement)
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            data = pickle.load(f)
    if spec.condition is None:
        record = _base_record(base, data, spec.eval, spec.runs_dir)
    else:
        record = _run_condition(spec.condition, base, data, spec.train, spec.eval, spec.runs_dir,
                                spec.plain_before, spec.progress, spec.tracker, spec.orig_before)
    return record, time.perf_counter() - t0


def sources(source: BaseSource, data, out, executor, placement: Placement):
    """How the base and the data travel to the runs (``executor.transfer``): the objects themselves, files
    under ``out/inputs`` on shared storage (a base checkpoint is used where it is), or the object store."""
    inputs = os.path.abspath(os.path.join(out, "inputs"))
    base = source.ship(executor, inputs, placement)
    if executor.transfer == "memory":
        return base, data
    if executor.transfer == "storage":
        os.makedirs(inputs, exist_ok=True)
        data_path = os.path.join(inputs, "data.pkl")
        with atomic_writer(data_path, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        return base, data_path
    return base, executor.put(data)


def _base_record(base, data, eval_config, runs_dir) -> dict:
    path = os.path.join(runs_dir, BASE_NAME + ".json")
    row = evaluate(base, data, eval_config)
    lists = _lists_of(row)
    row.update(name=BASE_NAME, group="base", position="none", budget=float("nan"), seed=0, trainable_params=0,
               trainable_pct=0.0, steps=0, train_loss=float("nan"), train_seconds=0.0, tokens_seen=0, checkpoint="")
    record = {"row": row, **lists, "placement": base.placement.to_dict()}
    write_json_atomic(path, record)
    return record


def run_paths(runs_dir: str, slug: str) -> tuple[str, str, str]:
    """(checkpoint, record, partial checkpoint) of the run named ``slug``."""
    return (os.path.join(runs_dir, slug + ".h5"), os.path.join(runs_dir, slug + ".json"),
            os.path.join(runs_dir, PARTIAL_DIR, slug + ".h5"))


def definition_difference(condition: dict | None, train_config: dict | None, cond, config: TrainConfig) -> str | None:
    """None when a run stored with ``condition`` / ``train_config`` is a run of ``cond`` trained with ``config``;
    else the first field that differs, in words. A part stored as None (records older than it) is not compared,
    and a training setting a record has no field for (older than the setting) counts as its default."""
    want = {"condition": cond.to_dict(), "train_config": config.to_dict()}
    have = {"condition": condition, "train_config": train_config}
    older = {"condition": {}, "train_config": TrainConfig().to_dict()}
    for part in want:
        if have[part] is None:
            continue
        w, h = want[part], have[part] if isinstance(have[part], dict) else {}
        for key in list(w) + [k for k in h if k not in w]:  # field order: what a user wrote comes first
            got = h[key] if key in h else older[part].get(key)
            if key not in _NOT_DEFINING and not _same(w.get(key), got):
                return f"{part.replace('_', ' ')} {key} was {got!r}, now {w.get(key)!r}"
    return None


def _check_checkpoint(path: str, cond, config: TrainConfig) -> None:
    """Refuses a run checkpoint without a record or made for another definition of ``cond`` (one line)."""
    record = RunRecord.from_payload(_core.read_checkpoint_meta(path)["extra"], path)
    if record is None or record.condition is None:
        raise ValueError(f"{path}: no run record naming its condition; delete the file to train condition "
                         f"{cond.name!r} again")
    diff = definition_difference(record.condition, record.train_config, cond, config)
    if diff:
        raise ValueError(f"{path}: made for another definition or other training settings of condition "
                         f"{cond.name!r} ({diff}); give the condition another name, or delete the file to train "
                         "it again")


def _same(a, b) -> bool:
    """Equal as stored in JSON (tuples read back as lists)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _run_condition(cond, base, data, train_config, eval_config, runs_dir, plain_before, progress,
                   tracker=None, orig_before=None) -> dict:
    final, _, partial = run_paths(runs_dir, cond.slug)
    names = cond.select(base.config)
    if not names:
        raise ValueError(f"condition {cond.name!r} selects no tensors")
    config = dataclasses.replace(train_config, progress=progress and train_config.progress,
                                 **train_overrides(cond.hparams))
    tracked = None   # a run trained by an earlier attempt has reported its steps there
    if os.path.exists(final):   # trained, but killed before its record was written
        _check_checkpoint(final, cond, config)
        model, _, info = load(final, placement=base.placement)
        record = RunRecord.from_payload(info.get("extra"), final)
    else:
        if tracker is not None:
            tracked = tracker.start(cond.name, {"condition": cond.to_dict(), "train": config.to_dict()})
        common = dict(config=config, checkpoint=partial, eval_data=data.eval, save_at_end=False,
                      on_step=tracked.on_step if tracked else None, condition=cond.to_dict())
        os.makedirs(os.path.dirname(partial), exist_ok=True)
        if os.path.exists(partial):
            _check_checkpoint(partial, cond, config)
            trainer = Trainer(None, data.train, resume=partial, placement=base.placement, **common)
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
    if tracked:   # the condition's measurements (ござる-rate, its interval, losses) close its tracked run
        tracked.on_eval(row)
        tracked.on_end()
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
    record = {"row": row, **lists, **details, "placement": model.placement.to_dict(),
              "weight_change": change.to_dict(orient="records")}
    if model.lora:
        record["lora_change"] = lora.weight_change(model)  # ||s B A|| / ||W|| per adapted weight
    write_json_atomic(run_paths(runs_dir, cond.slug)[1], record)
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

