"""Statistics of a study, from its per-run, per-prompt records alone.

* **Nested bootstrap** (seeds, then prompts within each drawn seed) of cell means and of paired differences
  (runs of two cells are paired by seed; both see the same prompts).
* **Comparisons** (``comparisons``): per factor (position, type, head), per lr policy (``tuned`` and each matched
  ``lr=…``) and per measure, the difference a − b in points, its 95 % CI, the bootstrap p of "no difference"
  and the TOST p of "|difference| < margin", both Holm-corrected within each (policy, measure) family.
  Verdict: ``differ`` (p < α), ``equivalent`` (p_tost < α) or ``undecided`` (also with < 3 paired seeds).
* **Thresholds**: the share where a dose-response curve reaches 50 % / 90 % of full FT's adoption — an estimate
  only between two measured levels at most a doubling apart, otherwise a bound (``≤ x``, ``> x``, ``x–y``).
* **Learning curves**: steps until a cell's mean adoption reaches 50 % / 90 % of full FT's final adoption.
* **Interactions** (type × level, position × lr): F tests of OLS models on run-level adoption; a design that is
  rank deficient (or leaves no residual degrees of freedom) is reported as "not estimable", never fitted.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import warnings

import numpy as np
import pandas as pd

from ...fileio import read_json, write_text_atomic
from .spec import MEASURES

FACTORS = ("position", "type", "head")
MIN_SEEDS = 3    # paired seeds a verdict needs; with fewer it stays "undecided"
KEYS = ("level", "type", "position", "head")


@dataclasses.dataclass
class StudyStats:
    runs: pd.DataFrame          # one row per run and policy: cell, seed, lr, run-level means
    cells: pd.DataFrame         # per cell and policy: means with nested-bootstrap CIs
    comparisons: list           # the machine-readable verdicts (study.json)
    thresholds: pd.DataFrame
    curves: pd.DataFrame        # per cell, policy and step: mean adoption
    steps_to: pd.DataFrame      # per cell and policy: steps to 50 % / 90 % of full FT's final adoption
    interactions: list          # {"name", "ok", "note", "F", "p"}
    base: dict
    floor: dict
    sweep: dict | None          # None until the sweep has run
    policies: list
    missing: list = dataclasses.field(default_factory=list)   # planned runs without a record (still to run)


# --------------------------------------------------------------------------- loading
def load(out: str):
    """(runs frame, {run name: per-prompt/per-item arrays}, base record, names of planned runs not yet done)."""
    plan = read_json(os.path.join(out, "plan.json"))
    arrays, rows, missing = {}, [], []
    for m in plan:
        path = os.path.join(out, "runs", m["slug"] + ".json")
        if not os.path.exists(path):   # a study still running renders what has finished
            missing.append(m["name"])
            continue
        r = read_json(path)
        arrays[m["name"]] = {"greedy": np.array(r["greedy"], float),
                             "sampled_rate": np.array(r["sampled"], float) / r["samples"],
                             "adoption": np.array(r["adoption"], float),
                             "suppression": np.array(r["suppression"], float), "curve": r.get("curve", [])}
        row = {k: v for k, v in m.items() if k not in ("condition", "policies")}
        row.update(adoption=arrays[m["name"]]["adoption"].mean(), sampled_rate=arrays[m["name"]]["sampled_rate"]
                   .mean(), greedy_rate=arrays[m["name"]]["greedy"].mean(),
                   suppression=arrays[m["name"]]["suppression"].mean(), orig_loss=r.get("orig_loss"),
                   eval_loss=r.get("eval_loss"), train_seconds=r.get("train_seconds", 0.0),
                   diverged=r.get("diverged", False))
        for p in m["policies"]:
            rows.append({**row, "policy": p})
    base = read_json(os.path.join(out, "runs", "base.json"))
    runs = pd.DataFrame(rows)
    if runs.empty:
        raise ValueError(f"{out}: no run has finished yet")
    runs["forgetting"] = runs["orig_loss"].astype(float) - float(base.get("orig_loss") or np.nan)
    return runs, arrays, base, missing


def _array(arrays, name, measure) -> np.ndarray:
    return arrays[name]["greedy" if measure == "greedy_rate" else measure]


# --------------------------------------------------------------------------- nested bootstrap
def nested_bootstrap(matrix: np.ndarray, draws: int, rng) -> np.ndarray:
    """Means of ``matrix`` (seeds × prompts) over ``draws`` nested resamples: seeds with replacement, then
    prompts with replacement independently within each drawn seed."""
    n_seeds, n_items = matrix.shape
    seeds = rng.integers(0, n_seeds, size=(draws, n_seeds))
    items = rng.integers(0, n_items, size=(draws, n_seeds, n_items))
    return matrix[seeds[:, :, None], items].mean(axis=(1, 2))


def _ci(b: np.ndarray) -> tuple[float, float]:
    return float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))


def _seed(*parts) -> int:
    """A bootstrap seed fixed by what is resampled, so every table is reproducible on its own."""
    import zlib
    return zlib.crc32("|".join(map(str, parts)).encode())


def _matrix(arrays, names, measure) -> np.ndarray:
    rows = [_array(arrays, n, measure) for n in names]
    width = min(len(r) for r in rows)
    return np.array([r[:width] for r in rows])


def cell_table(runs: pd.DataFrame, arrays: dict, draws: int) -> pd.DataFrame:
    rows = []
    for key, g in runs.groupby(["cell", "policy"], sort=False):
        g = g.sort_values("seed")
        row = {"cell": key[0], "policy": key[1], **{k: g[k].iloc[0] for k in KEYS}, "n_seeds": len(g),
               "share": float(g["share"].iloc[0]), "lr": float(g["lr"].iloc[0])}
        for measure in MEASURES:
            mat = _matrix(arrays, g["name"], measure)
            b = nested_bootstrap(mat, draws, np.random.default_rng(_seed(key, measure)))
            row[measure] = float(mat.mean())
            row[measure + "_low"], row[measure + "_high"] = _ci(b)
        row["suppression"] = float(g["suppression"].mean())
        row["forgetting"] = float(g["forgetting"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- comparisons
def compare(runs: pd.DataFrame, arrays: dict, spec) -> list[dict]:
    """Every pair of levels of each factor, the other cell keys held fixed, per policy and measure."""
    from statsmodels.stats.multitest import multipletests
    part = runs[~runs["type"].isin(["head", "full"])]
    out = []
    for factor in FACTORS:
        others = [k for k in KEYS if k != factor]
        for (policy, *fixed), g in part.groupby(["policy", *others], sort=False):
            present = set(g[factor])   # pairs in the spec's order, whatever order the runs came in
            values = [v for v in {"position": spec.positions, "type": spec.types,
                                  "head": ("trained", "frozen")}[factor] if v in present]
            for a, b in itertools.combinations(values, 2):
                ga = g[g[factor] == a].set_index("seed")
                gb = g[g[factor] == b].set_index("seed")
                seeds = sorted(set(ga.index) & set(gb.index))
                if len(seeds) < 2:
                    continue
                level = dict(zip(others, fixed))["level"] if factor != "level" else None
                for measure in MEASURES:
                    d = _matrix(arrays, ga.loc[seeds, "name"], measure) - _matrix(arrays, gb.loc[seeds, "name"],
                                                                                 measure)
                    boot = nested_bootstrap(d, spec.bootstrap, np.random.default_rng(
                        _seed(factor, a, b, policy, *fixed, measure)))
                    n = len(boot) + 1
                    p = min(1.0, 2 * (min((boot <= 0).sum(), (boot >= 0).sum()) + 1) / n)
                    p_tost = max(((boot <= -spec.margin).sum() + 1) / n, ((boot >= spec.margin).sum() + 1) / n)
                    lo, hi = _ci(boot)
                    out.append({"factor": factor, "a": a, "b": b, "level": _spec_level(level), "policy": policy,
                                "measure": measure, **{k: v for k, v in zip(others, fixed) if k != "level"},
                                "n_seeds": len(seeds), "diff": round(100 * float(d.mean()), 4),
                                "ci": [round(100 * lo, 4), round(100 * hi, 4)], "p_raw": p, "p_tost_raw": p_tost})
    for policy, measure in {(c["policy"], c["measure"]) for c in out}:
        family = [c for c in out if c["policy"] == policy and c["measure"] == measure]
        for key in ("p", "p_tost"):
            adjusted = multipletests([c[key + "_raw"] for c in family], method="holm")[1]
            for c, v in zip(family, adjusted):
                c[key] = float(v)
    for c in out:
        c["verdict"] = "differ" if c["p"] < spec.alpha else "equivalent" if c["p_tost"] < spec.alpha else "undecided"
        if c["n_seeds"] < MIN_SEEDS:   # resampling 2 seeds cannot estimate the spread between seeds
            c["verdict"] = "undecided"
    return out


def _spec_level(level):
    """The share level as the spec writes it: 1 for "1L", "head", "all"."""
    return int(level[:-1]) if isinstance(level, str) and level.endswith("L") else level


# --------------------------------------------------------------------------- thresholds
def thresholds(cells: pd.DataFrame, fractions=(0.5, 0.9)) -> pd.DataFrame:
    """Per type, head variant and policy: where adoption (positions pooled) reaches ``fraction`` × full FT's."""
    rows = []
    for policy, pc in cells.groupby("policy", sort=False):
        full = pc[pc["level"] == "all"]
        head = pc[pc["level"] == "head"]
        if full.empty:
            continue
        target_full = float(full["adoption"].iloc[0])
        part = pc[~pc["type"].isin(["head", "full"])]
        for (type_, head_), g in part.groupby(["type", "head"], sort=False):
            levels = g.groupby("level", sort=False).agg(share=("share", "mean"), adoption=("adoption", "mean"))
            points = ([(float(head["share"].iloc[0]), float(head["adoption"].iloc[0]))]
                      if head_ == "trained" and len(head) else [])
            points += sorted(zip(levels["share"], levels["adoption"]))
            points.append((float(full["share"].iloc[0]), target_full))
            for frac in fractions:
                rows.append({"type": type_, "head": head_, "policy": policy, "fraction": frac,
                             **_crossing(points, frac * target_full)})
    return pd.DataFrame(rows, columns=["type", "head", "policy", "fraction", "kind", "share", "low", "high"])


def _crossing(points, target) -> dict:
    """An estimate between two measured shares at most a doubling apart, else a bound."""
    for i, (x, y) in enumerate(points):
        if y >= target:
            if i == 0:
                return {"kind": "at most", "share": x, "low": float("nan"), "high": x}
            (x0, y0) = points[i - 1]
            if x / x0 <= 2.0 + 1e-9 and y > y0:
                t = (target - y0) / (y - y0)
                est = float(np.exp(np.log(x0) + t * (np.log(x) - np.log(x0))))
                return {"kind": "estimate", "share": est, "low": x0, "high": x}
            return {"kind": "between", "share": float("nan"), "low": x0, "high": x}
    return {"kind": "not reached", "share": float("nan"), "low": points[-1][0], "high": float("nan")}


# --------------------------------------------------------------------------- learning curves
def learning_curves(runs: pd.DataFrame, arrays: dict, fractions=(0.5, 0.9)) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for (cell, policy), g in runs.groupby(["cell", "policy"], sort=False):
        curves = [pd.DataFrame(arrays[n]["curve"]) for n in g["name"] if arrays[n]["curve"]]
        if not curves:
            continue
        mean = pd.concat(curves).groupby("step")["adoption"].mean()
        rows += [{"cell": cell, "policy": policy, "step": int(s), "adoption": float(v)} for s, v in mean.items()]
    curves = pd.DataFrame(rows, columns=["cell", "policy", "step", "adoption"])
    reach = []
    for (cell, policy), g in curves.groupby(["cell", "policy"], sort=False):
        full = runs[(runs["level"] == "all") & (runs["policy"] == policy)]
        if full.empty:
            continue
        final = float(full["adoption"].mean())
        row = {"cell": cell, "policy": policy}
        for frac in fractions:
            hit = g[g["adoption"] >= frac * final]
            steps = list(g["step"])
            if hit.empty:
                row[f"steps_{int(100 * frac)}"] = f"> {steps[-1]}"
            else:
                s = int(hit["step"].iloc[0])
                prev = [x for x in steps if x < s]
                row[f"steps_{int(100 * frac)}"] = f"{prev[-1] + 1}–{s}" if prev else f"≤ {s}"
        reach.append(row)
    return curves, pd.DataFrame(reach)


# --------------------------------------------------------------------------- interactions
def interaction_test(frame: pd.DataFrame, a: str, b: str, covariates=(), response: str = "adoption") -> dict:
    """F test of the ``a × b`` interaction in an OLS model of ``response`` (one row per run); "not estimable"
    when a factor has one level, the design is rank deficient or no residual degrees of freedom remain."""
    import patsy
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm
    name = f"{a} × {b}"
    if frame.empty or frame[a].nunique() < 2 or frame[b].nunique() < 2:
        return {"name": name, "ok": False, "note": f"not estimable: {a} or {b} has a single level here"}
    extra = "".join(f" + C({c})" for c in covariates if frame[c].nunique() > 1)
    formula = f"{response} ~ C({a}) * C({b}){extra}"
    x = patsy.dmatrix(formula.split("~")[1], frame, return_type="dataframe").to_numpy()
    rank = int(np.linalg.matrix_rank(x))
    if rank < x.shape[1] or len(frame) - rank < 1:
        return {"name": name, "ok": False, "note": f"not estimable: the design has rank {rank} of {x.shape[1]} "
                f"columns with {len(frame)} runs (cells missing or too few seeds)"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = smf.ols(formula, frame).fit()
        reduced = smf.ols(formula.replace(f"C({a}) * C({b})", f"C({a}) + C({b})"), frame).fit()
        table = anova_lm(reduced, full)
    f, p = float(table["F"].iloc[1]), float(table["Pr(>F)"].iloc[1])
    if not (np.isfinite(f) and np.isfinite(p)):
        return {"name": name, "ok": False, "note": "not estimable: the F statistic is not finite (no residual "
                "variance)"}
    return {"name": name, "ok": True, "note": f"{len(frame)} runs", "F": f, "p": p,
            "df": [float(table["df_diff"].iloc[1]), float(table["df_resid"].iloc[1])]}


def interactions(runs: pd.DataFrame, spec) -> list[dict]:
    part = runs[~runs["type"].isin(["head", "full"])]
    out = []
    for policy, g in part.groupby("policy", sort=False):
        r = interaction_test(g, "type", "level", covariates=("position", "head"))
        out.append({**r, "policy": policy})
    matched = part[part["policy"] != "tuned"].drop_duplicates("name")
    out.append({**interaction_test(matched, "position", "lr", covariates=("type", "level", "head")),
                "policy": "matched lrs"})
    return out


# --------------------------------------------------------------------------- everything
def _optional(path: str):
    return read_json(path) if os.path.exists(path) else None


def analyse(spec, out: str) -> StudyStats:
    runs, arrays, base, missing = load(out)
    cells = cell_table(runs, arrays, spec.bootstrap)
    comparisons = compare(runs, arrays, spec)
    curves, steps_to = learning_curves(runs, arrays)
    stats = StudyStats(runs, cells, comparisons, thresholds(cells), curves, steps_to, interactions(runs, spec),
                       base, read_json(os.path.join(out, "floor.json")), _optional(os.path.join(out, "sweep.json")),
                       list(dict.fromkeys(runs["policy"])), missing)
    tables = {"study_runs.csv": runs, "cells.csv": cells, "thresholds.csv": stats.thresholds,
              "curves.csv": curves, "steps_to.csv": steps_to, "comparisons.csv": pd.DataFrame(comparisons)}
    for name, frame in tables.items():
        write_text_atomic(os.path.join(out, name), frame.to_csv(index=False, float_format="%.6g"))
    return stats
