"""``Placement``: where a model runs and how it computes — backend × precision × threads — as one value.

It is made once, from the command line (``gozaru … --backend --precision --threads``) or the API
(``Placement(precision="bf16-emulated")``), and handed to every path that makes a model: ``Model``, ``load``,
``Model.from_hf``, the LoRA functions (a new model keeps the placement of the one it came from), the grid's
tasks (in this process or on Ray workers), the study and export. Run records store the placement a run used
(``Model.placement``, with the precision the core actually runs and the engine threads in effect).

The precision names are the core's (``_core.PRECISIONS``, csrc/precision.h); the core checks them. The
environment variables about precision are read here and nowhere else (the core reads none); each is a documented
default, read when a precision is set:

- ``GOZARU_BF16_EMULATE=1``: asking for ``bf16`` where this CPU or build cannot run it gives ``bf16-emulated``
  (the same rounding, computed with fp32 multiplies) instead of an error.
- ``GOZARU_BF16_ANY_CPU=1`` (for tests): ``bf16`` runs through the bf16 GEMM library even on a CPU without
  AVX512-BF16 / AMX-BF16, where the library converts to fp32 inside: the same results, no faster.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from .. import _core

EMULATE_ENV = "GOZARU_BF16_EMULATE"
ANY_CPU_ENV = "GOZARU_BF16_ANY_CPU"


@dataclasses.dataclass(frozen=True)
class Placement:
    """``backend`` ("cpu", "cuda"), ``precision`` (one of ``_core.PRECISIONS``; None keeps the backend's own,
    fp32 on the CPU) and ``threads`` (engine threads, a process-wide setting; None keeps the current one)."""
    backend: str = "cpu"
    precision: str | None = None
    threads: int | None = None

    def __post_init__(self):
        if not isinstance(self.backend, str):
            raise TypeError(f"placement: backend must be a str, got {type(self.backend).__name__}")
        if self.precision is not None and not isinstance(self.precision, str):
            raise TypeError(f"placement: precision must be a str or None, got {type(self.precision).__name__}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"placement: threads must be a positive int or None, got {self.threads!r}")

    @classmethod
    def of(cls, placement: "Placement | None" = None, *, backend: str | None = None,
           precision: str | None = None, threads: int | None = None) -> "Placement":
        """``placement`` (default: the default placement) with the fields given as keywords replaced."""
        base = placement if placement is not None else cls()
        if not isinstance(base, Placement):
            raise TypeError(f"placement must be a gozaru Placement, got {type(base).__name__}")
        changes = {k: v for k, v in (("backend", backend), ("precision", precision), ("threads", threads))
                   if v is not None}
        return dataclasses.replace(base, **changes) if changes else base

    def apply_threads(self) -> None:
        """Sets the engine's threads (process-wide) when this placement names a number."""
        if self.threads is not None and _core.get_num_threads() != self.threads:
            _core.set_num_threads(self.threads)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Placement":
        if not isinstance(d, dict):
            raise ValueError(f"placement: expected a dict, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"placement: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**d)


def emulation_fallback(precision: str) -> str | None:
    """What to run instead when ``precision`` cannot run here: ``bf16-emulated`` for ``bf16`` when the user opted
    in with GOZARU_BF16_EMULATE=1, else None (the error stands)."""
    if precision == "bf16" and os.environ.get(EMULATE_ENV, "") not in ("", "0"):
        return "bf16-emulated"
    return None


def share_bf16_switches() -> None:
    """Hands GOZARU_BF16_ANY_CPU to the core (which reads no environment) as it is now: called before every
    precision is set (``Model.set_precision``) and before ``build_info()`` lists the precisions."""
    _core.allow_bf16_without_instructions(os.environ.get(ANY_CPU_ENV, "") == "1")
