"""``BaseSource``: the model a grid, study or training run starts from, resolved once into one of a few kinds,
with one ``load(placement)`` — and how it travels to the runs of a grid (``ship``).

A base given as a gozaru checkpoint path, an HF GPT-NeoX / Llama / Qwen2 folder, a Hugging Face Hub id
(``org/name``, resolved through the local hub cache), a ``Model`` in memory, or a factory (a function taking a
``Placement`` and returning a ``Model``) is told apart here and nowhere else; every other place asks the source.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..engine import hf
from ..engine.checkpoint import load as load_checkpoint
from ..engine.checkpoint import read_config
from ..engine.config import GPTNeoXConfig
from ..engine.model import Model
from ..engine.placement import Placement
from . import hub

KINDS = ("checkpoint", "hf", "model", "factory", "arrays")


@dataclasses.dataclass
class BaseArrays:
    """A base model as plain arrays (a Model itself cannot be pickled), for Ray's object store."""
    config: Any
    flat: Any       # every parameter, one float32 array in the engine's layout
    backend: str = "cpu"


@dataclasses.dataclass(frozen=True)
class BaseSource:
    """``kind`` (one of ``KINDS``) and ``value`` (a path, a Model, a factory or BaseArrays)."""
    kind: str
    value: Any

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"base source kind {self.kind!r}: choose from {', '.join(KINDS)}")

    # -- resolving ---------------------------------------------------------------
    @classmethod
    def of(cls, base: Any) -> "BaseSource":
        """The source for anything a base may be given as (see the module docstring)."""
        if isinstance(base, BaseSource):
            return base
        if isinstance(base, Model):
            return cls("model", base)
        if isinstance(base, BaseArrays):
            return cls("arrays", base)
        if isinstance(base, (str, os.PathLike)):
            path = os.fspath(base)
            if os.path.isdir(path):
                return cls("hf", path)
            if os.path.exists(path) or not hub.is_repo_id(path):
                return cls("checkpoint", path)   # a missing file is named when it is read
            return cls.hf(path)
        if callable(base):
            return cls("factory", base)
        raise TypeError(f"base must be a checkpoint path, an HF folder or Hub id, a gozaru Model or a function of a "
                        f"Placement returning one, got {type(base).__name__}")

    @classmethod
    def checkpoint(cls, path: str | os.PathLike) -> "BaseSource":
        """A gozaru .h5 checkpoint (``--base``)."""
        return cls("checkpoint", os.fspath(path))

    @classmethod
    def hf(cls, folder_or_id: str | os.PathLike) -> "BaseSource":
        """An HF GPT-NeoX / Llama / Qwen2 folder, or a Hub id resolved to its folder in the hub cache now (``--hf``)."""
        return cls("hf", hub.resolve(os.fspath(folder_or_id), "model"))

    # -- reading -----------------------------------------------------------------
    def config(self) -> GPTNeoXConfig:
        """The base's config, without reading its weights where the source allows."""
        if self.kind == "checkpoint":
            return read_config(self.value)
        if self.kind == "hf":
            return hf.read_hf_config(self.value)
        if self.kind == "factory":
            return self.load().config
        return self.value.config

    def placement(self) -> Placement | None:
        """The placement a Model source already has (None for the other kinds: they take the run's)."""
        return self.value.placement if self.kind == "model" else None

    def load(self, placement: Placement | None = None) -> Model:
        """The base as a Model placed as ``placement`` says (default: a Model source's own placement, else the
        default placement). A Model source is the same object, switched to the placement's precision."""
        if placement is None:
            placement = self.placement() or Placement()
        placement.apply_threads()
        if self.kind == "checkpoint":
            return load_checkpoint(self.value, placement=placement)[0]
        if self.kind == "hf":
            return Model.from_hf(self.value, placement=placement)
        if self.kind == "arrays":
            model = Model(self.value.config, seed=None, placement=placement)
            model.core.flat_params()[...] = self.value.flat
            model.params_changed()
            return model
        model = self.value(placement) if self.kind == "factory" else self.value
        if not isinstance(model, Model):
            raise TypeError(f"the base factory returned {type(model).__name__}, not a gozaru Model")
        return _placed(model, placement)

    # -- travelling to the runs --------------------------------------------------
    def ship(self, executor, inputs: str, placement: Placement):
        """What the runs of a grid receive as their base (``executor.transfer``): a Model shared in this process,
        the path of a checkpoint every node sees (a checkpoint is used where it is; any other base is written
        once to ``inputs/base.h5``), or a reference to BaseArrays in Ray's object store."""
        if executor.transfer == "memory":
            return self.load(placement)
        if executor.transfer == "storage":
            if self.kind == "checkpoint":
                return os.path.abspath(self.value)
            os.makedirs(inputs, exist_ok=True)
            path = os.path.join(inputs, "base.h5")
            self.load(placement).save(path)
            return os.path.abspath(path)
        model = self.load(placement)
        model.sync_to_host()
        return executor.put(BaseArrays(model.config, model.core.flat_params(), model.backend))


def _placed(model: Model, placement: Placement) -> Model:
    """``model`` computing as ``placement`` says; its backend must be the placement's (a model does not move)."""
    if model.backend != placement.backend:
        raise ValueError(f"the base model runs on {model.backend}, but the placement asks for {placement.backend}; "
                         f"give the base as a path, or make it on {placement.backend}")
    if placement.precision is not None and model.precision != placement.precision:
        model.set_precision(placement.precision)
    return model
