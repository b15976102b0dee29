"""Fixed-shape token rows — what the data room produces and the trainer consumes — and their order.

``Rows.tokens`` / ``Rows.targets`` are C-contiguous int32 ``[rows, seq_len]``; a target equal to
:data:`IGNORE_INDEX` is not counted by the loss. Packed rows (:func:`pack_rows`) also carry ``doc_ids``, the
document of each token (``Model.loss(..., doc_ids=)``: each run of equal ids in a row attends only to itself and
restarts its positions; -1 on padding). The epoch order is a pure function of ``(seed, epoch)``, so a cursor
(examples consumed so far) is all a resumed run needs to continue the same stream.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from .._core import IGNORE_INDEX


@dataclasses.dataclass(frozen=True)
class Rows:
    """``tokens`` / ``targets`` int32 ``[N, T]`` plus counts of the examples that went in; ``doc_ids`` int32
    ``[N, T]`` for packed rows (None: one example per row)."""
    tokens: np.ndarray
    targets: np.ndarray
    n_examples: int = 0
    n_truncated: int = 0
    doc_ids: np.ndarray | None = None

    def __post_init__(self):
        if self.tokens.shape != self.targets.shape or self.tokens.ndim != 2:
            raise ValueError(f"tokens {self.tokens.shape} and targets {self.targets.shape} must be equal 2-D shapes")
        if self.doc_ids is not None and self.doc_ids.shape != self.tokens.shape:
            raise ValueError(f"doc_ids {self.doc_ids.shape} must have the shape of tokens {self.tokens.shape}")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def counted(self) -> int:
        """Target tokens the loss counts."""
        return int((self.targets != IGNORE_INDEX).sum())

    n_target_tokens = counted

    @property
    def packed(self) -> bool:
        return self.doc_ids is not None

    def take(self, index) -> "Rows":
        return Rows(self.tokens[index], self.targets[index],
                    doc_ids=None if self.doc_ids is None else self.doc_ids[index])

    def batch(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(tokens, targets, doc_ids or None)`` of rows ``start:stop`` with the trailing columns that count no
        target dropped (:func:`trim_columns`): what one forward pass takes."""
        tok, tgt = trim_columns(self.tokens[start:stop], self.targets[start:stop])
        if self.doc_ids is None:
            return tok, tgt, None
        return tok, tgt, np.ascontiguousarray(self.doc_ids[start:stop, :tok.shape[1]])


def as_rows(data: Any) -> Rows:
    """Accepts Rows, a ``(tokens, targets)`` pair, a dict or an object with tokens/targets
    (or input_ids/labels) arrays and optionally doc_ids, or a list of such batches (concatenated)."""
    if isinstance(data, Rows):
        return data
    doc_ids = None
    if isinstance(data, (list, tuple)) and len(data) == 2 and all(isinstance(a, np.ndarray) for a in data):
        tokens, targets = data
    elif isinstance(data, dict):
        tokens = data.get("tokens", data.get("input_ids"))
        targets = data.get("targets", data.get("labels"))
        doc_ids = data.get("doc_ids")
    elif isinstance(data, (list, tuple)) and data:
        parts = [as_rows(d) for d in data]
        width = max(p.tokens.shape[1] for p in parts)
        tokens = np.concatenate([pad_columns(p.tokens, width, 0) for p in parts])
        targets = np.concatenate([pad_columns(p.targets, width, IGNORE_INDEX) for p in parts])
        if any(p.packed for p in parts):  # unpacked parts: one document per row; added columns are padding
            doc_ids = np.concatenate([pad_columns(p.doc_ids if p.packed else np.zeros_like(p.tokens), width, -1)
                                      for p in parts])
    else:
        tokens = getattr(data, "tokens", getattr(data, "input_ids", None))
        targets = getattr(data, "targets", getattr(data, "labels", None))
        doc_ids = getattr(data, "doc_ids", None)
    if tokens is None or targets is None:
        raise TypeError(f"cannot read tokens/targets from {type(data).__name__}")
    return Rows(np.ascontiguousarray(tokens, dtype=np.int32), np.ascontiguousarray(targets, dtype=np.int32),
                doc_ids=None if doc_ids is None else np.ascontiguousarray(doc_ids, dtype=np.int32))


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


def pack_rows(data: Any, *, seed: int | None = 0, width: int | None = None, pad_id: int = 0) -> Rows:
    """Packs rows of one example each into rows of ``width`` columns (default: the rows' own), next-fit in a
    seed-shuffled order (``seed=None``: the given order), with ``doc_ids`` 0, 1, 2, ... per example in a row and -1
    on the padding at its end (tokens ``pad_id``, targets -100).

    An example is its row up to its last counted target (what follows cannot change its loss, attention being
    causal); rows that count no target are left out. With its documents' attention kept apart and positions
    restarting at each (``Model.loss(..., doc_ids=)``), every example gets the loss and gradients it has alone,
    and the mean loss over the packed rows is the one over the examples."""
    rows = as_rows(data)
    if rows.packed:
        raise ValueError("these rows are packed already (they have doc_ids)")
    width = rows.tokens.shape[1] if width is None else int(width)
    counted = rows.targets != IGNORE_INDEX
    lengths = np.where(counted.any(axis=1), rows.tokens.shape[1] - np.argmax(counted[:, ::-1], axis=1), 0)
    if lengths.max(initial=0) > width:
        raise ValueError(f"an example of {int(lengths.max())} tokens does not fit rows of width {width}")
    order = [i for i in (np.random.default_rng(seed).permutation(len(rows)) if seed is not None else range(len(rows)))
             if lengths[i]]
    packs: list[list[int]] = []
    used = width
    for i in order:
        if used + lengths[i] > width:
            packs.append([])
            used = 0
        packs[-1].append(i)
        used += lengths[i]
    tokens = np.full((len(packs), width), pad_id, np.int32)
    targets = np.full((len(packs), width), IGNORE_INDEX, np.int32)
    doc_ids = np.full((len(packs), width), -1, np.int32)
    for r, members in enumerate(packs):
        at = 0
        for d, i in enumerate(members):
            n = lengths[i]
            tokens[r, at:at + n] = rows.tokens[i, :n]
            targets[r, at:at + n] = rows.targets[i, :n]
            doc_ids[r, at:at + n] = d
            at += n
    return Rows(tokens, targets, n_examples=rows.n_examples or len(order), n_truncated=rows.n_truncated,
                doc_ids=doc_ids)


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
    ignored rows (tokens ``pad_id``, targets -100) so every batch has the same shape. Packed rows' ``doc_ids``
    are not yielded: take them with ``Rows.take`` (the Trainer does)."""
    rows = as_rows(data)
    n = len(rows)
    if rows.packed:
        raise ValueError("iterate_batches yields (tokens, targets) without doc_ids, which packed rows need: take "
                         "their batches with Rows.take / Rows.batch")
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
