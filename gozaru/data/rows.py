"""Fixed-shape token rows — what the data room produces and the trainer consumes — and their order.

``Rows.tokens`` / ``Rows.targets`` are C-contiguous int32 ``[rows, seq_len]``; a target equal to
:data:`IGNORE_INDEX` is not counted by the loss. The epoch order is a pure function of ``(seed, epoch)``, so a
cursor (examples consumed so far) is all a resumed run needs to continue the same stream.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from .._core import IGNORE_INDEX


@dataclasses.dataclass(frozen=True)
class Rows:
    """``tokens`` / ``targets`` int32 ``[N, T]`` plus counts of the examples that went in."""
    tokens: np.ndarray
    targets: np.ndarray
    n_examples: int = 0
    n_truncated: int = 0

    def __post_init__(self):
        if self.tokens.shape != self.targets.shape or self.tokens.ndim != 2:
            raise ValueError(f"tokens {self.tokens.shape} and targets {self.targets.shape} must be equal 2-D shapes")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def counted(self) -> int:
        """Target tokens the loss counts."""
        return int((self.targets != IGNORE_INDEX).sum())

    n_target_tokens = counted

    def take(self, index) -> "Rows":
        return Rows(self.tokens[index], self.targets[index])


def as_rows(data: Any) -> Rows:
    """Accepts Rows, a ``(tokens, targets)`` pair, a dict or an object with tokens/targets
    (or input_ids/labels) arrays, or a list of such batches (concatenated)."""
    if isinstance(data, Rows):
        return data
    if isinstance(data, (list, tuple)) and len(data) == 2 and all(isinstance(a, np.ndarray) for a in data):
        tokens, targets = data
    elif isinstance(data, dict):
        tokens = data.get("tokens", data.get("input_ids"))
        targets = data.get("targets", data.get("labels"))
    elif isinstance(data, (list, tuple)) and data:
        parts = [as_rows(d) for d in data]
        width = max(p.tokens.shape[1] for p in parts)
        tokens = np.concatenate([pad_columns(p.tokens, width, 0) for p in parts])
        targets = np.concatenate([pad_columns(p.targets, width, IGNORE_INDEX) for p in parts])
    else:
        tokens = getattr(data, "tokens", getattr(data, "input_ids", None))
        targets = getattr(data, "targets", getattr(data, "labels", None))
    if tokens is None or targets is None:
        raise TypeError(f"cannot read tokens/targets from {type(data).__name__}")
    return Rows(np.ascontiguousarray(tokens, dtype=np.int32), np.ascontiguousarray(targets, dtype=np.int32))


def pad_columns(a: np.ndarray, width: int, value: int) -> np.ndarray:
    """``a`` right-padded with ``value`` to ``width`` columns."""
    if a.shape[1] == width:
        return a
    return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value)


def trim_columns(tokens: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drops trailing columns where no target is counted. Attention is causal, so those columns cannot change
    the loss of earlier positions; dropping them only saves compute."""
    counted = (targets != IGNORE_INDEX).any(axis=0)
    if not counted.any():
        return tokens[:, :1], targets[:, :1]
    width = int(np.flatnonzero(counted)[-1]) + 1
    return np.ascontiguousarray(tokens[:, :width]), np.ascontiguousarray(targets[:, :width])


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The row permutation of one epoch; a pure function of (seed, epoch) so a cursor is enough to resume."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def rows_at(n_rows: int, seed: int, cursor: int, count: int) -> np.ndarray:
    """Row indices for examples ``cursor .. cursor+count-1`` of the endless shuffled stream."""
    out = []
    while count > 0:
        epoch, pos = divmod(cursor, n_rows)
        chunk = epoch_order(n_rows, seed, epoch)[pos:pos + count]
        out.append(chunk)
        cursor += len(chunk)
        count -= len(chunk)
    return np.concatenate(out)


def iterate_batches(data: Any, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = False,
                    epochs: int | None = 1, pad_id: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(tokens, targets)`` int32 ``[batch_size, seq_len]`` batches, epoch by epoch in :func:`epoch_order`
    (``epochs=None`` repeats forever). Without ``drop_last`` the last batch of an epoch is filled up with
    ignored rows (tokens ``pad_id``, targets -100) so every batch has the same shape."""
    rows = as_rows(data)
    n = len(rows)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    epoch = 0
    while n and (epochs is None or epoch < epochs):
        order = epoch_order(n, seed, epoch) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start: start + batch_size]
            if len(idx) < batch_size and drop_last:
                break
            fill = batch_size - len(idx)
            tok = np.concatenate([rows.tokens[idx], np.full((fill, rows.tokens.shape[1]), pad_id, np.int32)])
            tgt = np.concatenate([rows.targets[idx], np.full((fill, rows.tokens.shape[1]), IGNORE_INDEX, np.int32)])
            yield np.ascontiguousarray(tok), np.ascontiguousarray(tgt)
        epoch += 1


def num_batches(n_rows: int, batch_size: int, drop_last: bool = False) -> int:
    return n_rows // batch_size if drop_last else -(-n_rows // batch_size)
