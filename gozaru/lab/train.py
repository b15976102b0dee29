"""The Trainer: micro-batches with gradient accumulation, warmup + cosine schedule, clipping, progress,
NaN/Inf detection that names the tensor, periodic/final HDF5 checkpoints, bit-exact resume, Ctrl-C saving."""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from typing import Callable, Sequence

import numpy as np

from .._core import IGNORE_INDEX
from ..data.rows import as_rows, pack_rows, rows_at
from ..engine import optim
from ..engine.checkpoint import load
from ..engine.optim import AdamW
from ..engine.placement import Placement
from .evaluate import eval_loss
from .progress import progress_bar
from .record import RunRecord
from .schedule import warmup_cosine


# --------------------------------------------------------------------------- configuration and errors
@dataclasses.dataclass
class TrainConfig:
    """Training settings; the one place their defaults live (the CLI reads its defaults from here)."""
    steps: int = 200               # optimizer steps
    batch_size: int = 16           # sequences per optimizer step
    micro_batch_size: int = 0      # sequences per forward/backward; 0 = batch_size (no accumulation)
    lr: float = optim.DEFAULT_LR   # peak learning rate
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1      # cosine floor as a share of lr
    weight_decay: float = 0.0
    betas: tuple[float, float] = optim.DEFAULT_BETAS
    eps: float = optim.DEFAULT_EPS
    max_grad_norm: float = 1.0     # 0 = no clipping
    seed: int = 0                  # data order
    checkpoint_every: int = 50     # steps between checkpoints (when a checkpoint path is given); 0 = only the final one
    eval_every: int = 0            # steps between eval-loss measurements (needs eval data); 0 = none
    progress: bool = True          # tqdm bar
    # Divergence: training stops with DivergedError when the train loss stays above divergence_factor times
    # max(first step's loss, 1) for divergence_patience consecutive steps (or is above it at the last step);
    # a non-finite loss stops it at once (NonFiniteError). Checkpoints are not written while the loss is
    # above that bound, so the last one written holds the last good model. divergence_factor 0 = no check.
    divergence_factor: float = 10.0
    divergence_patience: int = 3
    # Packing: the training rows' examples (one per row) are packed next-fit into full rows of the same width, in
    # a seed-shuffled order (gozaru.data.pack_rows), each attending only to itself with positions from 0, so the
    # loss and gradients of a batch are those of its examples unpacked while padding costs less compute.
    # batch_size then counts packed rows. Off by default; data given packed already (with doc_ids) is used as is.
    pack: bool = False

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.steps < 0 or self.batch_size <= 0 or self.micro_batch_size < 0:
            raise ValueError("steps >= 0, batch_size > 0 and micro_batch_size >= 0 are required")
        if not self.divergence_factor >= 0 or self.divergence_patience < 1:
            raise ValueError("divergence_factor >= 0 and divergence_patience >= 1 are required")

    @property
    def micro(self) -> int:
        return min(self.micro_batch_size or self.batch_size, self.batch_size)

    def lr_at(self, step: int) -> float:
        return warmup_cosine(step, max(self.steps, 1), self.lr, min(self.warmup_steps, self.steps),
                             self.min_lr_ratio)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class NonFiniteError(FloatingPointError):
    """Training produced NaN/Inf; ``tensors`` names where it was found, ``kind`` is "parameter", "gradient"
    or "loss"."""

    def __init__(self, message: str, step: int, kind: str, tensors: list[str]):
        super().__init__(message)
        self.step, self.kind, self.tensors = step, kind, tensors


class DivergedError(FloatingPointError):
    """The train loss stayed above the divergence bound (see TrainConfig); ``step`` and ``loss`` say where."""

    def __init__(self, message: str, step: int, loss: float):
        super().__init__(message)
        self.step, self.loss = step, loss


class _DeferredInterrupt:
    """Turns the first Ctrl-C into a flag checked between steps (so a checkpoint is always consistent);
    a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self.forced = False  # the second Ctrl-C: the state may be mid-step
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# --------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains the trainable tensors of ``model`` on ``data`` (anything :func:`as_rows` accepts).

    ``checkpoint``: HDF5 path written every ``checkpoint_every`` steps, at the end and on Ctrl-C.
    ``resume``: a checkpoint written by a Trainer; model, optimizer, step, data cursor, history and (unless
    ``config`` is given) the config come from it, and training continues bit-exactly; ``model`` must then be None
    and ``trainer.model`` is the model to use afterwards. ``save_at_end=False`` skips the final checkpoint (the caller
    saves the result its own way). ``placement`` (backend, precision, threads; ``backend`` / ``precision`` replace
    its fields) is where a resumed model runs and how its Linear layers compute (a run setting that checkpoints
    do not keep); the run record stores the placement the model used.
    ``on_step(trainer, record)`` is called after every step; ``callbacks`` (``gozaru.lab.tracking.Callback``:
    TensorBoard, MLflow or your own) hear ``on_step`` after every step and ``on_end`` when ``fit()`` completes.
    """

    def __init__(self, model=None, data=None, config: TrainConfig | None = None, *, checkpoint: str | None = None,
                 eval_data=None, resume: str | None = None, optimizer=None, save_at_end: bool = True,
                 backend: str | None = None, precision: str | None = None, placement: Placement | None = None,
                 on_step: Callable[["Trainer", dict], None] | None = None, callbacks: Sequence = (),
                 condition: dict | None = None, **overrides):
        if data is None:
            raise ValueError("data is required")
        self.rows = as_rows(data)
        if len(self.rows) == 0:
            raise ValueError("no training rows")
        self.eval_rows = as_rows(eval_data) if eval_data is not None else None
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        self.save_at_end = save_at_end
        self.on_step = on_step
        self.callbacks = list(callbacks)   # gozaru.lab.tracking.Callback: on_step each step, on_end after fit()
        self.condition = condition  # an experiment's Condition.to_dict(), kept in every checkpoint's record
        self.step = 0
        self.cursor = 0
        self.tokens_seen = 0
        self.history: list[dict] = []
        self.eval_history: list[dict] = []
        self.grad_norm_sums: dict[str, float] = {}
        self.grad_norm_steps = 0
        self.interrupted = False
        self._steps_above = 0  # consecutive steps with the loss above the divergence bound
        saved_config = saved_rows = None
        if resume is not None:
            if model is not None or optimizer is not None:
                raise ValueError("resume= brings its own model and optimizer: pass model=None")
            placement = Placement.of(placement, backend=backend, precision=precision)
            model, optimizer, saved_config, saved_rows = self._load(resume, placement)
        if model is None:
            raise ValueError("model is required (or resume= a checkpoint)")
        config = config or (TrainConfig.from_dict(saved_config) if saved_config else TrainConfig())
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        if self.config.pack and not self.rows.packed:
            self.rows = pack_rows(self.rows, seed=self.config.seed)
        if saved_rows is not None and saved_rows != len(self.rows):
            raise ValueError(f"{resume}: saved with {saved_rows} training rows, but the data given has "
                             f"{len(self.rows)}; resume needs the same data")
        self.model = model
        if optimizer is None:
            c = self.config
            # the schedule owns the lr (every step passes c.lr_at(step)): start at the first step's
            optimizer = AdamW(model, lr=c.lr_at(self.step), betas=c.betas, eps=c.eps, weight_decay=c.weight_decay)
        self.optimizer = optimizer

    # ------------------------------------------------------------------ public
    def fit(self) -> "Trainer":
        """Runs until ``config.steps``. Can be called again after an interrupt (or with more steps)."""
        self.interrupted = False
        bar = self._progress_bar()
        stop = _DeferredInterrupt()
        try:
            with stop:
                while self.step < self.config.steps:
                    record = self._train_step()
                    self._check_divergence(record, last=self.step >= self.config.steps)
                    self._after_step(record, bar)
                    if stop.requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.interrupted = True
            if stop.forced:
                bar.write(f"interrupted inside step {self.step + 1}: no checkpoint written (the last one stays)")
            elif self.checkpoint and not self._steps_above:
                self.save()
                bar.write(f"interrupted at step {self.step}: checkpoint saved to {self.checkpoint} "
                          f"(continue with resume={self.checkpoint!r})")
            raise
        finally:
            bar.close()
        if self.checkpoint and self.save_at_end:
            self.save()
        for cb in self.callbacks:
            cb.on_end(self)
        return self

    def save(self, path: str | None = None) -> str:
        """Writes an HDF5 checkpoint with model, optimizer, step, data cursor and history (atomic)."""
        path = os.fspath(path or self.checkpoint)
        if not path:
            raise ValueError("no checkpoint path given")
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.model.save(path, optimizer=self.optimizer, step=self.step, tokens_seen=self.tokens_seen,
                        extra=self.run_record().to_bytes())
        return path

    def run_record(self) -> RunRecord:
        """What a checkpoint of this run stores beside the weights (see ``gozaru.lab.record``)."""
        return RunRecord(train_config=self.config.to_dict(), n_rows=len(self.rows), cursor=self.cursor,
                         history=self.history, eval_history=self.eval_history, grad_norm_sums=self.grad_norm_sums,
                         grad_norm_steps=self.grad_norm_steps, placement=self.model.placement.to_dict(),
                         condition=self.condition)

    def mean_grad_norms(self) -> dict[str, float]:
        """Mean gradient L2 norm per trainable tensor over the steps trained so far."""
        return self.run_record().mean_grad_norms()

    def history_frame(self):
        import pandas as pd
        return pd.DataFrame(self.history)

    # ------------------------------------------------------------------ one optimizer step
    def _train_step(self) -> dict:
        c, model = self.config, self.model
        t0 = time.perf_counter()
        index = rows_at(len(self.rows), c.seed, self.cursor, c.batch_size)
        batch = self.rows.take(index)
        n_total = batch.counted
        model.zero_grad()
        loss_sum, tokens = 0.0, 0
        for start in range(0, len(index), c.micro):
            tok, tgt, docs = batch.batch(start, start + c.micro)
            n = int((tgt != IGNORE_INDEX).sum())
            tokens += tok.size
            if n == 0:
                continue
            loss = model.loss(tok, tgt, doc_ids=docs)
            if not math.isfinite(loss):
                self._raise_non_finite(f"loss is {loss}")
            model.backward(scale=n / n_total)
            loss_sum += loss * n
        norms = self._check_gradients()
        lr = c.lr_at(self.step)
        grad_norm = self.optimizer.step(lr=lr, max_grad_norm=c.max_grad_norm or None) if n_total else 0.0
        self.step += 1
        self.cursor += c.batch_size
        self.tokens_seen += tokens
        for name, value in norms.items():
            self.grad_norm_sums[name] = self.grad_norm_sums.get(name, 0.0) + value
        self.grad_norm_steps += 1
        seconds = time.perf_counter() - t0
        return {"step": self.step, "loss": loss_sum / n_total if n_total else float("nan"), "lr": lr,
                "grad_norm": float(grad_norm), "tokens": self.tokens_seen, "seconds": seconds,
                "tokens_per_s": tokens / max(seconds, 1e-9)}

    def _check_gradients(self) -> dict[str, float]:
        trainable = set(self.model.trainable_names())
        norms = {k: float(v) for k, v in self.model.grad_norms().items() if k in trainable}
        if not all(math.isfinite(v) for v in norms.values()):
            self._raise_non_finite("gradient norm is not finite")
        return norms

    def _raise_non_finite(self, what: str):
        """Finds where the NaN/Inf lives: a parameter (the usual root cause), else the gradients."""
        step = self.step + 1
        self.model.sync_to_host()
        bad = [n for n in self.model.names if not np.isfinite(self.model.params[n]).all()]
        if bad:
            raise NonFiniteError(f"step {step}: {what}; non-finite values in parameter {bad[0]}"
                                 + _more(bad), step, "parameter", bad)
        trainable = set(self.model.trainable_names())
        norms = self.model.grad_norms()
        # Backward runs from the head down, so the highest tensor with a bad gradient is where it started.
        bad = [n for n in reversed(self.model.names) if n in trainable and not math.isfinite(norms[n])]
        if bad:
            raise NonFiniteError(f"step {step}: {what}; non-finite gradient first in {bad[0]}" + _more(bad),
                                 step, "gradient", bad)
        raise NonFiniteError(f"step {step}: {what} (parameters and gradients are finite)", step, "loss", [])

    def divergence_bound(self) -> float | None:
        """The loss above which a step counts towards divergence (None before the first step or when off)."""
        c = self.config
        first = self.history[0]["loss"] if self.history else None
        if not c.divergence_factor or first is None or not math.isfinite(first):
            return None
        return c.divergence_factor * max(first, 1.0)

    def _check_divergence(self, record: dict, last: bool):
        bound = self.divergence_bound()
        loss = record["loss"]
        if bound is None or not loss > bound:
            self._steps_above = 0
            return
        self._steps_above += 1
        if self._steps_above >= self.config.divergence_patience or last:
            kept = ""
            if self.checkpoint:
                kept = (f"; the last good checkpoint stays at {self.checkpoint}" if os.path.exists(self.checkpoint)
                        else f"; nothing was written to {self.checkpoint}")
            raise DivergedError(f"training diverged at step {self.step}: loss {loss:.4g} above "
                                f"{self.config.divergence_factor:g}x the first step's loss for {self._steps_above} "
                                f"step(s) (lower the learning rate){kept}", self.step, loss)

    # ------------------------------------------------------------------ bookkeeping
    def _after_step(self, record: dict, bar):
        c = self.config
        if self.eval_rows is not None and c.eval_every and (self.step % c.eval_every == 0 or self.step == c.steps):
            record["eval_loss"] = eval_loss(self.model, self.eval_rows, batch_size=c.micro)
            self.eval_history.append({"step": self.step, "eval_loss": record["eval_loss"]})
        self.history.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
        if (self.checkpoint and c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.step < c.steps
                and not self._steps_above):
            self.save()
        if self.on_step is not None:
            self.on_step(self, record)
        for cb in self.callbacks:
            cb.on_step(self, record)

    def _progress_bar(self):
        return progress_bar(total=self.config.steps, initial=self.step, disable=not self.config.progress,
                            desc="train", unit="step", dynamic_ncols=True, leave=False)

    def _load(self, path: str, placement: Placement):
        model, optimizer, info = load(path, placement=placement)
        record = RunRecord.from_payload(info.get("extra"), path)
        if record is None:
            raise ValueError(f"{path}: not a Trainer checkpoint (no data cursor); start a new Trainer with "
                             f"model=gozaru.load(path)[0] instead")
        if optimizer is None:
            raise ValueError(f"{path}: the checkpoint has no optimizer state, so training cannot resume exactly")
        self.step = int(info["step"])
        self.tokens_seen = int(info["tokens_seen"])
        self.cursor = int(record.cursor)
        self.history = list(record.history)
        self.eval_history = list(record.eval_history)
        self.grad_norm_sums = dict(record.grad_norm_sums)
        self.grad_norm_steps = int(record.grad_norm_steps)
        return model, optimizer, record.train_config, record.n_rows


def _more(names: list[str]) -> str:
    if len(names) <= 1:
        return ""
    shown = ", ".join(names[1:4])
    return f" (also {shown}{', …' if len(names) > 4 else ''}; {len(names)} tensors in all)"


def train(model, data, config: TrainConfig | None = None, **kwargs) -> Trainer:
    """Shortcut: ``Trainer(model, data, config, **kwargs).fit()``."""
    return Trainer(model, data, config, **kwargs).fit()
