"""Experiment tracking: a callback interface and two built-in reporters, TensorBoard and MLflow.

A :class:`Callback` hears about one training run:

* ``on_step(trainer, record)`` after every optimizer step; ``record`` has ``step``, ``loss``, ``lr``,
  ``grad_norm``, ``tokens``, ``tokens_per_s``, ``seconds`` and, on evaluation steps, ``eval_loss``;
* ``on_eval(metrics, step)`` with evaluation results (held-out loss, ござる-rate and its interval, …);
* ``on_end(trainer)`` when the run is over.

``Trainer(..., callbacks=[...])`` calls ``on_step`` and, when ``fit()`` returns, ``on_end``. A grid or study
(``experiment.run(..., tracker=...)``) starts one run per condition from a :class:`Tracker` and adds the
condition's evaluation before ending it. Only numbers are reported: non-numeric entries are left out.

Reporters: :class:`TensorBoardTracker` writes event files with the ``tensorboard`` package's own writer (no
torch or TensorFlow import), one subfolder per run; :class:`MlflowTracker` logs to an MLflow tracking URI (by
default the one mlflow itself picks: ``MLFLOW_TRACKING_URI``, else its local store, a ``mlflow.db`` SQLite file
in the working folder with mlflow 3), one MLflow run per condition in one experiment. Install them with
``pip install "gozaru[tracking]"``.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any

TRAIN_SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s", "eval_loss")


def numbers(d: dict) -> dict[str, float]:
    """The finite numeric entries of ``d`` (bools and non-numbers left out)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = float(v)
    return out


class Callback:
    """Override what you need; every method does nothing by default."""

    def on_step(self, trainer, record: dict) -> None:
        pass

    def on_eval(self, metrics: dict, step: int | None = None) -> None:
        pass

    def on_end(self, trainer=None) -> None:
        pass


class Tracker:
    """A destination that starts one :class:`Callback` per run (picklable: grid runs may start elsewhere)."""

    def start(self, run_name: str, params: dict | None = None) -> Callback:
        raise NotImplementedError


def _train_scalars(record: dict) -> dict[str, float]:
    return numbers({k: record[k] for k in TRAIN_SCALARS if k in record})


# --------------------------------------------------------------------------- TensorBoard
class TensorBoardCallback(Callback):
    """Scalars ``train/<name>`` per step and ``eval/<name>`` per evaluation into event files under ``logdir``."""

    def __init__(self, logdir: str | os.PathLike):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise ImportError('--tensorboard needs the tensorboard package: pip install "gozaru[tracking]"') from None
        self._event, self._summary = event_pb2, summary_pb2
        self.logdir = os.fspath(logdir)
        self._writer = EventFileWriter(self.logdir)
        self._last_step = 0

    def _write(self, prefix: str, values: dict[str, float], step: int) -> None:
        summary = self._summary.Summary(value=[self._summary.Summary.Value(tag=f"{prefix}/{k}", simple_value=v)
                                               for k, v in values.items()])
        self._writer.add_event(self._event.Event(wall_time=time.time(), step=int(step), summary=summary))

    def on_step(self, trainer, record: dict) -> None:
        self._last_step = int(record.get("step", self._last_step + 1))
        self._write("train", _train_scalars(record), self._last_step)

    def on_eval(self, metrics: dict, step: int | None = None) -> None:
        self._write("eval", numbers(metrics), self._last_step if step is None else step)
        self._writer.flush()

    def on_end(self, trainer=None) -> None:
        self._writer.close()


@dataclass
class TensorBoardTracker(Tracker):
    logdir: str

    def start(self, run_name: str, params: dict | None = None) -> Callback:
        return TensorBoardCallback(os.path.join(self.logdir, safe_run_name(run_name)))


def safe_run_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "run"


# --------------------------------------------------------------------------- MLflow
class MlflowCallback(Callback):
    """One MLflow run: parameters at the start, metrics per step and evaluation, FINISHED at the end."""

    def __init__(self, tracking_uri: str | None, experiment: str, run_name: str, params: dict | None = None):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ImportError('--mlflow needs the mlflow package: pip install "gozaru[tracking]"') from None
        self._metric = Metric
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        flat = {k: str(v)[:500] for k, v in _flatten(params or {}).items()}   # MLflow's value length limit
        if flat:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])
        self._last_step = 0

    def _log(self, prefix: str, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self._metric(f"{prefix}{k}", v, now, int(step)) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_step(self, trainer, record: dict) -> None:
        self._last_step = int(record.get("step", self._last_step + 1))
        self._log("", _train_scalars(record), self._last_step)

    def on_eval(self, metrics: dict, step: int | None = None) -> None:
        self._log("eval_", numbers(metrics), self._last_step if step is None else step)

    def on_end(self, trainer=None) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


@dataclass
class MlflowTracker(Tracker):
    tracking_uri: str | None = None
    experiment: str = "gozaru"

    def start(self, run_name: str, params: dict | None = None) -> Callback:
        return MlflowCallback(self.tracking_uri, self.experiment, run_name, params)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Trackers(Tracker):
    """Several destinations at once (``--tensorboard`` and ``--mlflow`` together)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)

    def start(self, run_name: str, params: dict | None = None) -> Callback:
        return CallbackList([t.start(run_name, params) for t in self.trackers])


class CallbackList(Callback):
    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def on_step(self, trainer, record: dict) -> None:
        for c in self.callbacks:
            c.on_step(trainer, record)

    def on_eval(self, metrics: dict, step: int | None = None) -> None:
        for c in self.callbacks:
            c.on_eval(metrics, step)

    def on_end(self, trainer=None) -> None:
        for c in self.callbacks:
            c.on_end(trainer)


def from_args(args) -> Tracker | None:
    """The tracker of ``--tensorboard DIR`` / ``--mlflow [URI]`` (None when neither is given)."""
    found: list[Tracker] = []
    if getattr(args, "tensorboard", None):
        found.append(TensorBoardTracker(args.tensorboard))
    mlflow_uri = getattr(args, "mlflow", None)
    if mlflow_uri is not None:
        found.append(MlflowTracker(mlflow_uri or None, getattr(args, "mlflow_experiment", None) or "gozaru"))
    if not found:
        return None
    return found[0] if len(found) == 1 else Trackers(found)
