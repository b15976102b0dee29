"""How Python hands arrays to the core and sees the core's arrays: token-id arrays narrowed to int32 without
wrap-around, payloads as bytes, and the read-only mapping of zero-copy parameter views."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Iterator

import numpy as np

from .. import _core
from .._core import IGNORE_INDEX


# --------------------------------------------------------------------------- token arrays
def as_token_array(x: Any, name: str, vocab_size: int, *, allow_ignore: bool = False) -> np.ndarray:
    """A C-contiguous int32 [B, T] copy-or-view of integer ids.

    The range check ([0, vocab_size), or -100 for targets) is the core's; here only ids that would wrap around
    when narrowed to int32 are refused, since after the cast the core could no longer see them."""
    a = np.asarray(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        if a.size == 0 and a.dtype == np.float64:  # np.asarray([]) — report the emptiness, not the dtype
            raise ValueError(f"{name} is empty (shape {a.shape}): a zero-size batch cannot be processed")
        raise TypeError(f"{name} must hold integer token ids, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [B, T], got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}): a zero-size batch cannot be processed")
    extra = " (and is not the ignore index -100)" if allow_ignore else ""
    return _as_int32(a, name, f"is outside the vocabulary [0, {vocab_size}){extra}")


def _as_int32(a: np.ndarray, name: str, why: str) -> np.ndarray:
    """``a`` as C-contiguous int32; a value that int32 cannot hold is refused (``name[i, j] = value <why>``)
    rather than wrapped around by the cast."""
    if a.dtype != np.int32 and not np.can_cast(a.dtype, np.int32, "safe"):
        limits = np.iinfo(np.int32)
        bad = (a < limits.min) | (a > limits.max)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}[{pos[0]}, {pos[1]}] = {int(a[pos])} {why}")
    return np.ascontiguousarray(a, dtype=np.int32)


def next_token_targets(tokens: np.ndarray, doc_ids: np.ndarray | None = None) -> np.ndarray:
    """Targets for plain language modelling: each position predicts the next token; the last predicts nothing
    (nor, with ``doc_ids``, the last token of each document)."""
    targets = np.full_like(tokens, IGNORE_INDEX)
    targets[:, :-1] = tokens[:, 1:]
    if doc_ids is not None:
        targets[:, :-1][doc_ids[:, 1:] != doc_ids[:, :-1]] = IGNORE_INDEX
    return targets


def as_doc_ids(x: Any, shape: tuple[int, int]) -> np.ndarray:
    """Document ids of packed rows (``Model.forward``): a C-contiguous int32 [B, T] array of ``shape``. Any integer
    dtype is accepted; ids are only compared for equality, so values that do not fit int32 are refused rather than
    wrapped (which could make two documents one). Whether a document comes back in its row is the core's check."""
    a = np.asarray(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"doc_ids must hold integer document ids, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"doc_ids must have the shape of tokens {tuple(shape)}, got {a.shape}")
    return _as_int32(a, "doc_ids", "does not fit int32")


def as_bytes(value: Any, name: str) -> bytes:
    """rng / extra payloads: None, bytes-like, str, or a JSON-serialisable object (dict, list...)."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    try:
        return json.dumps(value, sort_keys=True).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be bytes, str or JSON-serialisable, got {type(value).__name__}: {e}") from None


def names_list(names: str | Iterable[str]) -> list[str]:
    if isinstance(names, str):
        return [names]
    names = list(names)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"tensor names must be str, got {type(n).__name__}")
    return names


# --------------------------------------------------------------------------- params mapping
class ParamViews(Mapping):
    """Read-only mapping name -> zero-copy float32 view of that tensor.

    Views are made once and cached; each keeps the model's parameter buffer alive. They are writable only where
    a write is seen at once (the CPU computing in fp32); under bf16 / bf16-emulated (whose working copies are
    rounded from the fp32 masters) and on device backends (whose weights live on the device) they are read-only,
    and writes go through ``Model.edit_params()``, which tells the core when the block ends."""

    def __init__(self, core: _core.Model, writable: bool = True):
        self._core = core
        self._device = core.backend != "cpu"  # the host copy is a mirror that training steps leave stale
        self._names = core.names
        self._views: dict[str, np.ndarray] = {}
        self._writable = writable

    def set_writable(self, writable: bool) -> None:
        """Views handed out from now on are writable or not; a read-only switch also revokes those already out
        (NumPy cannot make a view writable again, so going back to writable starts a new cache)."""
        if writable == self._writable:
            return
        for v in self._views.values():
            v.flags.writeable = False
        self._views = {}
        self._writable = writable

    def __getitem__(self, name: str) -> np.ndarray:
        v = self._views.get(name)
        if v is None:
            if name not in self._names:
                raise KeyError(name)
            v = self._views[name] = self._core.param(name)
            if not self._writable:
                v.flags.writeable = False
        if self._device:
            self._core.sync_to_host()  # downloads only when a training step left the mirror stale
        return v

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return f"<ParamViews of {len(self)} tensors>"
