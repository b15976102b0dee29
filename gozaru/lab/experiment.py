"""The grid of fine-tuning conditions (which tensors are trained) and a resumable runner.

``run(grid, base, data, out)`` trains every condition from the same base, evaluates it and keeps, per run,
``out/runs/<slug>.h5`` (the trained model) and ``out/runs/<slug>.json`` (its results row and details); the table
``out/results.csv`` is rebuilt from those records after each run. A record is written atomically and last, so a
run killed at any moment is either finished (skipped next time) or not (continued from its periodic checkpoint
``<slug>.partial.h5`` or restarted): rerunning the same call finishes the grid with every condition exactly once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any, Callable, Iterable, Sequence

from .. import data as gzdata
from ..data.rows import Rows, as_rows
from ..engine import layers
from ..engine.checkpoint import load
from ..fileio import read_json, write_json_atomic, write_text_atomic
from .evaluate import EvalConfig, evaluate, weight_change
from .record import RunRecord
from .train import TrainConfig, Trainer

RESULT_COLUMNS = (
    "name", "group", "position", "budget", "seed", "trainable_params", "trainable_pct", "steps",
    "gozaru_rate", "rate_low", "rate_high", "n_prompts", "ends_rate", "eval_loss", "plain_loss", "forgetting",
    "fact_recall", "train_loss", "train_seconds", "tokens_seen", "checkpoint",
)
BASE_NAME = "base"


# --------------------------------------------------------------------------- conditions
@dataclasses.dataclass
class Condition:
    """One fine-tuning run: a name, which tensors train (keyword arguments of ``gozaru.layers.select``), the
    seed of the layer choice (random kinds), and training hyper-parameters that override the grid's."""
    name: str
    selection: dict
    seed: int = 0
    hparams: dict = dataclasses.field(default_factory=dict)
    group: str = ""      # plot grouping by type: full / mlp / non_mlp / first / last / random / custom
    position: str = ""   # plot grouping by position: all / first / last / random

    def __post_init__(self):
        if not self.name:
            raise ValueError("a condition needs a name")
        self.selection = dict(self.selection)
        self.group = self.group or str(self.selection.get("kind", "custom"))
        self.position = self.position or _position_of(self.group)

    @property
    def slug(self) -> str:
        """File-name form of the name (``first 5%`` -> ``first-5pct``)."""
        s = self.name.replace("%", "pct").replace("+", "-plus-")
        s = re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-").lower()
        return re.sub(r"-+", "-", s) or "run"

    @property
    def budget(self) -> float:
        return float(self.selection.get("budget") or float("nan"))

    def select(self, config) -> set[str]:
        """The tensor names this condition trains on a model of ``config``."""
        kwargs = dict(self.selection)
        kwargs.setdefault("seed", self.seed)
        return set(layers.select(config, **kwargs))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Condition":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"condition {d.get('name', '?')!r}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**d)


def _position_of(group: str) -> str:
    return {"first": "first", "last": "last", "random": "random"}.get(group, "all")


def _pct(budget: float) -> str:
    return f"{budget * 100:g}%"


def seed_grid(seeds: Sequence[int] = (0, 1, 2), budgets: Sequence[float] = (0.05, 0.10), **hparams) -> list[Condition]:
    """The reference experiment: full FT; MLP + head; everything but the MLP + head; first and last layers at each
    budget (share of all weights); random layers at each budget × ``seeds``. With the defaults, 13 conditions.
    ``hparams`` (e.g. ``lr=3e-4``) apply to every condition."""
    grid = [
        Condition("full", {"kind": "full"}, hparams=dict(hparams)),
        Condition("mlp+head", {"kind": "mlp", "train_head": True}, group="mlp", hparams=dict(hparams)),
        Condition("non_mlp+head", {"kind": "non_mlp", "train_head": True}, group="non_mlp", hparams=dict(hparams)),
    ]
    for position in ("first", "last"):
        for b in budgets:
            grid.append(Condition(f"{position} {_pct(b)}", {"kind": position, "budget": b}, hparams=dict(hparams)))
    for b in budgets:
        for s in seeds:
            grid.append(Condition(f"random {_pct(b)} seed{s}", {"kind": "random", "budget": b}, seed=s,
                                  hparams=dict(hparams)))
    return grid


def load_grid(path: str) -> list[Condition]:
    """A user grid from a JSON file: a list of Condition fields, e.g.
    ``[{"name": "last 2", "selection": {"kind": "last", "layers": 2}}]``."""
    with open(path, encoding="utf-8") as f:
        items = json.load(f)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of conditions")
    return [Condition.from_dict(d) for d in items]


# --------------------------------------------------------------------------- data of an experiment
@dataclasses.dataclass
class ExperimentData:
    """Everything ``run`` trains and measures on.

    train: SFT rows in the target style (ござる answers), response-only targets; eval: held-out SFT rows (eval
    loss); prompts: held-out prompts in the chat format (generated answers give the ござる-rate); plain: plain-text
    rows (forgetting); facts: ``(prompt, expected answer)`` pairs (fact recall)."""
    tokenizer: Any
    train: Rows | None
    prompts: list[str]
    eval: Rows | None = None
    plain: Rows | None = None
    facts: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.train = as_rows(self.train) if self.train is not None else None
        self.eval = as_rows(self.eval) if self.eval is not None else None
        self.plain = as_rows(self.plain) if self.plain is not None else None
        self.prompts = list(self.prompts)

    @classmethod
    def from_records(cls, tokenizer, train_records, eval_records, *, seq_len: int = 256, style: str = "rinna",
                     plain_texts: Sequence[str] | None = None, facts: Sequence | None = None,
                     n_prompts: int | None = None) -> "ExperimentData":
        """Builds the arrays from dolly-layout records (answers already in the target style, e.g. through
        ``gozaru.data.to_gozaru_dataset``): train rows, held-out eval rows and prompts from ``eval_records``
        (the first ``n_prompts`` of them), plain-text rows and ``(question, answer)`` facts formatted as prompts."""
        data = gzdata
        eval_records = list(eval_records)
        prompt_records = eval_records[:n_prompts] if n_prompts else eval_records
        plain = data.lm_arrays(plain_texts, tokenizer, seq_len) if plain_texts else None
        fact_prompts = [(data.format_prompt({"instruction": q, "output": a}, style), a)
                        for q, a in (_fact_pair(f) for f in (facts or []))]
        train_records = list(train_records)
        train = data.sft_arrays(train_records, tokenizer, seq_len, style=style) if train_records else None
        return cls(tokenizer=tokenizer, train=train,
                   eval=data.sft_arrays(eval_records, tokenizer, seq_len, style=style) if eval_records else None,
                   prompts=[data.format_prompt(r, style) for r in prompt_records], plain=plain, facts=fact_prompts)


def _fact_pair(f) -> tuple[str, str]:
    """(question, expected answer) from a pair or a ``gozaru.data.FactQuestion``."""
    if isinstance(f, (tuple, list)):
        return str(f[0]), str(f[1])
    return str(f.question), str(f.answer)


# --------------------------------------------------------------------------- the runner
def run(grid: Iterable[Condition], base, data: ExperimentData, out: str = "runs/experiment", *,
        train: TrainConfig | dict | None = None, eval: EvalConfig | None = None, include_base: bool = True,
        progress: bool = True, log: Callable[[str], None] | None = print):
    """Trains and evaluates every condition from ``base`` (a Model or checkpoint path); returns the results table
    (a pandas DataFrame, also written to ``out/results.csv``). Finished runs are skipped, so rerunning after an
    interruption continues where it stopped."""
    grid = list(grid)
    _check_unique(grid)
    base = _as_model(base)
    train_config = train if isinstance(train, TrainConfig) else TrainConfig(**(train or {}))
    eval_config = eval or EvalConfig()
    runs_dir = os.path.join(out, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    say = log or (lambda s: None)

    base_record = _base_record(base, data, eval_config, runs_dir, say)
    plain_before = base_record["row"]["plain_loss"]
    records = [base_record] if include_base else []
    for i, cond in enumerate(grid):
        record_path = os.path.join(runs_dir, cond.slug + ".json")
        if os.path.exists(record_path):
            record = read_json(record_path)
            _check_same_run(record, cond, train_config, record_path)
            records.append(record)
            say(f"[{i + 1}/{len(grid)}] {cond.name}: done before, skipped")
        else:
            t0 = time.perf_counter()
            record = _run_condition(cond, base, data, train_config, eval_config, runs_dir, plain_before, progress)
            records.append(record)
            r = record["row"]
            say(f"[{i + 1}/{len(grid)}] {cond.name}: ござる-rate {r['gozaru_rate']:.2f} "
                f"[{r['rate_low']:.2f}, {r['rate_high']:.2f}], eval loss {r['eval_loss']:.3f}, "
                f"forgetting {r['forgetting']:+.3f}, trained {r['trainable_pct']:.1f}% "
                f"({time.perf_counter() - t0:.1f} s)")
        _write_table(records, out)
    return results_frame(records, out)


def _base_record(base, data, eval_config, runs_dir, say) -> dict:
    path = os.path.join(runs_dir, BASE_NAME + ".json")
    if os.path.exists(path):
        return read_json(path)
    row = evaluate(base, data, eval_config)
    answers = row.pop("answers")
    fact_answers = row.pop("fact_answers")
    row.update(name=BASE_NAME, group="base", position="none", budget=float("nan"), seed=0, trainable_params=0,
               trainable_pct=0.0, steps=0, train_loss=float("nan"), train_seconds=0.0, tokens_seen=0, checkpoint="")
    record = {"row": row, "answers": answers, "fact_answers": fact_answers}
    write_json_atomic(path, record)
    say(f"base: ござる-rate {row['gozaru_rate']:.2f} [{row['rate_low']:.2f}, {row['rate_high']:.2f}], "
        f"eval loss {row['eval_loss']:.3f}, plain loss {row['plain_loss']:.3f}")
    return record


def _run_condition(cond: Condition, base, data, train_config, eval_config, runs_dir, plain_before, progress) -> dict:
    final = os.path.join(runs_dir, cond.slug + ".h5")
    partial = os.path.join(runs_dir, cond.slug + ".partial.h5")
    names = cond.select(base.config)
    if not names:
        raise ValueError(f"condition {cond.name!r} selects no tensors")
    if os.path.exists(final):   # trained, but killed before its record was written
        model, _, info = load(final, backend=base.backend, precision=base.precision)
        record = RunRecord.from_payload(info.get("extra"), final)
        if record is None:
            raise ValueError(f"{final}: no run record; delete the file to train condition {cond.name!r} again")
    else:
        config = dataclasses.replace(train_config, progress=progress and train_config.progress,
                                     **_train_overrides(cond.hparams))
        common = dict(config=config, checkpoint=partial, eval_data=data.eval, save_at_end=False)
        if os.path.exists(partial):
            trainer = Trainer(None, data.train, resume=partial, backend=base.backend, precision=base.precision,
                              **common)
        else:
            model = base.clone()
            model.train_only(sorted(names))
            trainer = Trainer(model, data.train, **common)
        trainer.fit()
        model = trainer.model
        record = dataclasses.replace(trainer.run_record(), condition=cond.to_dict(), trainable=sorted(names))
        model.save(final, step=trainer.step, tokens_seen=trainer.tokens_seen, extra=record.to_bytes())
        if os.path.exists(partial):
            os.remove(partial)
    row = evaluate(model, data, eval_config, plain_loss_before=plain_before)
    answers = row.pop("answers")
    fact_answers = row.pop("fact_answers")
    details = {"condition": record.condition, "history": record.history, "eval_history": record.eval_history,
               "grad_norms": record.mean_grad_norms(), "train_config": record.train_config,
               "trainable": record.trainable}
    history = record.history
    total = base.num_params
    trained = sum(int(base.params[n].size) for n in names)
    row.update(name=cond.name, group=cond.group, position=cond.position, budget=cond.budget, seed=cond.seed,
               trainable_params=trained, trainable_pct=100.0 * trained / total, steps=len(history),
               train_loss=_final_loss(history), train_seconds=sum(h.get("seconds", 0.0) for h in history),
               tokens_seen=history[-1]["tokens"] if history else 0, checkpoint=os.path.relpath(final, runs_dir))
    change = weight_change(base, model)
    record = {"row": row, "answers": answers, "fact_answers": fact_answers, **details,
              "weight_change": change.to_dict(orient="records")}
    write_json_atomic(os.path.join(runs_dir, cond.slug + ".json"), record)
    return record


def _check_same_run(record: dict, cond: Condition, train_config: TrainConfig, path: str):
    """A finished run is only reused for the same condition and training settings (progress bars aside)."""
    def comparable(d: dict) -> dict:
        return {k: v for k, v in d.items() if k != "progress"}

    expected = dataclasses.replace(train_config, **_train_overrides(cond.hparams)).to_dict()
    saved_cond, saved_train = record.get("condition"), record.get("train_config")
    if saved_cond is not None and json.loads(json.dumps(cond.to_dict())) != saved_cond or \
            saved_train is not None and comparable(json.loads(json.dumps(expected))) != comparable(saved_train):
        raise ValueError(f"{path} was made with another definition or other training settings of condition "
                         f"{cond.name!r}; give the condition another name, or delete its files in "
                         f"{os.path.dirname(path)} to run it again")


def _train_overrides(hparams: dict) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(hparams) - names
    if unknown:
        raise ValueError(f"unknown training hyper-parameter(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(sorted(names))}")
    return dict(hparams)


def _final_loss(history: list[dict], window: int = 10) -> float:
    """Mean training loss over the last steps (single steps are noisy)."""
    tail = [h["loss"] for h in history[-window:]]
    return sum(tail) / len(tail) if tail else float("nan")


# --------------------------------------------------------------------------- results on disk
def results_frame(records: list[dict], out: str | None = None):
    import pandas as pd
    frame = pd.DataFrame([r["row"] for r in records])
    cols = [c for c in RESULT_COLUMNS if c in frame.columns]
    frame = frame[cols + [c for c in frame.columns if c not in cols]]
    if out is not None:
        frame.attrs["out"] = os.fspath(out)
    return frame


def load_results(out: str):
    """The results table of an experiment folder (``out/results.csv``)."""
    import pandas as pd
    frame = pd.read_csv(os.path.join(out, "results.csv"))
    frame.attrs["out"] = os.fspath(out)
    return frame


def load_record(out: str, name: str) -> dict:
    """The full record of one run (row, loss history, answers, weight change, gradient norms) by name or slug."""
    slug = name if os.path.exists(os.path.join(out, "runs", name + ".json")) else Condition(name, {}).slug
    return read_json(os.path.join(out, "runs", slug + ".json"))


def weight_change_frame(out: str, name: str):
    """Per-tensor ‖ΔW‖/‖W‖ of one run as a DataFrame (see ``gozaru.evaluate.change_grid``)."""
    import pandas as pd
    return pd.DataFrame.from_records(load_record(out, name)["weight_change"])


def grad_norms_frame(out: str, name: str):
    """Mean per-tensor gradient norms seen while training one run (DataFrame; NaN for frozen tensors), with
    the heatmap row/kind its weight-change table gives each tensor."""
    import pandas as pd
    record = load_record(out, name)
    norms = record.get("grad_norms", {})
    return pd.DataFrame.from_records([
        {"name": w["name"], "row": w["row"], "kind": w["kind"], "grad_norm": float(norms.get(w["name"], "nan"))}
        for w in record.get("weight_change", [])])


def _write_table(records: list[dict], out: str):
    frame = results_frame(records)
    write_text_atomic(os.path.join(out, "results.csv"), frame.to_csv(index=False))


def _check_unique(grid: list[Condition]):
    seen: dict[str, str] = {}
    for c in grid:
        if c.slug == BASE_NAME or c.slug in seen:
            raise ValueError(f"condition {c.name!r} clashes with {seen.get(c.slug, BASE_NAME)!r} "
                             f"(file name {c.slug!r}); give it another name")
        seen[c.slug] = c.name


def _as_model(base):
    if isinstance(base, (str, os.PathLike)):
        return load(os.fspath(base))[0]
    return base
