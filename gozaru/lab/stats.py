"""Statistics of a study (statsmodels): cell means with bootstrap CIs over seeds and prompts, a logistic model
of the ござる-rate with run-clustered errors, the shares that reach 50 % / 90 % of the full-FT rate, and
equivalence tests (TOST) of the position and type effects at a margin fixed before the run.

Every number the report states comes from here; :func:`analyse` also writes the tables as CSV files.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings

import numpy as np
import pandas as pd

from ..data import rewrite
from ..fileio import read_json, write_text_atomic
from .experiment import Condition

CELL = ["level", "type", "position"]


@dataclasses.dataclass
class StudyStats:
    runs: pd.DataFrame          # one row per run: cell, seed, share and measurements
    cells: pd.DataFrame         # per cell: share, rate and style score with bootstrap CIs, forgetting
    base: dict                  # the base model's row
    logistic: dict              # {"ok", "note", "table"}
    tost: dict                  # factor -> {"pairs": DataFrame, "verdict", "margin"}
    thresholds: pd.DataFrame    # per type and fraction: share reaching frac × full-FT rate, with CI
    floor: dict
    correlation: dict           # style score vs forgetting (Spearman over runs)
    margin: float
    alpha: float


# --------------------------------------------------------------------------- loading
def load_runs(out: str, metas: list[dict]):
    """(runs frame, {name: per-prompt 0/1 outcomes}, {name: per-item style scores}, base row)."""
    outcomes, styles, rows = {}, {}, []
    base = read_json(os.path.join(out, "runs", "base.json"))
    for m in metas:
        record = read_json(os.path.join(out, "runs", Condition(m["name"], {}).slug + ".json"))
        outcomes[m["name"]] = np.array([rewrite.GOZARU in a for a in record["answers"]], dtype=float)
        styles[m["name"]] = np.array(record.get("style_scores", []), dtype=float)
        rows.append({**m, **{k: v for k, v in record["row"].items() if k not in m and k != "name"}})
    runs = pd.DataFrame(rows)
    runs["forgetting_orig"] = runs["orig_loss"] - base["row"].get("orig_loss", float("nan"))
    return runs, outcomes, styles, base["row"]


# --------------------------------------------------------------------------- bootstrap
def bootstrap_means(matrix: np.ndarray, draws: int, rng, prompt_idx: np.ndarray | None = None) -> np.ndarray:
    """Means of ``matrix`` (runs × items) over ``draws`` resamples of runs (seeds) and items (prompts) with
    replacement; ``prompt_idx`` ([draws, items]) shares the prompt draws between cells."""
    n_runs, n_items = matrix.shape
    runs = rng.integers(0, n_runs, size=(draws, n_runs))
    items = prompt_idx if prompt_idx is not None else rng.integers(0, n_items, size=(draws, n_items))
    return matrix[runs[:, :, None], items[:, None, :]].mean(axis=(1, 2))


def _ci(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    q = (1 - level) / 2
    return float(np.quantile(draws, q)), float(np.quantile(draws, 1 - q))


def cell_table(runs: pd.DataFrame, outcomes: dict, styles: dict, draws: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in runs.groupby(CELL, sort=False):
        r = _matrix(outcomes, g["name"])
        s = _matrix(styles, g["name"])
        rate_b = bootstrap_means(r, draws, rng)
        row = dict(zip(CELL, key), n_seeds=len(g), share=float(g["share"].mean()), rate=float(r.mean()))
        row["rate_low"], row["rate_high"] = _ci(rate_b)
        if s.size:
            row["style"] = float(s.mean())
            row["style_low"], row["style_high"] = _ci(bootstrap_means(s, draws, rng))
        else:
            row["style"] = row["style_low"] = row["style_high"] = float("nan")
        for col in ("forgetting_orig", "forgetting", "eval_loss", "fact_recall"):
            row[col] = float(g[col].mean()) if col in g else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _matrix(values: dict, names) -> np.ndarray:
    arrays = [values[n] for n in names]
    width = min((len(a) for a in arrays), default=0)
    return np.array([a[:width] for a in arrays], dtype=float).reshape(len(arrays), width)


# --------------------------------------------------------------------------- logistic model
def logistic_model(runs: pd.DataFrame, outcomes: dict, positions, types) -> dict:
    """GLM Binomial of the per-prompt ござる outcome on log(share) + position + type over the partial-training
    cells, with standard errors clustered by run (the seed's whole run is one cluster)."""
    import statsmodels.api as sm
    import statsmodels.formula.api as smf
    part = runs[runs["position"].isin(positions)]
    if part.empty:
        return {"ok": False, "note": "no partial-training cells", "table": None}
    long = pd.DataFrame([{"y": y, "share": r["share"], "position": r["position"], "type": r["type"], "run": i}
                         for i, (_, r) in enumerate(part.iterrows()) for y in outcomes[r["name"]]])
    if long["y"].nunique() < 2:
        return {"ok": False, "note": f"every answer scored {int(long['y'].iloc[0])}: nothing to model",
                "table": None}
    terms = ["np.log(share)"]
    if long["position"].nunique() > 1:
        terms.append(f"C(position, Treatment('{positions[0]}'))")
    if long["type"].nunique() > 1:
        terms.append(f"C(type, Treatment('{types[0]}'))")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = smf.glm("y ~ " + " + ".join(terms), long, family=sm.families.Binomial()).fit(
                cov_type="cluster", cov_kwds={"groups": long["run"].to_numpy()})
    except Exception as e:   # statsmodels raises several kinds on separation / singular designs
        return {"ok": False, "note": f"not estimable ({type(e).__name__}: {e})", "table": None}
    ci = fit.conf_int()
    table = pd.DataFrame({"term": [_term_name(t) for t in fit.params.index], "coef": fit.params.to_numpy(),
                          "se": fit.bse.to_numpy(), "p": fit.pvalues.to_numpy(), "low": ci[0].to_numpy(),
                          "high": ci[1].to_numpy()})
    table["odds_ratio"] = np.exp(table["coef"])
    if not np.isfinite(table[["coef", "se"]].to_numpy()).all() or (table["coef"].abs() > 15).any():
        return {"ok": False, "note": "not estimable: the outcomes separate (near) perfectly by cell, or log(share) "
                "is confounded with type (a single layer-count level)",
                "table": table}
    return {"ok": True, "note": f"{len(long)} answers in {long['run'].nunique()} runs (clusters)", "table": table}


def _term_name(term: str) -> str:
    if term.startswith("C("):
        factor = term[2:term.index(",")]
        return f"{factor} = {term.split('[T.')[-1].rstrip(']')}"
    return {"np.log(share)": "log(share)"}.get(term, term)


# --------------------------------------------------------------------------- equivalence tests
def tost_factor(runs: pd.DataFrame, factor: str, keys: list[str], margin: float, alpha: float,
                metric: str = "gozaru_rate", order=None) -> dict:
    """Paired comparisons of every two levels of ``factor`` (runs matched on ``keys``, e.g. share level, the
    other factor and the seed): mean difference, its 90 % CI, the TOST p-value for |difference| < margin and
    the t-test p-value for a difference. Verdict: ``equivalent`` when every pair passes TOST at ``alpha``
    (intersection-union test), ``differs`` when some pair differs at ``alpha`` / pairs (Bonferroni),
    ``inconclusive`` otherwise."""
    from scipy import stats as sps
    from statsmodels.stats.weightstats import ttost_paired
    wide = runs.pivot_table(index=keys, columns=factor, values=metric, aggfunc="mean")
    levels = [x for x in (order or wide.columns) if x in wide.columns]
    rows = []
    for i, a in enumerate(levels):
        for b in levels[i + 1:]:
            pair = wide[[a, b]].dropna()
            d = (pair[a] - pair[b]).to_numpy()
            n = len(d)
            if n < 2:
                continue
            mean, sd = float(d.mean()), float(d.std(ddof=1))
            if sd == 0:
                p_tost, p_diff, half = (0.0 if abs(mean) < margin else 1.0), (0.0 if mean != 0 else 1.0), 0.0
            else:
                p_tost = float(ttost_paired(pair[a].to_numpy(), pair[b].to_numpy(), -margin, margin)[0])
                p_diff = float(sps.ttest_1samp(d, 0.0).pvalue)
                half = float(sps.t.ppf(1 - alpha, n - 1) * sd / math.sqrt(n))
            rows.append({"a": a, "b": b, "n_pairs": n, "diff": mean, "low90": mean - half, "high90": mean + half,
                         "p_tost": p_tost, "p_diff": p_diff})
    pairs = pd.DataFrame(rows)
    if pairs.empty:
        verdict = "untested"
    elif (pairs["p_tost"] < alpha).all():
        verdict = "equivalent"
    elif (pairs["p_diff"] < alpha / len(pairs)).any():
        verdict = "differs"
    else:
        verdict = "inconclusive"
    return {"pairs": pairs, "verdict": verdict, "margin": margin, "alpha": alpha, "factor": factor}


# --------------------------------------------------------------------------- thresholds
def share_thresholds(runs: pd.DataFrame, outcomes: dict, types, fractions=(0.5, 0.9), draws: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Per type, the smallest share at which the dose-response curve (mean rate per share level, positions
    pooled; log-share interpolation between levels) reaches ``fraction`` × the full-FT rate, with a bootstrap
    95 % CI (runs resampled within each level, prompts resampled jointly). ``inf`` = not reached."""
    rng = np.random.default_rng(seed)
    n_items = min(len(v) for v in outcomes.values())
    prompt_idx = rng.integers(0, n_items, size=(draws, n_items))
    full = runs[runs["level"] == "all"]
    if full.empty:
        return pd.DataFrame(columns=["type", "fraction", "share", "low", "high", "not_reached"])
    full_b = bootstrap_means(_matrix(outcomes, full["name"]), draws, rng, prompt_idx)
    full_rate = float(_matrix(outcomes, full["name"]).mean())
    rows = []
    for type_ in types:
        groups = [g for _, g in runs[(runs["type"].isin([type_, "head"])) & (runs["level"] != "all")]
                  .groupby("level", sort=False)]
        groups.sort(key=lambda g: g["share"].mean())
        groups.append(full)
        x = np.log([g["share"].mean() for g in groups])
        point = np.array([_matrix(outcomes, g["name"]).mean() for g in groups])
        boot = np.stack([bootstrap_means(_matrix(outcomes, g["name"]), draws, rng, prompt_idx) for g in groups[:-1]]
                        + [full_b], axis=1)
        for frac in fractions:
            est = _crossing(x, point, frac * full_rate)
            b = np.array([_crossing(x, boot[i], frac * full_b[i]) for i in range(draws)])
            rows.append({"type": type_, "fraction": frac, "share": est, "low": float(np.quantile(b, 0.025)),
                         "high": float(np.quantile(b, 0.975)), "not_reached": float(np.mean(~np.isfinite(b)))})
    return pd.DataFrame(rows)


def _crossing(log_x: np.ndarray, y: np.ndarray, target: float) -> float:
    """The first share where the piecewise-linear (in log share) curve reaches ``target``; inf if never."""
    if target <= 0:
        return float(np.exp(log_x[0]))
    for i in range(len(y)):
        if y[i] >= target:
            if i == 0:
                return float(np.exp(log_x[0]))
            t = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(np.exp(log_x[i - 1] + t * (log_x[i] - log_x[i - 1])))
    return float("inf")


# --------------------------------------------------------------------------- everything
def analyse(spec, out: str, metas: list[dict], floor: dict) -> StudyStats:
    from scipy import stats as sps
    runs, outcomes, styles, base = load_runs(out, metas)
    cells = cell_table(runs, outcomes, styles, spec.bootstrap)
    positions = [p for p in spec.positions]
    types = [t for t in spec.types]
    part = runs[runs["position"].isin(positions)]
    tost = {"position": tost_factor(part, "position", ["level", "type", "seed"], spec.margin, spec.alpha,
                                    order=positions),
            "type": tost_factor(part, "type", ["level", "position", "seed"], spec.margin, spec.alpha, order=types)}
    thresholds = share_thresholds(runs, outcomes, types, draws=spec.bootstrap)
    logistic = logistic_model(runs, outcomes, positions, types)
    ok = runs[["style_score", "forgetting_orig"]].dropna() if "style_score" in runs else pd.DataFrame()
    corr = {"rho": float("nan"), "p": float("nan"), "n": len(ok)}
    if len(ok) >= 3 and ok.nunique().min() > 1:
        res = sps.spearmanr(ok["style_score"], ok["forgetting_orig"])
        corr = {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(ok)}
    stats = StudyStats(runs, cells, base, logistic, tost, thresholds, floor, corr, spec.margin, spec.alpha)
    _write_tables(stats, out)
    return stats


def _write_tables(s: StudyStats, out: str):
    tables = {"study_runs.csv": s.runs, "cells.csv": s.cells, "thresholds.csv": s.thresholds,
              "tost_position.csv": s.tost["position"]["pairs"], "tost_type.csv": s.tost["type"]["pairs"]}
    if s.logistic.get("table") is not None:
        tables["logistic.csv"] = s.logistic["table"]
    for name, frame in tables.items():
        write_text_atomic(os.path.join(out, name), frame.to_csv(index=False))
