"""``OUT/report.md`` of a study and its figures: every number and every "does / does not" in the text is filled
in from ``gozaru.lab.stats.StudyStats`` by the templates below; nothing is written by hand."""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from ..fileio import write_text_atomic
from . import plots
from .experiment import fmt

MARKERS = {"first": "o", "middle": "s", "last": "^", "random": "D", "none": "x", "all": "*"}


# --------------------------------------------------------------------------- figures
def dose_response_plot(stats, path: str, positions, types):
    plt = plots._pyplot()
    from matplotlib import ticker
    fig, axes = plt.subplots(2, len(types), figsize=(4.2 * len(types), 7), squeeze=False, sharex=True,
                             layout="constrained")
    cells = stats.cells
    ends = cells[cells["level"].isin(["head", "all"])].sort_values("share")
    for col, type_ in enumerate(types):
        for row, (metric, label) in enumerate((("rate", "gozaru-rate"), ("style", "style score (nats)"))):
            ax = axes[row][col]
            for position in positions:
                mid = cells[(cells["type"] == type_) & (cells["position"] == position)]
                line = pd.concat([ends.iloc[:1], mid, ends.iloc[1:]]).sort_values("share")
                ax.plot(line["share"], line[metric], marker=MARKERS.get(position, "o"), label=position)
                ax.fill_between(line["share"], line[metric + "_low"], line[metric + "_high"], alpha=0.15)
            if row == 0:
                floor = stats.floor.get("rate", float("nan"))
                ax.axhline(floor, color="grey", ls=":", lw=1, label="prompt-only floor")
                ax.set_title(f"type: {type_}")
                ax.set_ylim(-0.02, 1.02)
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(np.round(cells["share"], 2))))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.tick_params(axis="x", labelsize=7, labelrotation=45)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("trained share of all weights (log)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("dose-response: mean over seeds, bands = 95 % bootstrap CI (seeds × prompts)")
    return plots._save(fig, path)


def style_forgetting_plot(stats, path: str):
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    runs = stats.runs
    for type_, g in runs.groupby("type"):
        ax.scatter(g["forgetting_orig"], g["style_score"], label=type_, alpha=0.7, s=18)
    ax.set_xlabel("forgetting: loss increase on the original (polite) held-out answers")
    ax.set_ylabel("style score (nats, gozaru vs polite ending)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return plots._save(fig, path)


def heatmap_runs(stats, spec) -> list[str]:
    """First seed of each type × position at the smallest layer level, plus head and full."""
    runs = stats.runs[stats.runs["seed"] == spec.seeds[0]]
    ints = runs[runs["layers"] > 0]
    names = list(runs.loc[runs["level"] == "head", "name"])
    if len(ints):
        lowest = ints[ints["layers"] == ints["layers"].min()]
        names += list(lowest["name"])
    return names + list(runs.loc[runs["level"] == "all", "name"])


# --------------------------------------------------------------------------- text
def pct(x) -> str:
    return fmt(100 * x if x == x else x, ".1f") + " %"


def _ci(lo, hi) -> str:
    return f"[{fmt(100 * lo, '.1f')}, {fmt(100 * hi, '.1f')}]"


def _share(x) -> str:
    if x != x:
        return "—"
    return "not reached" if math.isinf(x) else f"{100 * x:.1f} %"


def verdict_sentence(t: dict, what: str) -> str:
    m = 100 * t["margin"]
    pairs = t["pairs"]
    if t["verdict"] == "untested":
        return f"{what.capitalize()} was not tested (fewer than two {what}s or too few matched pairs)."
    worst = pairs.loc[pairs["diff"].abs().idxmax()]
    d = f"{100 * worst['diff']:+.1f} points ({worst['a']} − {worst['b']}, 90 % CI [{100 * worst['low90']:+.1f}, " \
        f"{100 * worst['high90']:+.1f}])"
    if t["verdict"] == "equivalent":
        return (f"**{what.capitalize()} does not matter** within ±{m:g} points: every pair of {what}s is "
                f"equivalent by TOST (all p < {t['alpha']:g}; largest difference {d}).")
    equivalent = [f"{r['a']}–{r['b']}" for _, r in pairs.iterrows() if r["p_tost"] < t["alpha"]]
    within = (f" Pairs shown equivalent within ±{m:g} points (TOST p < {t['alpha']:g}): {', '.join(equivalent)}."
              if equivalent else f" No pair is shown equivalent within ±{m:g} points.")
    if t["verdict"] == "differs":
        sig = pairs[pairs["p_diff"] < t["alpha"] / len(pairs)]
        top = sig.loc[sig["diff"].abs().idxmax()]
        lo, hi = 100 * top["low90"], 100 * top["high90"]
        if lo > m or hi < -m:
            lead, size = f"{what.capitalize()} matters", f"by more than the ±{m:g}-point margin"
        elif -m < lo and hi < m:
            lead, size = f"{what.capitalize()} makes only a small difference", \
                f"a real difference, but within the ±{m:g}-point margin"
        else:
            lead, size = f"{what.capitalize()} makes a difference", \
                f"whether it exceeds the ±{m:g}-point margin is not settled"
        return (f"**{lead}**: {top['a']} vs {top['b']} differ by {100 * top['diff']:+.1f} points (90 % CI "
                f"[{lo:+.1f}, {hi:+.1f}], p = {top['p_diff']:.2g} < {t['alpha']:g}/{len(pairs)}) — {size}." + within)
    return (f"**Whether {what} matters is not settled** at this size: no pair differs significantly, but not "
            f"every pair is shown to lie within ±{m:g} points (largest difference {d}).")


def conclusions(stats, spec) -> list[str]:
    c = stats.cells
    full, head = c[c["level"] == "all"], c[c["level"] == "head"]
    out = []
    first = "The untrained base answers in ござる style " + pct(stats.base.get("gozaru_rate", float("nan")))
    fl = stats.floor
    nan = float("nan")
    first += f"; with {fl.get('shots', 0)} ござる example(s) in the prompt (no training) " \
             f"{pct(fl.get('rate', nan))} {_ci(fl.get('low', nan), fl.get('high', nan))}"
    if len(head):
        h = head.iloc[0]
        first += f"; training the head alone ({100 * h['share']:.1f} % of the weights) {pct(h['rate'])} " \
                 f"{_ci(h['rate_low'], h['rate_high'])}"
    if len(full):
        f = full.iloc[0]
        first += f"; full fine-tuning {pct(f['rate'])} {_ci(f['rate_low'], f['rate_high'])}"
    out.append(first + ".")
    for type_, g in stats.thresholds.groupby("type", sort=False):
        parts = [f"{100 * r['fraction']:g} % of the full-FT rate at {_share(r['share'])} "
                 f"(95 % CI {_share(r['low'])} – {_share(r['high'])})" for _, r in g.iterrows()]
        out.append(f"The {type_} curve (head only → k {type_} + head → full fine-tuning, positions pooled) "
                   f"reaches " + " and ".join(parts) + ".")
    out.append(verdict_sentence(stats.tost["position"], "position"))
    out.append(verdict_sentence(stats.tost["type"], "type"))
    lg = stats.logistic
    if lg["ok"]:
        t = lg["table"].set_index("term")
        row = t.loc["log(share)"]
        doubling = {k: math.exp(row[k] * math.log(2)) for k in ("coef", "low", "high")}
        out.append(f"Logistic model (run-clustered SEs): doubling the trained share multiplies the odds of a ござる "
                   f"answer by {doubling['coef']:.2f} (95 % CI {doubling['low']:.2f}–{doubling['high']:.2f}, "
                   f"p = {row['p']:.2g}); "
                   + _significant_terms(t, spec.alpha))
    else:
        out.append(f"The logistic model could not be fitted: {lg['note']}; the bootstrap and TOST results above "
                   f"do not depend on it.")
    r = stats.correlation
    if r["rho"] == r["rho"]:
        rel = ("rise together" if r["rho"] > 0 else "move in opposite directions") if r["p"] < spec.alpha \
            else "show no significant relation"
        out.append(f"Style score and forgetting (loss increase on the original polite answers) {rel} across runs: "
                   f"Spearman ρ = {r['rho']:.2f} (p = {r['p']:.2g}, {r['n']} runs).")
    return out


def _significant_terms(t: pd.DataFrame, alpha: float) -> str:
    rest = t.drop(index=[i for i in t.index if i in ("Intercept", "log(share)")])
    if rest.empty:
        return "no position or type terms."
    sig = rest[rest["p"] < alpha]
    if sig.empty:
        return f"no position or type term is significant at {alpha:g}."
    return "significant terms: " + "; ".join(f"{i} (odds ratio {r['odds_ratio']:.2f}, p = {r['p']:.2g})"
                                             for i, r in sig.iterrows()) + "."


def _sweep_edges(sweep: dict) -> str:
    """Says which levels chose the smallest or largest candidate: their best rate may lie outside the sweep."""
    table = pd.DataFrame(sweep["table"])
    edge = [f"{level} ({'largest' if lr == g['lr'].max() else 'smallest'})"
            for level, g in table.groupby("level", sort=False) for lr in [sweep["chosen"][level]]
            if len(g) > 1 and lr in (g["lr"].max(), g["lr"].min())]
    if not edge:
        return "Every chosen learning rate lies inside the candidates."
    return ("Chosen at the edge of the candidates, so a rate outside the sweep might train these levels better: "
            + ", ".join(edge) + ".")


def _md(frame: pd.DataFrame, floats: dict | None = None) -> str:
    floats = floats or {}
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, (float, np.floating)):
                cells.append(fmt(v, floats.get(c, ".3f")))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(spec, out: str, stats, sweep: dict, floor: dict, dropped: dict, timing: dict, sizes: str) -> str:
    plots_dir = os.path.join(out, "plots")
    plt = plots._pyplot()
    plt.close(dose_response_plot(stats, os.path.join(plots_dir, "dose_response.png"), spec.positions, spec.types))
    plt.close(style_forgetting_plot(stats, os.path.join(plots_dir, "style_vs_forgetting.png")))
    plt.close(plots.weight_change_heatmaps(out, out, names=heatmap_runs(stats, spec),
                                           path=os.path.join(plots_dir, "weight_change.png")))
    cells = stats.cells.copy()
    for col in ("rate", "rate_low", "rate_high", "share"):
        cells[col] = 100 * cells[col]
    cells = cells[["level", "type", "position", "n_seeds", "share", "rate", "rate_low", "rate_high", "style",
                   "style_low", "style_high", "forgetting_orig", "forgetting", "eval_loss", "fact_recall"]]
    train_s = float(stats.runs["train_seconds"].sum())
    wall = sum(timing.values())
    phases = [("learning-rate sweep", timing.get("sweep", 0.0)), ("training (all runs)", train_s),
              ("evaluating and saving runs (generation, losses, style score, checkpoints)",
               max(timing.get("runs", 0.0) - train_s, 0.0)),
              ("prompt-only floor", timing.get("floor", 0.0)), ("statistics", timing.get("stats", 0.0)),
              ("report and figures", timing.get("report", 0.0))]
    m = f"±{100 * spec.margin:g} points"
    text = [
        "# How much, where and what must be trained for a style: ござる dose-response study", "",
        f"{len(stats.runs)} fine-tuning runs: share levels {', '.join(map(str, spec.shares))} × positions "
        f"{', '.join(spec.positions)} × types {', '.join(spec.types)} × seeds {', '.join(map(str, spec.seeds))} "
        f"(the seed sets the data order and the random layer draw). Equivalence margin {m}, fixed before the run; "
        f"α = {spec.alpha:g}.", "",
        "**Sizes.** " + (sizes or "as given on the command line") + (f" {spec.notes}" if spec.notes else ""), "",
        "## Conclusions", "", "*Every number and verdict below is filled in by `gozaru.lab.report` from the "
        "statistics in this folder.*", "",
        *[f"- {c}" for c in conclusions(stats, spec)], "",
        "## Dose-response", "", "![dose-response](plots/dose_response.png)", "",
        "Rate = share of greedy answers to held-out prompts containing ござる; style score = mean teacher-forced "
        "log p(ござる ending) − log p(polite ending) at the first rewritten sentence end of each held-out answer.",
        "",
        "## Cells", "", "Share, rate and CIs in %; CIs are 95 % bootstrap over seeds and prompts "
        f"({spec.bootstrap} draws); forgetting_orig = loss increase on the original held-out answers, "
        "forgetting = on plain prose; — = not measured.", "",
        _md(cells, {"share": ".1f", "rate": ".1f", "rate_low": ".1f", "rate_high": ".1f", "style": ".2f",
                    "style_low": ".2f", "style_high": ".2f"}), "",
        "## Share reaching 50 % / 90 % of the full-FT rate", "",
        _md(stats.thresholds, {"share": ".3f", "low": ".3f", "high": ".3f", "not_reached": ".2f"}), "",
        "(shares as fractions; inf = not reached within the levels studied; not_reached = share of bootstrap draws "
        "that never reach it)", "",
        f"## Equivalence tests (TOST, margin {m})", "",
        "Runs paired on share level, the other factor and seed; diff in rate units (a − b).", "",
        "### Position", "", verdict_sentence(stats.tost["position"], "position"), "",
        _md(stats.tost["position"]["pairs"]) if len(stats.tost["position"]["pairs"]) else "(no pairs)", "",
        "### Type", "", verdict_sentence(stats.tost["type"], "type"), "",
        _md(stats.tost["type"]["pairs"]) if len(stats.tost["type"]["pairs"]) else "(no pairs)", "",
        "## Logistic model", "",
        "GLM Binomial of each answer's ござる outcome on log(share) + position + type (partial-training cells), "
        f"standard errors clustered by run. {stats.logistic['note']}.", "",
        _md(stats.logistic["table"]) if stats.logistic.get("table") is not None else "", "",
        "## Learning rate per share level", "",
        f"Sweep: whole layers at the middle of the stack, seed 0, {spec.sweep_steps} steps per candidate "
        f"(training lr × {', '.join(f'{f:g}' for f in spec.lr_factors)}), validation = the last "
        f"{sweep.get('n_validation_rows')} training rows (left out of the sweep's training); the lowest "
        "validation loss wins. Attention-only and MLP-only cells use the rate of their share level.", "",
        _md(pd.DataFrame(sweep["table"]), {"lr": ".3g", "factor": "g"}), "", _sweep_edges(sweep), "",
        "## Style vs forgetting", "", "![style vs forgetting](plots/style_vs_forgetting.png)", "",
        "## Weight change (‖ΔW‖/‖W‖, first seed)", "", "![weight change](plots/weight_change.png)", "",
        "## Data", "",
        (", ".join(f"{k}: {v}" for k, v in dropped.items()) or "nothing was dropped or truncated") + ".", "",
        "## Time", "", f"Wall time of the study: {wall:.0f} s (added up over every invocation that continued it; "
        "building the base model is not counted).",
        "", "| phase | seconds | share |", "|---|---|---|",
        *[f"| {name} | {s:.0f} | {100 * s / wall if wall else 0:.0f} % |" for name, s in phases], "",
        "Tables: `cells.csv`, `study_runs.csv`, `thresholds.csv`, `tost_position.csv`, `tost_type.csv`, "
        "`logistic.csv`, `results.csv`, `lr_sweep.json`, `floor.json`.", ""]
    path = os.path.join(out, "report.md")
    write_text_atomic(path, "\n".join(text))
    return path
