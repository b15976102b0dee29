"""The study: how much, where and what must be trained for a style — share levels × position × type × seeds.

A :class:`StudySpec` is data (flags or a JSON file). :func:`plan` turns it into ``experiment.Condition`` s, one per
cell and seed; :func:`run_study` picks a learning rate per share level by a short sweep on a validation split,
runs every condition through ``experiment.run`` (resumable: finished runs are skipped), measures the prompt-only
floor, then computes the statistics (``gozaru.lab.stats``) and writes ``OUT/report.md`` (``gozaru.lab.report``).

Share levels: ``"head"`` (the LM head alone), an int k (k layers + head) or a fraction (the k whose whole layers
+ head come closest; refused when no k is within a quarter of the asked share), and ``"all"`` (full fine-tuning).
Positions: ``first``, ``middle`` (k layers centred in the stack), ``last``, ``random`` (drawn with the seed).
Types: ``layers`` (whole layers), ``attention`` (query_key_value + dense, or q/k/v/o_proj, of those layers), ``mlp``
(dense_h_to_4h + dense_4h_to_h, or gate/up/down_proj). The seed sets the data order and the random layer draw.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from typing import Callable

from ..data import rewrite
from ..data.dolly import as_record
from ..data.sft import format_example, sft_arrays
from ..engine import layers
from ..fileio import read_json, write_json_atomic
from .evaluate import EvalConfig, eval_loss, rate_of_texts
from .experiment import Condition, ExperimentData, run
from .generate import generate_text
from .report import write_report
from .stats import analyse
from .style import style_items
from .train import TrainConfig, Trainer

POSITIONS = ("first", "middle", "last", "random")
TYPES = {"layers": None, "attention": ("qkv", "attn_out"), "mlp": ("mlp_gate", "mlp_up", "mlp_down")}


@dataclasses.dataclass
class StudySpec:
    shares: tuple = ("head", 1, 2, 4, "all")
    positions: tuple = POSITIONS
    types: tuple = tuple(TYPES)
    seeds: tuple = (0, 1, 2, 3, 4)
    margin: float = 0.05          # equivalence margin of the TOST, in rate units (0.05 = ±5 points), set before
    alpha: float = 0.05
    lr_factors: tuple = (1.0, 3.0, 10.0)   # learning-rate candidates as multiples of the training lr
    sweep_steps: int = 10
    sweep_validation: float = 0.1          # share of the training rows held out to pick the lr
    shots: int = 2                # ござる examples in the prompt of the prompt-only floor
    bootstrap: int = 1000
    notes: str = ""               # free text for the report (e.g. the sizes chosen)

    def __post_init__(self):
        for f in ("shares", "positions", "types", "seeds", "lr_factors"):
            value = getattr(self, f)
            setattr(self, f, tuple(value) if isinstance(value, (list, tuple)) else (value,))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "StudySpec":
        if not isinstance(d, dict):
            raise ValueError("a study definition is a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown study field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def load(cls, path: str) -> "StudySpec":
        return cls.from_dict(load_spec_fields(path))

    def check(self, config=None) -> "StudySpec":
        """Refuses a definition that cannot run or cannot give statistics, before any run starts."""
        bad = [p for p in self.positions if p not in POSITIONS]
        if bad or not self.positions:
            raise ValueError(f"unknown position(s) {bad}; choose from {', '.join(POSITIONS)}")
        bad = [t for t in self.types if t not in TYPES]
        if bad or not self.types:
            raise ValueError(f"unknown type(s) {bad}; choose from {', '.join(TYPES)}")
        if len(set(self.seeds)) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ValueError(f"the statistics need at least 2 distinct integer seeds, got {list(self.seeds)}")
        if not (isinstance(self.margin, (int, float)) and 0 < self.margin < 1):
            raise ValueError(f"the equivalence margin must be in (0, 1) (rate units; 0.05 = 5 points), "
                             f"got {self.margin!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha!r}")
        if not self.lr_factors or any(not isinstance(f, (int, float)) or f <= 0 for f in self.lr_factors):
            raise ValueError(f"lr_factors must be positive numbers, got {list(self.lr_factors)}")
        if self.sweep_steps < 1 or not 0 < self.sweep_validation < 0.5 or self.bootstrap < 100 or self.shots < 0:
            raise ValueError("sweep_steps >= 1, 0 < sweep_validation < 0.5, bootstrap >= 100 and shots >= 0 "
                             "are required")
        if not self.shares:
            raise ValueError("no share levels")
        for s in self.shares:
            if not (s in ("head", "all") or isinstance(s, (int, float)) and not isinstance(s, bool)):
                raise ValueError(f"unknown share level {s!r}: use 'head', 'all', a layer count or a fraction")
        if config is not None:
            levels = [level_layers(config, s) for s in self.shares]
            if len(set(levels)) < len(levels):
                raise ValueError(f"share levels {list(self.shares)} repeat a level on this model ({levels})")
        return self


def load_spec_fields(path: str) -> dict:
    """The fields a study file gives (checked by name and type; values are checked by ``StudySpec.check``)."""
    with open(path, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    try:
        StudySpec.from_dict(d)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    return d


PRESETS = {
    "default": StudySpec(),
    "demo": StudySpec(seeds=(0, 1, 2), notes="Sized to run in about 25 minutes on 2 shared CPU cores: the demo "
                      "model, 30 fine-tuning steps per run, 3 seeds (the default is 5), 48 prompts of at most 24 new "
                      "tokens."),
    "quick": StudySpec(shares=("head", 1, "all"), positions=("first", "last"), types=("layers", "mlp"),
                       seeds=(0, 1), lr_factors=(1.0, 4.0), sweep_steps=4, bootstrap=200, shots=1,
                       notes="the --quick study: a smoke test of the whole pipeline, too small to conclude from"),
}


def level_layers(config, share) -> int | str:
    """The whole-layer count of a share level ('head' and 'all' stay as they are)."""
    L = config.num_hidden_layers
    if share in ("head", "all"):
        return share
    if isinstance(share, int):
        if not 1 <= share <= L:
            raise ValueError(f"share level {share} layers: this model has {L} layers (1..{L}; or 'head'/'all')")
        return share
    if not 0 < share < 1:
        raise ValueError(f"share level {share!r}: a fraction must be in (0, 1)")
    k = layers.layers_for_budget(config, share)
    reached = layers.share(config, layers.select(config, "first", layers=k)) if k else 0.0
    if k == 0 or abs(reached - share) > 0.25 * share:
        raise ValueError(f"share level {share:g}: no whole-layer choice (+ head) comes near it on this model "
                         f"(closest: {k} layers = {reached:.3g}); use 'head', 'all' or a layer count")
    return k


def level_name(k) -> str:
    return k if isinstance(k, str) else f"{k}L"


def layer_choice(L: int, k: int, position: str, seed: int) -> list[int]:
    if position == "first":
        return list(range(k))
    if position == "last":
        return list(range(L - k, L))
    if position == "middle":
        start = (L - k) // 2
        return list(range(start, start + k))
    return sorted(random.Random(f"study-layers-{seed}-{k}").sample(range(L), k))


def cell_selection(config, k, position: str, type_: str, seed: int) -> dict:
    if k == "head":
        return {"kind": "head"}
    if k == "all":
        return {"kind": "full"}
    sel = {"kind": "layers", "layers": layer_choice(config.num_hidden_layers, k, position, seed), "train_head": True}
    if TYPES[type_]:
        sel["parts"] = list(TYPES[type_])
    return sel


def plan(spec: StudySpec, config, lrs: dict | None = None) -> list[tuple[Condition, dict]]:
    """(condition, cell description) per run; ``lrs`` maps level names to the learning rate of that level."""
    out = []
    for share in spec.shares:
        k = level_layers(config, share)
        level = level_name(k)
        cells = [("none", "head")] if k == "head" else [("all", "full")] if k == "all" else \
            [(p, t) for t in spec.types for p in spec.positions]
        for position, type_ in cells:
            for seed in spec.seeds:
                name = f"{level} {type_} {position} s{seed}" if isinstance(k, int) else f"{level} s{seed}"
                hparams = {"seed": seed}
                if lrs:
                    hparams["lr"] = lrs[level]
                sel = cell_selection(config, k, position, type_, seed)
                cond = Condition(name, sel, seed=seed, hparams=hparams, group=type_, position=position)
                names = cond.select(config)
                meta = {"name": name, "level": level, "layers": k if isinstance(k, int) else 0, "position": position,
                        "type": type_, "seed": seed, "share": layers.share(config, names)}
                out.append((cond, meta))
    return out


# --------------------------------------------------------------------------- data
def study_data(tokenizer, train_records, held_records, *, seq_len: int, max_positions: int, style: str = "rinna",
               plain_texts=None, facts=None, n_prompts: int | None = None, log=print):
    """(ExperimentData, ござる training records) from records in the plain polite form: the answers are rewritten
    to ござる (records without a polite ending are left out); the held-out originals measure forgetting and
    the style score."""
    train = [r for r in (as_record(x) for x in train_records) if rewrite.to_gozaru(r.output) != r.output]
    held = [r for r in (as_record(x) for x in held_records) if rewrite.to_gozaru(r.output) != r.output]
    if not train or not held:
        raise ValueError("no record has a polite ending to rewrite: the study needs polite (です/ます) answers")
    goz_train = [r.replace(output=rewrite.to_gozaru(r.output)) for r in train]
    goz_held = [r.replace(output=rewrite.to_gozaru(r.output)) for r in held]
    data = ExperimentData.from_records(tokenizer, goz_train, goz_held, seq_len=seq_len, style=style,
                                       plain_texts=plain_texts, facts=facts, n_prompts=n_prompts)
    data.original = sft_arrays(held, tokenizer, seq_len, style=style)
    data.style = style_items(tokenizer, held, style=style, max_len=max_positions)
    if data.style.dropped:
        data.dropped["style items"] = data.style.dropped
    for kind, n in data.dropped.items():
        log(f"{kind}: {n}")
    return data, goz_train


# --------------------------------------------------------------------------- learning-rate sweep
def lr_sweep(spec: StudySpec, base, data: ExperimentData, train: TrainConfig, out: str, log=print) -> dict:
    """Per share level, trains whole layers at the middle of the stack (seed 0) for ``sweep_steps`` steps at
    each ``lr × factor`` on all but a validation split of the training rows, and keeps the lr with the lowest
    validation loss. Cached in ``out/lr_sweep.json`` (with every candidate's loss)."""
    path = os.path.join(out, "lr_sweep.json")
    key = {"spec": {k: spec.to_dict()[k] for k in ("shares", "lr_factors", "sweep_steps", "sweep_validation")},
           "train": {k: v for k, v in train.to_dict().items() if k != "progress"}}
    if os.path.exists(path):
        saved = read_json(path)
        if saved.get("key") == json.loads(json.dumps(key)):
            return saved
    rows = data.train
    n_val = max(1, int(round(spec.sweep_validation * len(rows))))
    fit_rows, val_rows = rows.take(slice(0, len(rows) - n_val)), rows.take(slice(len(rows) - n_val, len(rows)))
    config = dataclasses.replace(train, steps=spec.sweep_steps, warmup_steps=min(train.warmup_steps,
                                 max(1, spec.sweep_steps // 5)), progress=False, checkpoint_every=0)
    t0 = time.perf_counter()
    table, chosen = [], {}
    for share in spec.shares:
        k = level_layers(base.config, share)
        names = layers.select(base.config, **cell_selection(base.config, k, "middle", "layers", 0))
        best = None
        for factor in spec.lr_factors:
            lr = train.lr * factor
            model = base.clone()
            model.train_only(sorted(names))
            trainer = Trainer(model, fit_rows, dataclasses.replace(config, lr=lr), save_at_end=False)
            trainer.fit()
            loss = eval_loss(trainer.model, val_rows)
            table.append({"level": level_name(k), "factor": factor, "lr": lr, "val_loss": loss})
            if loss == loss and (best is None or loss < best[1]):
                best = (lr, loss)
        chosen[level_name(k)] = best[0] if best else train.lr
        log(f"lr sweep {level_name(k)}: " + ", ".join(f"{r['lr']:.3g} → {r['val_loss']:.3f}" for r in table
                                                       if r["level"] == level_name(k)) +
            f"; chosen {chosen[level_name(k)]:.3g}")
    result = {"key": key, "chosen": chosen, "table": table, "n_validation_rows": n_val,
              "seconds": time.perf_counter() - t0}
    write_json_atomic(path, result)
    return result


# --------------------------------------------------------------------------- prompt-only floor
def prompt_floor(base, data: ExperimentData, examples, shots: int, eval_config: EvalConfig, out: str) -> dict:
    """The base model, untrained, with ``shots`` ござる examples (prompt + answer) before each held-out prompt:
    what the prompt alone achieves. Cached in ``out/floor.json``."""
    path = os.path.join(out, "floor.json")
    if os.path.exists(path):
        saved = read_json(path)
        if saved.get("shots") == shots and saved.get("n") == len(data.prompts):
            return saved
    examples = sorted(examples, key=lambda r: len(r.output))[:shots]   # the shortest, to leave room
    context = "".join(p + a + "<NL>" for p, a in (format_example(r) for r in examples))
    limit = base.config.max_position_embeddings - 1
    tok = data.tokenizer
    prompts = [context + p if len(tok.encode(context + p)) < limit - 4 else p for p in data.prompts]
    answers = generate_text(base, tok, prompts, **eval_config.generation())
    rate = rate_of_texts(answers)
    result = {"shots": shots, "n": len(prompts), "rate": rate.rate, "low": rate.low, "high": rate.high,
              "k": rate.k, "with_context": sum(p != q for p, q in zip(prompts, data.prompts)),
              "outcomes": [int(rewrite.GOZARU in a) for a in answers], "answers": answers}
    write_json_atomic(path, result)
    return result


# --------------------------------------------------------------------------- the whole study
def run_study(spec: StudySpec, base, data: ExperimentData, out: str, *, train: TrainConfig,
              eval: EvalConfig | None = None, examples=(), sizes: str = "", progress: bool = False,
              report: bool = True, data_key: dict | None = None, log: Callable[[str], None] = print,
              executor=None, tracker=None):
    """Runs (or continues) the study into ``out`` and returns its ``gozaru.lab.stats.StudyStats``; ``examples``
    are ござる training records (the prompt-only floor shows ``spec.shots`` of them); ``sizes`` describes the
    chosen sizes for the report; ``data_key`` (JSON-able) names the data, so a folder made from other data or
    other measurement settings is refused rather than mixed. ``executor`` runs the fine-tunes (default: in
    this process; ``gozaru.lab.executor.RayExecutor`` spreads them over a cluster); ``tracker``
    (``gozaru.lab.tracking``) gets one tracked run per cell and seed."""
    eval_config = eval or EvalConfig()
    spec.check(base.config)
    os.makedirs(out, exist_ok=True)
    _check_folder(out, spec, train, {"data": data_key or {}, "eval": dataclasses.asdict(eval_config)})
    timing = _Timing(out)
    with timing("sweep"):
        sweep = lr_sweep(spec, base, data, train, out, log)
    planned = plan(spec, base.config, sweep["chosen"])
    log(f"study: {len(planned)} runs ({len(spec.seeds)} seeds), learning rates "
        + ", ".join(f"{k} {v:.3g}" for k, v in sweep["chosen"].items()))
    write_json_atomic(os.path.join(out, "plan.json"), [m for _, m in planned])
    with timing("runs"):
        results = run([c for c, _ in planned], base, data, out, train=train, eval=eval_config, progress=progress,
                      log=log, executor=executor, tracker=tracker)
    with timing("floor"):
        floor = prompt_floor(base, data, examples, spec.shots, eval_config, out)
    t0 = time.perf_counter()
    stats = analyse(spec, out, [m for _, m in planned], floor)
    timing.add("stats", time.perf_counter() - t0)
    if report:
        t0 = time.perf_counter()
        path = write_report(spec, out, stats, sweep, floor, data.dropped, timing.seconds, sizes)
        timing.add("report", time.perf_counter() - t0)
        log(f"report: {path}")
    timing.save()
    del results
    return stats


def _check_folder(out: str, spec: StudySpec, train: TrainConfig, data_key: dict):
    """One folder holds one study; finished runs of the same definition, data and settings are reused."""
    path = os.path.join(out, "study.json")
    mine = {"spec": spec.to_dict(), "train": {k: v for k, v in train.to_dict().items() if k != "progress"},
            "data": data_key}
    mine = json.loads(json.dumps(mine))
    if os.path.exists(path):
        saved = read_json(path)
        for part in ("spec", "train", "data"):
            if part not in saved:   # a folder from before this part was recorded
                continue
            a = {k: v for k, v in saved.get(part, {}).items() if k != "notes"}
            b = {k: v for k, v in mine[part].items() if k != "notes"}
            if a != b:
                changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise ValueError(f"{out} holds a study with another {part} ({', '.join(map(str, changed))} "
                                 f"differ); pick another --out")
    write_json_atomic(path, mine)


class _Timing:
    """Seconds spent per phase, added up over every invocation that continued the study (``timing.json``)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, "timing.json")
        self.seconds = read_json(self.path) if os.path.exists(self.path) else {}

    def add(self, phase: str, seconds: float):
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def __call__(self, phase: str):
        timing = self

        class _Span:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timing.add(phase, time.perf_counter() - self.t0)
                timing.save()
        return _Span()

    def save(self):
        write_json_atomic(self.path, self.seconds)


study = run_study   # gozaru.lab.study.study(spec, base, data, out, train=...)
