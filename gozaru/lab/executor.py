"""Where the runs of a grid execute: in this process (``LocalExecutor``, the default) or as tasks on a Ray
cluster (``RayExecutor``).

An executor knows nothing about experiments. It runs ``fn(*args)`` for each call of a list and yields a
``Done`` per call as each finishes, in completion order; an exception in one call is reported in its ``Done``
and the other calls go on. It also says how the inputs every call shares travel (``transfer``):

- ``memory``: the objects themselves (one process);
- ``storage``: paths of files on storage every node sees (the driver writes them once);
- ``object_store``: ``put`` them once into Ray's object store; each task gets them as arguments.

Ray is optional (``pip install "gozaru[ray]"``); it is imported only when a ``RayExecutor`` is made.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterator, Sequence

TRANSFERS = ("storage", "object_store")
INSTALL_HINT = 'the Ray executor needs Ray: pip install "gozaru[ray]"'


class RayUnavailable(RuntimeError):
    """Ray is not installed (the message says how to install it)."""


@dataclasses.dataclass
class Done:
    """One finished call: its index in the submitted list, and its value or the exception it ended with."""
    index: int
    value: Any = None
    error: BaseException | None = None


class LocalExecutor:
    """Today's behaviour: each call in turn, in this process, with the engine's current thread setting."""
    name = "local"
    transfer = "memory"
    shows_progress = False   # the runs show their own training bars

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def put(self, obj):
        return obj

    def slots(self) -> int:
        return 1

    def map(self, fn: Callable, calls: Sequence[tuple]) -> Iterator[Done]:
        for i, args in enumerate(calls):
            try:
                value = fn(*args)
            except Exception as e:  # noqa: BLE001 - reported per run; Ctrl-C (BaseException) still stops all
                yield Done(i, error=e)
            else:
                yield Done(i, value=value)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def import_ray():
    """The ``ray`` module, or RayUnavailable saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None


class RayExecutor(LocalExecutor):
    """Each call is one Ray task with ``cpus_per_run`` CPUs (the engine threads of the run) and ``gpus_per_run``
    GPUs; a task whose worker or node dies is retried up to ``max_retries`` times (an exception raised by the
    run itself is not retried: it would fail again).

    ``address``: None or ``"local"`` starts a Ray instance on this machine (stopped by ``close``); ``"auto"``
    joins the cluster this machine belongs to; ``"host:port"`` joins that one. When Ray is already initialised
    in this process, that connection is used as it is. ``transfer``: how the base model and data reach the
    tasks (``storage`` or ``object_store``; see docs/cluster.md for the measured trade-off)."""
    name = "ray"
    shows_progress = True

    def __init__(self, address: str | None = None, *, cpus_per_run: int = 1, gpus_per_run: float = 0,
                 max_retries: int = 3, transfer: str = "storage", init: dict | None = None):
        if cpus_per_run < 1 or gpus_per_run < 0 or max_retries < 0:
            raise ValueError("cpus_per_run >= 1, gpus_per_run >= 0 and max_retries >= 0 are required")
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer {transfer!r}: choose from {', '.join(TRANSFERS)}")
        super().__init__(threads=int(cpus_per_run))
        self.ray = import_ray()
        self.transfer = transfer
        self.cpus_per_run, self.gpus_per_run, self.max_retries = int(cpus_per_run), float(gpus_per_run), max_retries
        self._started = False
        if not self.ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": True, **(init or {})}
            self.ray.init(address=address or "local", **kwargs)
            self._started = True

    def put(self, obj):
        return self.ray.put(obj)

    def slots(self) -> int:
        """Runs the cluster can hold at once (for the progress display)."""
        res = self.ray.cluster_resources()
        n = int(res.get("CPU", 0) // self.cpus_per_run)
        if self.gpus_per_run:
            n = min(n, int(res.get("GPU", 0) // self.gpus_per_run))
        return max(n, 1)

    def map(self, fn: Callable, calls: Sequence[tuple]) -> Iterator[Done]:
        ray = self.ray
        remote = ray.remote(fn).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                        max_retries=self.max_retries, retry_exceptions=False)
        pending = {remote.remote(*args): i for i, args in enumerate(calls)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as e:   # the run raised: its own exception, not Ray's wrapper
                    cause = getattr(e, "cause", None)
                    yield Done(i, error=cause if isinstance(cause, BaseException) else e)
                except ray.exceptions.RayError as e:       # worker/node lost more often than max_retries
                    yield Done(i, error=e)
                else:
                    yield Done(i, value=value)

    def close(self):
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False


def error_line(error: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def from_args(args) -> LocalExecutor:
    """The executor the command-line options ask for (``--ray``, ``--cpus-per-run``, ``--gpus-per-run``,
    ``--max-retries``, ``--transfer``; see ``cli_args.add_cluster_options``)."""
    if getattr(args, "ray", None) is None:
        return LocalExecutor(getattr(args, "threads", None))
    return RayExecutor(args.ray, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                       max_retries=args.max_retries, transfer=args.transfer.replace("-", "_"))
