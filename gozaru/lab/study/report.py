"""``OUT/report.md`` of a study: every number, verdict and sentence is rendered from the statistics
(``gozaru.lab.study.stats``) of the folder's files; the figures are drawn by ``gozaru.lab.plots``. Nothing is
written by hand, so ``gozaru study report DIR`` reproduces the file byte for byte."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd

from ...fileio import write_json_atomic, write_text_atomic
from .. import plots
from ..experiment import fmt
from .spec import MEASURES

_WHAT = {"position": "Position", "type": "Type", "head": "Training the head"}


def pct(x) -> str:
    return fmt(100 * x if x == x else x, ".1f") + " %"


def _ci(lo, hi) -> str:
    return f"[{fmt(lo, '.1f')}, {fmt(hi, '.1f')}]"


def _share(x) -> str:
    return "—" if x != x else f"{100 * x:.1f} %"


def _threshold_text(r) -> str:
    if r["kind"] == "estimate":
        return f"≈ {_share(r['share'])} (between the measured {_share(r['low'])} and {_share(r['high'])})"
    if r["kind"] == "at most":
        return f"≤ {_share(r['high'])} (reached at the smallest measured share)"
    if r["kind"] == "between":
        return f"between {_share(r['low'])} and {_share(r['high'])} (too far apart to interpolate)"
    return f"> {_share(r['low'])} (not reached)"


def _context(c: dict) -> str:
    keys = [f"{k} {c[k]}" for k in ("type", "position") if k in c] + \
        ([f"head {c['head']}"] if "head" in c else [])
    level = c["level"]
    lev = f"{level} layer{'s' if level != 1 else ''}" if isinstance(level, int) else str(level)
    return lev + ", " + ", ".join(keys)


def comparison_sentences(comparisons: list, measure: str = "adoption") -> list[str]:
    """One sentence per compared pair on ``measure``: the verdict at each lr policy, and whether it depends on
    the policy."""
    groups: dict = {}
    for c in comparisons:
        if c["measure"] != measure:
            continue
        key = json.dumps({k: v for k, v in c.items() if k in ("factor", "a", "b", "level", "type", "position",
                                                                 "head")}, sort_keys=True)
        groups.setdefault(key, []).append(c)
    out = []
    for items in groups.values():
        c0 = items[0]
        parts = [f"{c['policy']}: **{c['verdict']}** ({c['diff']:+.1f} points, 95 % CI {_ci(*c['ci'])}, "
                 f"p = {c['p']:.2g}, p_TOST = {c['p_tost']:.2g})" for c in items]
        verdicts = {c["verdict"] for c in items}
        dep = "the verdict does not depend on the lr policy" if len(verdicts) == 1 else \
            "**the verdict depends on the lr policy**"
        out.append(f"{_WHAT[c0['factor']]} — {c0['a']} vs {c0['b']} ({_context(c0)}), {measure}: "
                   + "; ".join(parts) + f" — {dep}.")
    return out


def _md(frame: pd.DataFrame, floats: dict | None = None, default: str = ".3f") -> str:
    floats = floats or {}
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        cells = [fmt(r[c], floats.get(c, default)) if isinstance(r[c], (float, np.floating)) else str(r[c])
                 for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct_cols(frame: pd.DataFrame, cols) -> pd.DataFrame:
    frame = frame.copy()
    for c in cols:
        frame[c] = 100 * frame[c]
    return frame


def headline(stats) -> list[str]:
    c = stats.cells
    out = []
    for policy in stats.policies:
        g = c[c["policy"] == policy]
        full, head = g[g["level"] == "all"], g[g["level"] == "head"]
        s = f"At {policy}: "
        bits = []
        if len(head):
            h = head.iloc[0]
            bits.append(f"the head alone ({100 * h['share']:.1f} % of the weights, lr {h['lr']:.3g}) reaches "
                        f"adoption {pct(h['adoption'])} {_ci(100 * h['adoption_low'], 100 * h['adoption_high'])}")
        if len(full):
            f = full.iloc[0]
            bits.append(f"full fine-tuning (lr {f['lr']:.3g}) {pct(f['adoption'])} "
                        f"{_ci(100 * f['adoption_low'], 100 * f['adoption_high'])}, sampled {pct(f['sampled_rate'])}, "
                        f"greedy {pct(f['greedy_rate'])}")
        out.append(s + ("; ".join(bits) or "no reference cells") + ".")
    return out


def _sweep_section(spec, sweep: dict) -> list[str]:
    return ["![lr sweep](plots/lr_sweep.png)", "",
            f"Per cell, {len(spec.sweep_factors)} log-spaced lrs (training lr × "
            f"{', '.join(f'{f:g}' for f in spec.sweep_factors)}), widened by ×{sweep['ratio']:.3g} up to "
            f"{spec.sweep_widen} time(s) while the best is on an edge; sweep seeds "
            f"{', '.join(map(str, spec.sweep_seeds))}; {sweep['steps']} steps; validation = the last "
            f"{sweep['n_validation_rows']} training rows (held out of the sweep's training).", "",
            _md(pd.DataFrame([{"cell": k, "tuned lr": v["lr"], "edge": v["edge"] or "inside"}
                              for k, v in sweep["chosen"].items()]), {"tuned lr": ".3g"}), ""]


def write_report(spec, out: str, stats, saved: dict) -> str:
    plots_dir = os.path.join(out, "plots")
    plt = plots._pyplot()
    plt.close(plots.study_cells(stats.cells, os.path.join(plots_dir, "cells.png")))
    if len(stats.curves):
        plt.close(plots.study_curves(stats.curves, os.path.join(plots_dir, "learning_curves.png")))
    sweep = stats.sweep or {"chosen": {}, "table": []}
    if sweep["table"]:
        plt.close(plots.study_sweep(pd.DataFrame(sweep["table"]), os.path.join(plots_dir, "lr_sweep.png")))
    write_json_atomic(os.path.join(out, "study.json"), {**saved, "comparisons": stats.comparisons})

    base, floor = stats.base, stats.floor
    edges = [f"{cell} ({v['edge']} edge, best {v['lr']:.3g})" for cell, v in sweep["chosen"].items()
             if v["edge"]]
    m = f"±{100 * spec.margin:g} points"
    cells = _pct_cols(stats.cells, [f"{x}{s}" for x in MEASURES for s in ("", "_low", "_high")] + ["share"])
    cells = cells[["cell", "policy", "lr", "n_seeds", "share"] + [f"{x}{s}" for x in MEASURES for s in
                                                                   ("", "_low", "_high")]
                  + ["suppression", "forgetting"]]
    comp = pd.DataFrame(stats.comparisons)
    if len(comp):
        comp = comp.assign(ci=[f"[{lo:.1f}, {hi:.1f}]" for lo, hi in comp["ci"]])
        comp = comp[[c for c in ("factor", "a", "b", "level", "type", "position", "head", "policy", "measure",
                                 "n_seeds", "diff", "ci", "p", "p_tost", "verdict") if c in comp.columns]]
    inter = [f"- {r['name']} ({r['policy']}): " + (f"F = {r['F']:.2f}, p = {r['p']:.2g} (df {r['df'][0]:g}, "
                                                     f"{r['df'][1]:g}; {r['note']})" if r["ok"] else r["note"])
             for r in stats.interactions]
    timing = saved.get("timing") or {}
    if os.path.exists(os.path.join(out, "timing.json")):
        from ...fileio import read_json
        timing = read_json(os.path.join(out, "timing.json"))
    wall = sum(timing.values())
    train_s = float(stats.runs.drop_duplicates("name")["train_seconds"].sum())
    text = [
        "# Which layers must be trained for a style? ござる study", "",
        f"{stats.runs['name'].nunique()} evaluation runs: cells (share level × type × position × head) "
        f"{', '.join(dict.fromkeys(stats.cells['cell']))} × seeds {', '.join(map(str, spec.seeds))}, each at its "
        f"tuned learning rate and at the matched rates {', '.join(f'{x:g}' for x in spec.lrs) or '(none)'}. "
        f"Equivalence margin {m} on the 0–100 % scale of every measure, fixed before the run; α = {spec.alpha:g} "
        "after Holm correction within each (lr policy, measure) family.", "",
        "**Sizes.** " + (saved.get("sizes") or "as given on the command line")
        + (f" {spec.notes}" if spec.notes else ""), "",
        *([f"**Design notes.** {' '.join(saved['plan_notes'])}", ""] if saved.get("plan_notes") else []),
        *([f"**Unfinished.** {len(stats.missing)} of {len(stats.missing) + stats.runs['name'].nunique()} planned "
           "runs have no record yet; everything below is rendered from the finished ones, and cells or "
           "comparisons they lack are left out. Rerunning the study's command finishes it.", ""]
          if stats.missing else []),
        "## Conclusions", "",
        "*Every number and verdict below is rendered by `gozaru.lab.study.report` from `study.json`'s "
        "`comparisons` and the tables in this folder.*", "",
        f"- The untrained base: adoption {pct(float(np.mean(base['adoption'])))}, greedy ござる-rate "
        f"{pct(float(np.mean(base['greedy'])))}; with {floor.get('shots', 0)} ござる example(s) in the prompt "
        f"(no training) greedy {pct(floor.get('rate', float('nan')))}.",
        *[f"- {s}" for s in headline(stats)],
        *[f"- {s}" for s in comparison_sentences(stats.comparisons, "adoption")],
        "- " + ("The learning-rate sweep has not run yet: no tuned policy." if stats.sweep is None else
                "Cells whose tuned lr stayed on the edge of the widened sweep are not reported at the tuned "
                "policy: " + ", ".join(edges) + "." if edges else
                "Every cell's tuned learning rate lies inside its (widened) sweep."), "",
        "Adoption is the primary measure; the same comparisons on the sampled and greedy rates:", "",
        *[f"- {s}" for s in comparison_sentences(stats.comparisons, "sampled_rate")],
        *[f"- {s}" for s in comparison_sentences(stats.comparisons, "greedy_rate")], "",
        "Why the policies can disagree: a cell with few trainable weights needs a larger lr than full "
        "fine-tuning, so at one matched lr some cells are under-trained while others saturate; the tuned policy "
        "gives each cell its own best lr (by validation loss on sweep seeds), the matched policies show the same "
        "cells at equal step sizes. A verdict that holds under every policy does not depend on that choice.", "",
        "## Measures", "",
        "*adoption* = mean over held-out answers of p(ござる ending) / (p(ござる ending) + p(polite ending)) at the "
        "first rewritten sentence end (teacher forced); *suppression* = mean log p(polite ending) (nats; more "
        f"negative = pushed down further); *sampled rate* = share of {spec.samples} answers per prompt sampled "
        "at T = 1 (seeded) containing ござる; *greedy rate* = the same for the greedy answer; *forgetting* = "
        "increase of the loss on the original (polite) held-out answers over the base's.", "",
        "## Cells", "", "![cells](plots/cells.png)", "",
        f"Measures and share in %; CIs 95 % nested bootstrap ({spec.bootstrap} draws: seeds, then prompts within "
        "seed).", "",
        _md(cells, {"lr": ".3g", "share": ".1f", **{f"{x}{s}": ".1f" for x in MEASURES for s in ("", "_low",
                                                                                             "_high")}}), "",
        "## Comparisons", "",
        f"diff = a − b in points with its 95 % CI; p (no difference) and p_TOST (|diff| < {m}) are nested-bootstrap "
        "p-values, Holm-corrected.", "",
        _md(comp, {"diff": "+.1f", "p": ".2g", "p_tost": ".2g"}) if len(comp) else "(no pairs)", "",
        "## Interactions", "", "OLS on run-level adoption, F test of the interaction term.", "", *inter, "",
        "## Share reaching 50 % / 90 % of full FT's adoption", "",
        *[f"- {r['type']}, head {r['head']}, {r['policy']}: {100 * r['fraction']:g} % at {_threshold_text(r)}"
          for _, r in stats.thresholds.iterrows()], "",
        "## Learning curves", "",
        *(["![learning curves](plots/learning_curves.png)", "",
           f"Adoption measured every {spec.curve_every} steps; steps until the mean adoption reaches 50 % / 90 % "
           "of full FT's final adoption at the same policy:", "", _md(stats.steps_to)] if len(stats.curves)
          else ["(none recorded)"]), "",
        "## Learning-rate sweep", "", *(_sweep_section(spec, sweep) if stats.sweep else ["(not run yet)", ""]),
        "## Time", "",
        f"Wall time: {wall:.0f} s over every invocation that continued the study (building the base not "
        f"counted); training {train_s:.0f} s of it.", "",
        "| phase | seconds |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in timing.items()], "",
        "Files: `study.json` (definition and `comparisons`), `plan.json`, `runs/*.json` (per run: per-prompt "
        "greedy and sampled outcomes, per-item adoption and suppression, learning curve), `sweep/*.json`, "
        "`sweep.json`, `floor.json`, `timing.json`; tables `cells.csv`, `comparisons.csv`, `study_runs.csv`, "
        "`thresholds.csv`, `curves.csv`, `steps_to.csv`. Re-render with `gozaru study report DIR`.", ""]
    path = os.path.join(out, "report.md")
    write_text_atomic(path, "\n".join(text))
    return path


def _model_label(study: dict) -> str | None:
    """The base model as the study's ``sizes`` sentence names it ("GPT-NeoX, 531,072 parameters"; the family
    when the sentence names one), if it does."""
    m = re.search(r"(?:base (\S+) )?with ([\d,]+) parameters", study.get("sizes", ""))
    return ((f"{m.group(1)}, " if m.group(1) else "") + f"{m.group(2)} parameters") if m else None


def _columns(folders: list[str], studies: list[dict], factor: str) -> list[str]:
    """One column per base model, so that studies of one model (e.g. head trained, head frozen) share it —
    unless a model's studies repeat a comparison, or a size is not named: then one column per folder."""
    labels = [_model_label(s) for s in studies]
    seen = set()
    for label, s in zip(labels, studies):
        for c in s.get("comparisons", []):
            if c["factor"] == factor:
                key = (label, c["a"], c["b"], _context(c), c["policy"], c["measure"])
                if label is None or key in seen:
                    return [os.path.basename(os.path.normpath(f)) for f in folders]
                seen.add(key)
    return labels


def write_sizes(folders: list[str], path: str, factor: str = "position") -> str:
    """The ``factor`` comparisons of several studies (e.g. two model sizes) side by side, from each folder's
    ``study.json``: one row per comparison, policy and measure; one column per base model (studies of the same
    model merged), each cell the difference, its CI and verdict."""
    from ...fileio import read_json
    studies = [read_json(os.path.join(f, "study.json")) for f in folders]
    cols = _columns(folders, studies, factor)
    keys = {}
    for col, s in zip(cols, studies):
        for c in s.get("comparisons", []):
            if c["factor"] != factor:
                continue
            key = (f"{c['a']} vs {c['b']} ({_context(c)})", c["policy"], c["measure"])
            keys.setdefault(key, {})[col] = f"{c['diff']:+.1f} {_ci(*c['ci'])} {c['verdict']}"
    unique = list(dict.fromkeys(cols))
    rows = [{"comparison": k[0], "policy": k[1], "measure": k[2], **{c: v.get(c, "—") for c in unique}}
            for k, v in keys.items()]
    text = ["# " + _WHAT[factor] + " across studies", "",
            "Per study: a − b in points, 95 % nested-bootstrap CI, verdict (Holm-corrected within each study, "
            "margin of each study's spec). Studies:", "",
            *[f"- **{os.path.basename(os.path.normpath(f))}** ({c}): {s.get('sizes', '')}"
              for f, c, s in zip(folders, cols, studies)], "",
            _md(pd.DataFrame(rows)) if rows else "(no comparisons of this factor)", ""]
    write_text_atomic(path, "\n".join(text))
    return path
