"""``gozaru.AdamW``: torch.optim.AdamW semantics in the C core, for the trainable tensors of one Model.

Decoupled weight decay (none on biases and LayerNorm weights unless ``decay_all``), bias correction,
optional global grad-norm clipping; the learning rate may change every step (Python owns the schedule).
State is created per tensor the first time it is trainable at a step.
"""
from __future__ import annotations


import numpy as np

from .. import _core
from .model import Model

# AdamW defaults (torch's, with a fine-tuning learning rate); the trainer's TrainConfig takes them from here.
DEFAULT_LR = 1e-4
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8


class AdamW:
    def __init__(self, model: Model, lr: float = DEFAULT_LR, betas: tuple[float, float] = DEFAULT_BETAS,
                 eps: float = DEFAULT_EPS,
                 weight_decay: float = 0.0, decay_all: bool = False):
        if not isinstance(model, Model):
            raise TypeError(f"model must be a gozaru.Model, got {type(model).__name__}")
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self._lr = _core.check_lr(lr)  # the core's one lr check (TypeError / ValueError)
        self._model = model
        self._core = _core.AdamW(model.core, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                 decay_all=bool(decay_all))
        self._betas = (float(beta1), float(beta2))
        self._eps = float(eps)
        self._weight_decay = float(weight_decay)
        self._decay_all = bool(decay_all)

    # -- settings ----------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate used when ``step`` is called without one."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _core.check_lr(value)

    @property
    def model(self) -> Model:
        return self._model

    @property
    def core(self) -> _core.AdamW:
        return self._core

    @property
    def betas(self) -> tuple[float, float]:
        return self._betas

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def weight_decay(self) -> float:
        return self._weight_decay

    @property
    def decay_all(self) -> bool:
        return self._decay_all

    def __repr__(self) -> str:
        return (f"gozaru.AdamW(lr={self._lr:g}, betas={self._betas}, eps={self._eps:g}, "
                f"weight_decay={self._weight_decay:g}, decay_all={self._decay_all})")

    # -- stepping ----------------------------------------------------------------
    def step(self, lr: float | None = None, max_grad_norm: float | None = None) -> float:
        """One update of every trainable tensor; returns the global gradient L2 norm before clipping.
        ``lr`` (when given) also becomes ``self.lr``; ``max_grad_norm`` None or 0 means no clipping.
        A non-finite gradient raises ValueError naming the tensor and changes nothing (``self.lr`` included)."""
        new_lr = self._lr if lr is None else lr
        norm = self._core.step(new_lr, 0.0 if max_grad_norm is None else max_grad_norm)  # checks lr
        self._lr = float(new_lr)  # only once the step was taken
        return norm

    # -- state -------------------------------------------------------------------
    def has_state(self, name: str) -> bool:
        return self._core.has_state(name)

    def state(self, name: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(first moment m, second moment v, step count) of one tensor, as copies."""
        return self._core.get_state(name)

    def set_state(self, name: str, m: np.ndarray, v: np.ndarray, step: int) -> None:
        shape = self._model.params[name].shape
        m = np.ascontiguousarray(m, dtype=np.float32).reshape(shape)
        v = np.ascontiguousarray(v, dtype=np.float32).reshape(shape)
        self._core.set_state(name, m, v, int(step))

    def update_norms(self) -> dict[str, float]:
        """L2 norm of the last update applied to each tensor (NaN where none)."""
        return {n: float(x) for n, x in zip(self._model.names, self._core.update_norms())}
