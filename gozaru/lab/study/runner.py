"""Runs (or continues) a study into a folder and renders its report.

1. **Matched lrs.** The base's measures, the prompt-only floor, then every cell × seed at each matched lr of
   ``spec.lrs`` (they need no sweep, so a study stopped early already holds whole comparisons).
2. **Sweep.** Per cell, ``spec.sweep_factors`` × the training lr (log-spaced) on the sweep seeds (never
   evaluation seeds), each trained on all but the last ``sweep_validation`` share of the training rows; the lr
   with the lowest mean validation loss is the cell's tuned lr. While the best lies on an edge, one more lr
   beyond that edge is tried (at most ``sweep_widen`` times); a cell whose optimum stays on an edge is not
   reported at the tuned policy (``sweep.json`` and the report say so).
3. **Tuned runs.** Every cell × seed at its tuned lr (a matched run serves both policies when the values
   agree).
4. **Statistics and report** (:func:`render`, also ``gozaru study report DIR``): everything in
   ``report.md`` comes from the files in the folder, so re-rendering reproduces it byte for byte.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import numpy as np

from ...engine import layers
from ...engine.placement import Placement
from ...fileio import read_json, write_json_atomic
from ..evaluate import EvalConfig
from ..executor import LocalExecutor, error_line
from ..source import BaseSource
from ..task import sources
from ..train import TrainConfig
from . import design
from .inputs import prompt_floor
from .runs import StudyRun, load_record, measure, study_task
from .spec import StudySpec


def _lr(x: float) -> float:
    """A learning rate as the study keys it (6 significant digits: 0.002 × 10 is 0.02)."""
    return float(f"{x:.6g}")


def run_study(spec: StudySpec, base, data, out: str, *, train: TrainConfig, eval: EvalConfig | None = None,
              examples=(), sizes: str = "", progress: bool = False, report: bool = True,
              data_key: dict | None = None, log: Callable[[str], None] = print, executor=None, tracker=None):
    """Runs (or continues) the study into ``out``; returns the path of its report. ``examples``: ござる training
    records (the prompt-only floor shows ``spec.shots`` of them); ``sizes`` describes the chosen sizes for the
    report; ``data_key`` (JSON-able) names the data, so a folder made from other data is refused rather than
    mixed. ``executor`` runs the fine-tunes (default: in this process; a ``RayExecutor`` spreads them), each
    placed as ``base`` is (an executor's threads per run replace its threads); ``tracker``
    (``gozaru.lab.tracking``) gets one tracked run per fine-tune, sweep runs included."""
    eval_config = eval or EvalConfig()
    spec.check(base.config)
    if data.style is None or not len(data.style):
        raise ValueError("the study needs ending items (gozaru.lab.study.inputs.study_data makes them)")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    data.drop_long(base.config.max_position_embeddings, log)   # real data: over-long prompts left out, counted
    _check_folder(out, spec, train, {"data": data_key or {}, "eval": dataclasses.asdict(eval_config)}, sizes,
                  design.plan_notes(spec, base.config))
    executor = executor or LocalExecutor()
    timing = _Timing(out)
    cells = design.cells(spec, base.config)
    feed = _Feed(base, data, out, executor, tracker)
    with timing("floor"):   # the base measured, with and without examples in the prompt
        base_path = os.path.join(out, "runs", "base.json")
        if not os.path.exists(base_path):
            write_json_atomic(base_path, {"meta": {"name": "base"}, **measure(base, data, eval_config, spec.samples),
                                          "placement": base.placement.to_dict()})
        prompt_floor(base, data, examples, spec.shots, eval_config, out)
    with timing("runs"):   # the matched lrs need no sweep, so a study stopped early already holds them
        matched = plan_runs(spec, base.config, cells, None)
        write_json_atomic(os.path.join(out, "plan.json"), matched)
        feed.run(spec, base.config, train, eval_config, matched, log, progress)
    with timing("sweep"):
        sweep = lr_sweep(spec, base.config, cells, train, eval_config, feed, out, log)
    planned = plan_runs(spec, base.config, cells, sweep)
    write_json_atomic(os.path.join(out, "plan.json"), planned)
    log(f"study: {len(planned)} runs ({len(cells)} cells × {len(spec.seeds)} seeds × lr policies)")
    with timing("runs"):
        feed.run(spec, base.config, train, eval_config, planned, log, progress)
    timing.save()
    return render(out) if report else None


def render(out: str) -> str:
    """Statistics and ``report.md`` from the folder's files alone (no training): ``gozaru study report DIR``."""
    from .report import write_report
    from .stats import analyse
    saved = read_json(os.path.join(out, "study.json"))
    spec = StudySpec.from_dict(saved["spec"])
    stats = analyse(spec, out)
    return write_report(spec, out, stats, saved)


# --------------------------------------------------------------------------- learning-rate sweep
def lr_sweep(spec: StudySpec, config, cells, train: TrainConfig, eval_config, feed, out: str, log) -> dict:
    n_rows = len(feed.data.train)
    validation = max(1, int(round(spec.sweep_validation * n_rows)))
    steps = spec.sweep_steps or train.steps
    sweep_train = dataclasses.replace(train, steps=steps, warmup_steps=min(train.warmup_steps, max(1, steps // 5)))
    f = sorted(spec.sweep_factors)
    ratio = float(np.exp(np.mean(np.diff(np.log(f)))))
    tried = {c.name: [_lr(train.lr * x) for x in f] for c in cells}
    results: dict = {}
    for round_ in range(spec.sweep_widen + 1):
        todo = [(c, lr, s) for c in cells for lr in tried[c.name] for s in spec.sweep_seeds]
        feed.sweep(spec, config, sweep_train, eval_config, todo, validation, results, log)
        widened = False
        for c in cells:
            best, edge = _best(tried[c.name], results, c.name, spec.sweep_seeds)
            if edge and round_ < spec.sweep_widen:
                lrs = tried[c.name]
                tried[c.name] = sorted(lrs + [_lr(lrs[-1] * ratio) if edge == "high" else _lr(lrs[0] / ratio)])
                widened = True
        if not widened:
            break
    table, chosen = [], {}
    for c in cells:
        best, edge = _best(tried[c.name], results, c.name, spec.sweep_seeds)
        chosen[c.name] = {"lr": best, "edge": edge}
        for lr in tried[c.name]:
            losses = [results.get((c.name, lr, s)) for s in spec.sweep_seeds]
            table.append({"cell": c.name, "lr": lr, "val_loss": _mean_loss(losses)})
        log(f"lr sweep {c.name}: tuned {best:.3g}" + (f" (on the {edge} edge)" if edge else ""))
    result = {"chosen": chosen, "table": table, "n_validation_rows": validation, "steps": steps, "ratio": ratio}
    write_json_atomic(os.path.join(out, "sweep.json"), result)
    return result


def _mean_loss(losses) -> float | None:
    if any(v is None for v in losses):
        return None   # a diverged sweep run: this lr is too large
    return float(np.mean(losses))


def _best(lrs, results, name, seeds) -> tuple[float, str]:
    """(best lr, "" or the edge it lies on); a diverged lr counts as worst."""
    losses = [_mean_loss([results.get((name, lr, s)) for s in seeds]) for lr in lrs]
    scored = [(v if v is not None else float("inf"), i) for i, v in enumerate(losses)]
    i = min(scored)[1]
    return lrs[i], ("low" if i == 0 else "high" if i == len(lrs) - 1 else "")


def plan_runs(spec: StudySpec, config, cells, sweep: dict | None) -> list[dict]:
    """One entry per evaluation run: the cell, seed, lr and the policies it serves (without ``sweep``: the
    matched lrs only)."""
    out = {}
    for c in cells:
        tuned = sweep["chosen"][c.name] if sweep else {"edge": "not swept yet"}
        lrs = {_lr(lr): [design.lr_label(lr)] for lr in spec.lrs}
        if not tuned["edge"]:
            lrs.setdefault(_lr(tuned["lr"]), []).append("tuned")
        for lr, policies in sorted(lrs.items()):
            for seed in spec.seeds:
                name = design.run_name(c, lr, seed)
                cond = design.condition(spec, config, c, seed, lr, name)
                out[name] = {"name": name, "slug": cond.slug, "cell": c.name, "level": c.level, "type": c.type,
                             "position": c.position, "head": c.head, "layers": c.layers, "seed": seed, "lr": lr,
                             "policies": policies, "share": layers.share(config, cond.select(config)),
                             "condition": cond.to_dict()}
    # the matched lrs first, in the spec's order, then the tuned policy: an interrupted study has whole
    # comparisons at the first policies rather than scattered runs of every one
    # within an lr the partial cells' seeds come before the reference cells (head, all)
    order = {_lr(lr): i for i, lr in enumerate(spec.lrs)}
    return sorted(out.values(), key=lambda m: (order.get(m["lr"], len(order)), m["type"] in ("head", "full"),
                                               m["seed"]))


# --------------------------------------------------------------------------- execution
class _Feed:
    """Hands runs to the executor with the base and the data (``task.sources``) and collects their records."""

    def __init__(self, base, data, out, executor, tracker=None):
        self.base, self.data, self.out, self.executor, self.tracker = base, data, out, executor, tracker
        self.placement = Placement.of(base.placement, threads=executor.threads)
        self._src = None

    def _sources(self):
        if self._src is None:
            self._src = sources(BaseSource.of(self.base), self.data, self.out, self.executor, self.placement)
        return self._src

    def _map(self, runs: list[StudyRun], log) -> list:
        if not runs:
            return []
        base_src, data_src = self._sources()
        failed = []
        records = [None] * len(runs)
        for done in self.executor.map(study_task, [(r, base_src, data_src) for r in runs]):
            run = runs[done.index]
            if done.error is not None:
                failed.append(f"{run.meta['name']} ({error_line(done.error)})")
                log(f"{run.meta['name']}: FAILED: {error_line(done.error)}")
            else:
                records[done.index] = done.value
                log(_summary(done.value))
        if failed:
            raise RuntimeError(f"{len(failed)} study run(s) failed: " + "; ".join(failed))
        return records

    def sweep(self, spec, config, train, eval_config, todo, validation, results, log):
        runs = []
        for cell, lr, seed in todo:
            if (cell.name, lr, seed) in results:
                continue
            name = design.run_name(cell, lr, seed, sweep=True)
            cond = design.condition(spec, config, cell, seed, lr, name)
            meta = {"name": name, "cell": cell.name, "lr": lr, "seed": seed, "sweep": True}
            path = os.path.join(self.out, "sweep", cond.slug + ".json")
            record = load_record(path, meta)
            if record is not None:
                results[(cell.name, lr, seed)] = record["val_loss"]
                continue
            runs.append(StudyRun(cond.to_dict(), meta, train, eval_config, path, validation=validation,
                                 placement=self.placement, tracker=self.tracker))
        os.makedirs(os.path.join(self.out, "sweep"), exist_ok=True)
        for run, record in zip(runs, self._map(runs, log)):
            results[(run.meta["cell"], run.meta["lr"], run.meta["seed"])] = record["val_loss"]

    def run(self, spec, config, train, eval_config, planned, log, progress):
        runs = []
        for m in planned:
            path = os.path.join(self.out, "runs", m["slug"] + ".json")
            meta = {k: v for k, v in m.items() if k != "condition"}
            if load_record(path, meta) is None:
                runs.append(StudyRun(m["condition"], meta, train, eval_config, path, samples=spec.samples,
                                     curve_every=spec.curve_every, placement=self.placement,
                                     tracker=self.tracker))
        log(f"{len(planned) - len(runs)} runs done before, {len(runs)} to go")
        self._map(runs, log)


def _summary(record: dict) -> str:
    m = record["meta"]
    if m.get("sweep"):
        v = record.get("val_loss")
        return f"{m['name']}: validation loss {'diverged' if v is None else f'{v:.4f}'} ({record['seconds']:.1f} s)"
    return (f"{m['name']}: adoption {np.mean(record['adoption']):.3f}, sampled "
            f"{np.mean(record['sampled']) / record['samples']:.3f}, greedy {np.mean(record['greedy']):.3f} "
            f"({record['seconds']:.1f} s)")


def _check_folder(out: str, spec: StudySpec, train: TrainConfig, data_key: dict, sizes: str, notes: list):
    """One folder holds one study; finished runs of the same definition, data and settings are reused."""
    path = os.path.join(out, "study.json")
    mine = json.loads(json.dumps({"spec": spec.to_dict(), "train": {k: v for k, v in train.to_dict().items()
                                                                      if k != "progress"}, "data": data_key}))
    if os.path.exists(path):
        saved = read_json(path)
        for part in ("spec", "train", "data"):
            a = {k: v for k, v in saved.get(part, {}).items() if k != "notes"}
            b = {k: v for k, v in mine[part].items() if k != "notes"}
            if a != b:
                changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise ValueError(f"{out} holds a study with another {part} ({', '.join(map(str, changed))} "
                                 f"differ); pick another --out")
    write_json_atomic(path, {**mine, "sizes": sizes, "plan_notes": notes})


class _Timing:
    """Seconds spent per phase, added up over every invocation that continued the study (``timing.json``)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, "timing.json")
        self.seconds = read_json(self.path) if os.path.exists(self.path) else {}

    def __call__(self, phase: str):
        timing = self

        class _Span:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timing.seconds[phase] = timing.seconds.get(phase, 0.0) + time.perf_counter() - self.t0
                timing.save()
        return _Span()

    def save(self):
        write_json_atomic(self.path, self.seconds)


study = run_study
