"""What a study is: :class:`StudySpec`, its presets, and the checks every value passes before the first run.

A spec is data (flags or a JSON file). Every field is type- and range-checked by :meth:`StudySpec.check` with a
one-line ``ValueError`` naming the field: a bool is not an int, NaN and infinities are refused, counts must be
integers, lists must not repeat a value, the matched learning rates must be positive and finite.
"""
from __future__ import annotations

import dataclasses
import json
import math

from ...engine import layers

POSITIONS = ("first", "middle", "last", "random")
TYPES = {"layers": None, "attention": ("qkv", "attn_out"), "mlp": ("mlp_gate", "mlp_up", "mlp_down"), "lora": None}
HEADS = ("trained", "frozen", "both")
MEASURES = ("adoption", "sampled_rate", "greedy_rate")   # the first is the primary measure of every verdict


@dataclasses.dataclass
class StudySpec:
    shares: tuple = ("head", 1, 2, "all")
    positions: tuple = POSITIONS
    types: tuple = ("layers", "attention", "mlp")
    head: str = "trained"         # the LM head in the partial cells: trained, frozen, or both variants
    seeds: tuple = (0, 1, 2, 3, 4)
    sweep_seeds: tuple = (100,)   # seeds of the learning-rate sweep; never evaluation seeds
    lrs: tuple = (0.002, 0.02)    # matched learning rates: every cell also runs at each of them
    sweep_factors: tuple = (0.1, 0.3, 1.0, 3.0, 10.0)   # the sweep's lrs, × the training lr (log-spaced, ≥ 5)
    sweep_widen: int = 2          # extra lrs tried beyond an edge while the best stays on it
    sweep_steps: int = 0          # steps per sweep run (0 = the training steps, so tuned lrs fit the runs)
    sweep_validation: float = 0.1  # share of the training rows held out of the sweep to pick its lr
    margin: float = 0.05          # equivalence margin of the TOST on the measures' 0–1 scale (0.05 = ±5 points)
    alpha: float = 0.05
    bootstrap: int = 1000         # nested bootstrap draws (seeds, then prompts within seed)
    samples: int = 4              # answers sampled at T = 1 per prompt for the sampled rate
    curve_every: int = 10         # steps between adoption measurements (learning curves)
    lora_rank: int = 8            # rank of the ``lora`` type's adapters
    shots: int = 2                # ござる examples in the prompt of the prompt-only floor
    notes: str = ""               # free text for the report (e.g. the sizes chosen, what was left out)

    def __post_init__(self):
        for f in ("shares", "positions", "types", "seeds", "sweep_seeds", "lrs", "sweep_factors"):
            value = getattr(self, f)
            setattr(self, f, tuple(value) if isinstance(value, (list, tuple)) else (value,))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def heads(self) -> tuple:
        return ("trained", "frozen") if self.head == "both" else (self.head,)

    @classmethod
    def from_dict(cls, d) -> "StudySpec":
        if not isinstance(d, dict):
            raise ValueError("a study definition is a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(d) - names))
        if unknown:
            raise ValueError(f"unknown study field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def load(cls, path: str) -> "StudySpec":
        return cls.from_dict(load_spec_fields(path))

    def check(self, config=None) -> "StudySpec":
        """Refuses a definition that cannot run or cannot give statistics, before any run starts."""
        _names("positions", self.positions, POSITIONS)
        _names("types", self.types, tuple(TYPES))
        if self.head not in HEADS:
            raise ValueError(f"study field head: {self.head!r} is not one of {', '.join(HEADS)}")
        _ints("seeds", self.seeds, low=0, at_least=2)
        _ints("sweep_seeds", self.sweep_seeds, low=0, at_least=1)
        both = sorted(set(self.seeds) & set(self.sweep_seeds))
        if both:
            raise ValueError(f"study field sweep_seeds: {both} are also evaluation seeds (tuning on the seeds that "
                             "are evaluated biases the tuned policy)")
        _numbers("lrs", self.lrs, at_least=0, positive=True)
        _numbers("sweep_factors", self.sweep_factors, at_least=5, positive=True)
        f = sorted(self.sweep_factors)
        ratios = [b / a for a, b in zip(f, f[1:])]
        if max(ratios) > 1.25 * min(ratios):
            raise ValueError(f"study field sweep_factors: {list(self.sweep_factors)} are not log-spaced "
                             "(the ratios of neighbours must agree within 25 %)")
        _int("sweep_widen", self.sweep_widen, 0, 10)
        _int("sweep_steps", self.sweep_steps, 0, 10 ** 7)
        _number("sweep_validation", self.sweep_validation, 0, 0.5)
        _number("margin", self.margin, 0, 1)
        _number("alpha", self.alpha, 0, 0.5)
        _int("bootstrap", self.bootstrap, 100, 10 ** 6)
        _int("samples", self.samples, 4, 1000)
        _int("curve_every", self.curve_every, 1, 10 ** 7)
        _int("lora_rank", self.lora_rank, 1, 4096)
        _int("shots", self.shots, 0, 64)
        if not isinstance(self.notes, str):
            raise ValueError(f"study field notes: text expected, got {type(self.notes).__name__}")
        if not self.shares:
            raise ValueError("study field shares: no share levels")
        for s in self.shares:
            if not (s in ("head", "all") or _is_number(s)):
                raise ValueError(f"study field shares: unknown level {s!r}: use 'head', 'all', a layer count "
                                 "or a fraction")
            if isinstance(s, float) and not (0 < s < 1):
                raise ValueError(f"study field shares: {s!r} — a fraction must lie in (0, 1); a layer count is "
                                 "an integer")
            if isinstance(s, int) and not isinstance(s, bool) and s < 1:
                raise ValueError(f"study field shares: {s!r} — a layer count is at least 1")
        if len({json.dumps(s) for s in self.shares}) < len(self.shares):
            raise ValueError(f"study field shares: {list(self.shares)} repeat a level")
        if config is not None:
            levels = [level_layers(config, s) for s in self.shares]
            if len(set(levels)) < len(levels):
                raise ValueError(f"study field shares: {list(self.shares)} repeat a level on this model ({levels})")
        return self


def level_layers(config, share) -> int | str:
    """The whole-layer count of a share level ('head' and 'all' stay as they are)."""
    L = config.num_hidden_layers
    if share in ("head", "all"):
        return share
    if isinstance(share, int):
        if not 1 <= share <= L:
            raise ValueError(f"study field shares: {share} layers, but this model has {L} layers (1..{L}; or "
                             "'head'/'all')")
        return share
    k = layers.layers_for_budget(config, share)
    reached = layers.share(config, layers.select(config, "first", layers=k)) if k else 0.0
    if k == 0 or abs(reached - share) > 0.25 * share:
        raise ValueError(f"study field shares: {share:g} — no whole-layer choice (+ head) comes near it on this "
                         f"model (closest: {k} layers = {reached:.3g}); use 'head', 'all' or a layer count")
    return k


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(name, v, low, high):
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"study field {name}: an integer is required, got {v!r}")
    if not low <= v <= high:
        raise ValueError(f"study field {name}: {v} is outside {low}..{high}")


def _number(name, v, low, high):
    """A finite number strictly between low and high."""
    if not _is_number(v):
        raise ValueError(f"study field {name}: a finite number is required, got {v!r}")
    if not low < v < high:
        raise ValueError(f"study field {name}: {v!r} is outside ({low:g}, {high:g})")


def _unique(name, values):
    seen = [json.dumps(v) for v in values]
    if len(set(seen)) < len(seen):
        raise ValueError(f"study field {name}: {list(values)} repeat a value")


def _names(name, values, known):
    bad = [v for v in values if not isinstance(v, str) or v not in known]
    if bad or not values:
        raise ValueError(f"study field {name}: unknown or missing {bad or list(values)}; choose from "
                         f"{', '.join(known)}")
    _unique(name, values)


def _ints(name, values, *, low, at_least):
    for v in values:
        _int(name, v, low, 2 ** 31 - 1)
    _unique(name, values)
    if len(values) < at_least:
        raise ValueError(f"study field {name}: at least {at_least} distinct value(s) needed, got {list(values)}")


def _numbers(name, values, *, at_least, positive):
    for v in values:
        if not _is_number(v) or (positive and v <= 0):
            raise ValueError(f"study field {name}: positive finite numbers are required, got {v!r}")
    _unique(name, [float(v) for v in values])
    if len(values) < at_least:
        raise ValueError(f"study field {name}: at least {at_least} values needed, got {list(values)}")


def load_spec_fields(path: str) -> dict:
    """The fields a study file gives (checked by name here; values by ``StudySpec.check``)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f, parse_constant=lambda c: float(c))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    try:
        StudySpec.from_dict(d)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    return d


PRESETS = {
    "default": StudySpec(),
    # The committed demo study (results/study-demo): sized to ~30 min on 2 CPU cores.
    "demo": StudySpec(shares=("head", 1, "all"), positions=("first", "last"), types=("layers",), head="trained",
                      lrs=(0.002, 0.02),
                      notes="Sized to run in about 30 minutes on 2 CPU cores: one partial level (1 layer + head), "
                      "positions first and last, whole layers, head trained. Left out of the demo (the code runs "
                      "them): 2 and 4 layers, middle and random positions, the attention, mlp and lora types, the "
                      "frozen head."),
    "quick": StudySpec(shares=("head", 1, "all"), positions=("first", "last"), types=("layers", "lora"),
                       head="trained", seeds=(0, 1), lrs=(0.004,), sweep_factors=(0.25, 0.5, 1.0, 2.0, 4.0),
                       sweep_widen=1, sweep_steps=4, bootstrap=200, curve_every=5, shots=1,
                       notes="the --quick study: a smoke test of the whole pipeline, too small to conclude from"),
}
