"""The grid of fine-tuning conditions (which tensors are trained) and a resumable runner.

``run(grid, base, data, out)`` trains every condition from the same base, evaluates it and keeps, per run,
``out/runs/<slug>.h5`` (the trained model) and ``out/runs/<slug>.json`` (its results row and details); the table
``out/results.csv`` is rebuilt from those records after each run. A record is written atomically and last, so a
run killed at any moment is either finished (skipped next time) or not (continued from its periodic checkpoint
``partial/<slug>.h5`` or restarted): rerunning the same call finishes the grid with every condition exactly once.

``run`` is the driver (plans, submits, collects, writes results.csv); each run is a task (``gozaru.lab.task``)
that an executor (``gozaru.lab.executor``) runs in this process or on a Ray cluster.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Callable, Iterable, Sequence

from ..engine import layers, lora
from ..engine.placement import Placement
from ..fileio import read_json, write_text_atomic
from .evaluate import EvalConfig
from .executor import LocalExecutor, error_line
from .progress import progress_bar
from .experiment_data import ExperimentData
from .source import BaseSource
from .task import BASE_NAME, RunSpec, definition_difference, run_paths, run_task, sources, train_overrides
from .train import TrainConfig

RESULT_COLUMNS = (
    "name", "group", "position", "budget", "seed", "trainable_params", "trainable_pct", "steps",
    "gozaru_rate", "rate_low", "rate_high", "n_prompts", "ends_rate", "eval_loss", "plain_loss", "forgetting",
    "plain_forgetting", "orig_loss", "adoption", "suppression", "sampled_rate", "fact_recall", "train_loss",
    "train_seconds", "tokens_seen", "checkpoint",
)


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

    @property
    def lora(self) -> dict | None:
        """LoRA settings (``{"r": 8, "alpha": 16, "rslora": False, "head": False}``) or None for full weights."""
        v = self.selection.get("lora")
        if v is not None and not isinstance(v, dict):
            raise ValueError(f"condition {self.name!r}: lora must be a dict such as {{'r': 8}}, got {v!r}")
        return v

    def select(self, config) -> set[str]:
        """The tensor names this condition trains (LoRA: adapts) on a model of ``config``."""
        kwargs = {k: v for k, v in self.selection.items() if k != "lora"}
        kwargs.setdefault("seed", self.seed)
        return set(layers.select(config, **kwargs))

    def model_for(self, base, names: set[str]):
        """A copy of ``base`` training ``names``; with LoRA, adapters on the selected matrix weights (the head
        only with lora["head"]; otherwise a selected head trains in full) and the base frozen."""
        opts = self.lora
        if opts is None:
            model = base.clone()
            model.train_only(sorted(names))
            return model
        unknown = set(opts) - {"r", "alpha", "rslora", "head"}
        if unknown:
            raise ValueError(f"condition {self.name!r}: unknown lora setting(s) {', '.join(sorted(unknown))}")
        r = opts.get("r", 8)
        head = "embed_out.weight"
        adapted = [n for n in names if n != head or opts.get("head")]
        model = lora.attach(base, names=adapted, r=r, alpha=opts.get("alpha", 2 * r), rslora=opts.get("rslora", False),
                            seed=self.seed)
        if head in names and not opts.get("head"):
            model.set_trainable(head, True)
        return model

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
    items = read_json(path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of conditions")
    bad = [i for i, d in enumerate(items) if not isinstance(d, dict)]
    if bad:
        raise ValueError(f"{path}: item {bad[0]} is a {type(items[bad[0]]).__name__}, not an object of condition "
                         "fields such as {\"name\": ..., \"selection\": {...}}")
    conditions = []
    for i, d in enumerate(items):
        try:
            conditions.append(Condition.from_dict(d))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: item {i}: {e}") from None
    return conditions


# --------------------------------------------------------------------------- the driver
class RunsFailed(RuntimeError):
    """Some runs of a grid failed; the others finished and are in results.csv. ``failed``: name -> error line."""

    def __init__(self, failed: dict[str, str]):
        self.failed = dict(failed)
        super().__init__(f"{len(failed)} run(s) failed: " + "; ".join(f"{n} ({e})" for n, e in failed.items()))


def run(grid: Iterable[Condition], base, data: ExperimentData, out: str = "runs/experiment", *,
        train: TrainConfig | dict | None = None, eval: EvalConfig | None = None, include_base: bool = True,
        progress: bool = True, log: Callable[[str], None] | None = print, executor=None,
        placement: Placement | None = None, tracker=None):
    """Trains and evaluates every condition from ``base`` (anything ``BaseSource.of`` takes: a checkpoint path, an
    HF folder or Hub id, a Model, a factory); returns the results table
    (a pandas DataFrame, also written to ``out/results.csv``). Finished runs are skipped, so rerunning after an
    interruption continues where it stopped.

    This is the driver: it plans the runs not done yet, hands them to ``executor`` (``gozaru.lab.executor``:
    in this process by default, or a ``RayExecutor``), reports each as it lands and is the only writer of
    results.csv; each run writes its own files (``run_task``). A failed run does not stop the others; the
    driver raises ``RunsFailed`` naming the failed ones at the end. ``placement`` (backend, precision, threads)
    is where and how every run computes: default, a Model base's own placement, else the default one; an
    executor's threads per run (Ray's cpus_per_run) replace its threads. ``tracker`` (``gozaru.lab.tracking``:
    TensorBoard, MLflow) gets one tracked run per condition trained: its steps, then its evaluation."""
    grid = list(grid)
    _check_unique(grid)
    train_config = train if isinstance(train, TrainConfig) else TrainConfig(**(train or {}))
    eval_config = eval or EvalConfig()
    runs_dir = os.path.abspath(os.path.join(out, "runs"))  # absolute: tasks may run in other folders
    os.makedirs(runs_dir, exist_ok=True)
    say = log or (lambda s: None)
    executor = executor or LocalExecutor()
    source, placement = _source_and_placement(base, placement)
    _fit_data(source, data, say)
    done, todo = _finished_runs(grid, runs_dir, train_config, say)
    base_path = os.path.join(runs_dir, BASE_NAME + ".json")
    base_record = read_json(base_path) if os.path.exists(base_path) else None
    failed, first_error = {}, None
    if todo or base_record is None:
        base_src, data_src = sources(source, data, out, executor, placement)
        spec = functools.partial(RunSpec, train=train_config, eval=eval_config, runs_dir=runs_dir,
                                 placement=Placement.of(placement, threads=executor.threads),
                                 progress=progress and not executor.shows_progress, tracker=tracker)
        if base_record is None:
            base_record = _run_base(executor, spec(None), base_src, data_src, say)
        plain_before = base_record["row"]["plain_loss"]
        orig_before = base_record["row"].get("orig_loss")
        calls = [(spec(grid[i], plain_before=plain_before, orig_before=orig_before), base_src, data_src)
                 for i in todo]
        failed, first_error = _collect(executor, calls, todo, grid, done, base_record, include_base, out,
                                       progress, log, say)
    records = _ordered(done, base_record, include_base)
    _write_table(records, out)
    if failed:
        raise RunsFailed(failed) from first_error
    return results_frame(records, out)


def _fit_data(source: BaseSource, data: ExperimentData, say) -> None:
    """Real data may hold prompts longer than the base's positions: left out and counted, never a crash."""
    base_config = source.config()
    if data.tokenizer is not None:
        data.tokenizer.check_model(base_config, "the base model")
    data.drop_long(base_config.max_position_embeddings, say)


def _finished_runs(grid: list[Condition], runs_dir: str, train_config: TrainConfig, say):
    """({grid index: record} of the runs finished before, checked to be the same runs, [grid indices to run])."""
    done: dict[int, dict] = {}
    todo: list[int] = []
    for i, cond in enumerate(grid):
        train_overrides(cond.hparams)  # a bad hyper-parameter fails here, before any run starts
        record_path = run_paths(runs_dir, cond.slug)[1]
        if os.path.exists(record_path):
            done[i] = read_json(record_path)
            _check_same_run(done[i], cond, train_config, record_path)
            say(f"[{i + 1}/{len(grid)}] {cond.name}: done before, skipped")
        else:
            todo.append(i)
    return done, todo


def _run_base(executor, spec: RunSpec, base_src, data_src, say) -> dict:
    """Evaluates the base itself (the reference row every condition is compared with); its record."""
    (first,) = executor.map(run_task, [(spec, base_src, data_src)])
    if first.error is not None:
        raise first.error
    record = first.value[0]
    r = record["row"]
    say(f"base: ござる-rate {r['gozaru_rate']:.2f} [{r['rate_low']:.2f}, {r['rate_high']:.2f}], "
        f"eval loss {fmt(r['eval_loss'])}, plain loss {fmt(r['plain_loss'])}")
    return record


def _source_and_placement(base, placement: Placement | None) -> tuple[BaseSource, Placement]:
    """The base resolved once (a factory is called here, and its model shared by the runs as any Model base) and
    the runs' placement: the one given, else a Model base's own, else the default."""
    source = BaseSource.of(base)
    placement = placement or source.placement() or Placement()
    if source.kind == "factory":
        source = BaseSource.of(source.load(placement))
    return source, placement


def _collect(executor, calls, todo, grid, done, base_record, include_base, out, progress, log, say):
    """Submits the runs, reports each as it lands (progress bar: done / running / failed, ETA) and rewrites
    results.csv after each; returns ({name: error line} of the failed runs, the first failure)."""
    bar = progress_bar(total=len(calls), desc="runs", unit="run") if progress and executor.shows_progress \
        and calls else None
    emit = bar.write if bar is not None and log is print else say
    slots = executor.slots() if bar is not None else 1
    if bar is not None:  # "running" is what the cluster holds at once of what is left: Ray queues the rest
        bar.set_postfix(running=min(len(calls), slots), failed=0)
    failed: dict[str, str] = {}
    first_error = None
    try:
        for finished, d in enumerate(executor.map(run_task, calls), start=1):
            i = todo[d.index]
            cond = grid[i]
            if d.error is not None:
                failed[cond.name] = error_line(d.error)
                first_error = first_error or d.error
                emit(f"[{i + 1}/{len(grid)}] {cond.name}: FAILED: {failed[cond.name]}")
            else:
                done[i], seconds = d.value
                r = done[i]["row"]
                emit(f"[{i + 1}/{len(grid)}] {cond.name}: ござる-rate {r['gozaru_rate']:.2f} "
                     f"[{r['rate_low']:.2f}, {r['rate_high']:.2f}], eval loss {fmt(r['eval_loss'])}, "
                     f"forgetting {fmt(r['forgetting'], '+.3f')}, trained {r['trainable_pct']:.1f}% ({seconds:.1f} s)")
                _write_table(_ordered(done, base_record, include_base), out)
            if bar is not None:
                bar.set_postfix(running=min(len(calls) - finished, slots), failed=len(failed), refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return failed, first_error


def _ordered(done: dict[int, dict], base_record: dict, include_base: bool) -> list[dict]:
    """Records in grid order (base first), whatever order the runs finished in."""
    return ([base_record] if include_base else []) + [done[i] for i in sorted(done)]


def fmt(value, spec: str = ".3f", missing: str = "—") -> str:
    """A number for tables and logs; a measurement that was not made (NaN, None) prints as ``missing``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return missing
    return missing if value != value else format(value, spec)


def _check_same_run(record: dict, cond: Condition, train_config: TrainConfig, path: str):
    """A finished run is only reused for the same condition and training settings (task.definition_difference)."""
    expected = dataclasses.replace(train_config, **train_overrides(cond.hparams))
    diff = definition_difference(record.get("condition"), record.get("train_config"), cond, expected)
    if diff:
        raise ValueError(f"{path}: made for another definition or other training settings of condition "
                         f"{cond.name!r} ({diff}); give the condition another name, or delete its files in "
                         f"{os.path.dirname(path)} to run it again")


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
