"""The study's design: share levels, cells (level × type × position × head) and the runs each cell needs.

Share levels: ``"head"`` (the LM head alone), an int k (k layers; + head unless the head is frozen) or a fraction
(the k whose whole layers + head come closest; refused when no k is within a quarter of the asked share), and
``"all"`` (full fine-tuning). Positions: ``first``, ``middle`` (k layers centred in the stack), ``last``,
``random`` (drawn per seed, distinct from first/middle/last and across seeds where the model has enough layers).
Types: ``layers`` (whole layers), ``attention`` (query_key_value + dense, or q/k/v/o_proj), ``mlp``
(dense_h_to_4h + dense_4h_to_h, or gate/up/down_proj), ``lora`` (rank-r adapters on the chosen layers'
matrices). Head: ``trained`` or ``frozen`` in the partial cells.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random

from ..experiment import Condition
from .spec import TYPES, StudySpec, level_layers


@dataclasses.dataclass(frozen=True)
class Cell:
    level: str        # "head", "1L", "2L", …, "all"
    type: str         # a TYPES key, or "head" / "full" for the two reference levels
    position: str     # a position, or "none" / "all"
    head: str         # "trained" or "frozen"
    layers: int = 0   # whole layers in the level (0 for head and all)

    @property
    def name(self) -> str:
        if self.type in ("head", "full"):
            return self.level
        return f"{self.level} {self.type} {self.position} head-{self.head}"


def level_name(k) -> str:
    return k if isinstance(k, str) else f"{k}L"


def cells(spec: StudySpec, config) -> list[Cell]:
    out = []
    for share in spec.shares:
        k = level_layers(config, share)
        if k == "head":
            out.append(Cell("head", "head", "none", "trained"))
        elif k == "all":
            out.append(Cell("all", "full", "all", "trained"))
        else:
            out += [Cell(level_name(k), t, p, h, k) for t in spec.types for p in spec.positions for h in spec.heads]
    return out


def random_draws(L: int, k: int, seeds) -> tuple[dict, str]:
    """Per seed, k layers drawn at random, distinct from the first, middle and last k and from the other seeds'
    draws where the model has enough k-subsets; otherwise repeats are allowed and the note says so."""
    fixed = {tuple(layer_choice(L, k, p, 0)) for p in ("first", "middle", "last")}
    available = math.comb(L, k) - len(fixed)
    distinct = available >= len(seeds)
    note = "" if distinct else (f"{k} of {L} layers: only {max(available, 0)} draws differ from first/middle/last, "
                                f"fewer than the {len(seeds)} seeds, so random draws may repeat or match them")
    taken, out = set(fixed), {}
    for seed in seeds:
        rng = random.Random(f"study-layers-{seed}-{k}")
        for _ in range(10000):
            pick = tuple(sorted(rng.sample(range(L), k)))
            if not distinct or pick not in taken:
                break
        else:   # a dense space: the first free subset in order
            pick = next(c for c in itertools.combinations(range(L), k) if c not in taken)
        taken.add(pick)
        out[seed] = list(pick)
    return out, note


def layer_choice(L: int, k: int, position: str, seed: int, seeds=None) -> list[int]:
    if position == "first":
        return list(range(k))
    if position == "last":
        return list(range(L - k, L))
    if position == "middle":
        start = (L - k) // 2
        return list(range(start, start + k))
    return random_draws(L, k, seeds if seeds is not None else (seed,))[0][seed]


def condition(spec: StudySpec, config, cell: Cell, seed: int, lr: float, name: str,
              seeds=None) -> Condition:
    """The run of ``cell`` with ``seed`` at ``lr`` as an ``experiment.Condition`` (its selection and model)."""
    if cell.type == "head":
        sel = {"kind": "head"}
    elif cell.type == "full":
        sel = {"kind": "full"}
    else:
        chosen = layer_choice(config.num_hidden_layers, cell.layers, cell.position, seed, seeds or spec.seeds)
        sel = {"kind": "layers", "layers": chosen, "train_head": cell.head == "trained"}
        if TYPES[cell.type]:
            sel["parts"] = list(TYPES[cell.type])
        if cell.type == "lora":
            sel["lora"] = {"r": spec.lora_rank}
    return Condition(name, sel, seed=seed, hparams={"seed": seed, "lr": lr}, group=cell.type,
                     position=cell.position)


def run_name(cell: Cell, lr: float, seed: int, sweep: bool = False) -> str:
    return f"{'sweep ' if sweep else ''}{cell.name} lr{lr:.3g} s{seed}"


def lr_label(lr: float) -> str:
    """A matched learning rate as the spec gives it (``lr=0.002``)."""
    return f"lr={lr:g}"


def plan_notes(spec: StudySpec, config) -> list[str]:
    notes = []
    if "random" in spec.positions:
        for c in {c.layers for c in cells(spec, config) if c.layers}:
            note = random_draws(config.num_hidden_layers, c, spec.seeds)[1]
            if note:
                notes.append(note)
    return notes
