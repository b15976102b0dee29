"""Figures of an experiment (matplotlib): ござる-rate per condition with 95 % CIs, loss curves, and the
‖ΔW‖/‖W‖ heatmap (layers × tensor kind). Each function returns the figure and, given ``path``, writes a PNG."""
from __future__ import annotations

import os

import numpy as np

from .evaluate import change_grid
from .experiment import grad_norms_frame, load_record, load_results, weight_change_frame

_GROUP_ORDER = ("base", "full", "mlp", "non_mlp", "first", "last", "random", "custom")
_POSITION_ORDER = ("none", "all", "first", "last", "random")


def _pyplot():
    # The user's backend is left alone (inline in notebooks, MPLBACKEND, matplotlibrc): without a display
    # matplotlib itself falls back to the off-screen Agg.
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    if path:
        if os.path.dirname(os.fspath(path)):
            os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def rate_by_condition(results, path=None, by: str = "group", title: str | None = None):
    """ござる-rate of every run with its Wilson 95 % interval, ordered and coloured by ``by`` ("group" = type of
    condition, or "position"); the base model's rate is a dashed line. Labels say "gozaru-rate": plain ASCII
    renders without a CJK font."""
    import pandas as pd
    plt = _pyplot()
    frame = pd.DataFrame(results).copy()
    order = _GROUP_ORDER if by == "group" else _POSITION_ORDER
    frame["_key"] = frame[by].map(lambda g: order.index(g) if g in order else len(order))
    frame = frame.reset_index(drop=True).reset_index().sort_values(["_key", "index"])
    base = frame[frame["group"] == "base"]
    runs = frame[frame["group"] != "base"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(runs) + 2), 4.2))
    groups = list(dict.fromkeys(runs[by]))
    colours = plt.get_cmap("tab10")
    x = np.arange(len(runs))
    for gi, group in enumerate(groups):
        sel = (runs[by] == group).to_numpy()
        rate = runs["gozaru_rate"].to_numpy()[sel]
        err = np.vstack([rate - runs["rate_low"].to_numpy()[sel], runs["rate_high"].to_numpy()[sel] - rate])
        ax.bar(x[sel], rate, color=colours(gi % 10), alpha=0.8, label=str(group))
        ax.errorbar(x[sel], rate, yerr=np.clip(err, 0, None), fmt="none", ecolor="black", capsize=3, lw=1)
    if len(base):
        ax.axhline(float(base["gozaru_rate"].iloc[0]), color="grey", ls="--", lw=1, label="base (no fine-tuning)")
    ax.set_xticks(x)
    ax.set_xticklabels(runs["name"], rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("gozaru-rate (95 % CI)")
    ax.set_title(title or f"gozaru-rate per condition (by {by})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def loss_curves(records, path=None, smooth: int = 5, title: str = "training loss"):
    """Training loss per step (moving average over ``smooth`` steps) of each run; eval loss as markers.

    ``records``: ``{name: record}`` (see ``gozaru.experiment.load_record``) or an experiment folder."""
    plt = _pyplot()
    records = _records(records)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.get_cmap("tab20")
    any_eval = False
    for i, (name, rec) in enumerate(records.items()):
        hist = rec.get("history", [])
        if not hist:
            continue
        steps = np.array([h["step"] for h in hist])
        loss = np.array([h["loss"] for h in hist], dtype=float)
        if smooth > 1 and len(loss) >= smooth:
            loss = np.convolve(loss, np.ones(smooth) / smooth, mode="valid")
            steps = steps[smooth - 1:]
        ax.plot(steps, loss, color=colours(i % 20), lw=1.2, label=name)
        ev = rec.get("eval_history", [])
        if ev:
            any_eval = True
            ax.plot([e["step"] for e in ev], [e["eval_loss"] for e in ev], "o", color=colours(i % 20), ms=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / answer token)")
    ax.set_title(title + (" (dots: held-out eval loss)" if any_eval else ""))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def weight_change_heatmaps(results_or_out, out: str | None = None, names=None, path=None, value: str = "rel_change"):
    """‖ΔW‖/‖W‖ vs the base as heatmaps (rows: embed, layers, top = final norm + head; columns: tensor kind),
    one panel per run; ``names`` picks runs (default: every non-random run and the first seed of each random
    budget). ``value="grad_norm"`` shows the mean gradient norms seen in training instead."""
    plt = _pyplot()
    out = out or (results_or_out if isinstance(results_or_out, (str, os.PathLike))
                  else getattr(results_or_out, "attrs", {}).get("out"))
    if out is None:
        raise ValueError("give the experiment folder (out=...)")
    if names is None:
        names = _default_heatmap_runs(results_or_out, out)
    tables = {}
    for name in names:
        frame = grad_norms_frame(out, name) if value == "grad_norm" else weight_change_frame(out, name)
        if len(frame):
            tables[name] = change_grid(frame, value)
    if not tables:
        raise ValueError("no runs to show")
    cols = min(4, len(tables))
    rows = -(-len(tables) // cols)
    first = next(iter(tables.values()))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.2, 0.24 * len(first) * rows + 1.2 * rows + 0.6),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    finite = [t.to_numpy(dtype=float) for t in tables.values()]
    vmax = max((float(np.nanmax(a)) for a in finite if np.isfinite(a).any()), default=0.0)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#eeeeee")   # cells without tensors (e.g. the embedding column of a layer row)
    image = None
    for ax, (name, table) in zip(axes.flat, tables.items()):
        image = ax.imshow(np.ma.masked_invalid(table.to_numpy(dtype=float)), aspect="auto", cmap=cmap,
                          vmin=0.0, vmax=vmax or 1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(table.columns)))
        ax.set_xticklabels(table.columns, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(table.index)))
        ax.set_yticklabels(table.index, fontsize=7)
        ax.tick_params(labelbottom=True)
    for ax in list(axes.flat)[len(tables):]:
        ax.axis("off")
    label = "mean gradient norm" if value == "grad_norm" else "‖ΔW‖ / ‖W‖"
    fig.colorbar(image, ax=axes, shrink=0.8, label=label)
    fig.suptitle(label + " per layer × tensor kind", fontsize=11)
    return _save(fig, path)


def _default_heatmap_runs(results_or_out, out):
    import pandas as pd
    frame = pd.DataFrame(results_or_out) if not isinstance(results_or_out, (str, os.PathLike)) \
        else load_results(out)
    frame = frame[frame["group"] != "base"]
    chosen, seen_random = [], set()
    for _, r in frame.iterrows():
        if r["group"] == "random":
            if r["budget"] in seen_random:
                continue
            seen_random.add(r["budget"])
        chosen.append(r["name"])
    return chosen


def _records(records) -> dict:
    if isinstance(records, (str, os.PathLike)):
        frame = load_results(records)
        return {n: load_record(records, n) for n in frame["name"] if n != "base"}
    return dict(records)


def save_all(results, out: str, folder: str | None = None) -> list[str]:
    """Writes the standard figures of an experiment into ``out/plots`` and returns their paths."""
    plt = _pyplot()
    folder = folder or os.path.join(out, "plots")
    paths = []
    for by in ("group", "position"):
        p = os.path.join(folder, f"rate_by_{by}.png")
        plt.close(rate_by_condition(results, p, by=by))
        paths.append(p)
    p = os.path.join(folder, "loss_curves.png")
    plt.close(loss_curves(out, p))
    paths.append(p)
    for value, fname in (("rel_change", "weight_change.png"), ("grad_norm", "grad_norms.png")):
        p = os.path.join(folder, fname)
        plt.close(weight_change_heatmaps(results, out, path=p, value=value))
        paths.append(p)
    return paths


# --------------------------------------------------------------------------- the study (gozaru.lab.study)
_MEASURE_LABELS = {"adoption": "adoption", "sampled_rate": "sampled rate (T=1)", "greedy_rate": "greedy rate"}


def study_cells(cells, path=None, measures=("adoption", "sampled_rate", "greedy_rate")):
    """Per lr policy (rows) and measure (columns): each cell's mean with its 95 % nested-bootstrap CI."""
    plt = _pyplot()
    policies = list(dict.fromkeys(cells["policy"]))
    fig, axes = plt.subplots(len(policies), len(measures), figsize=(4.2 * len(measures), 0.4 + 2.6 * len(policies)),
                             squeeze=False, layout="constrained")
    for i, policy in enumerate(policies):
        g = cells[cells["policy"] == policy].sort_values("share")
        y = np.arange(len(g))
        for j, m in enumerate(measures):
            ax = axes[i][j]
            err = np.vstack([g[m] - g[m + "_low"], g[m + "_high"] - g[m]]).clip(min=0)
            ax.errorbar(100 * g[m], y, xerr=100 * err, fmt="o", ms=4, capsize=2)
            ax.set_yticks(y, [c.replace(" head-", "\nhead-") for c in g["cell"]], fontsize=6)
            ax.set_xlim(-2, 102)
            ax.grid(alpha=0.3)
            ax.set_title(f"{_MEASURE_LABELS.get(m, m)}, {policy}", fontsize=9)
    fig.suptitle("cell means (%), 95 % CI: nested bootstrap (seeds, then prompts)")
    return _save(fig, path)


def study_curves(curves, path=None):
    """Mean adoption over training steps per cell, one panel per lr policy."""
    plt = _pyplot()
    policies = list(dict.fromkeys(curves["policy"]))
    fig, axes = plt.subplots(1, max(1, len(policies)), figsize=(4.5 * max(1, len(policies)), 3.6), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, policy in zip(axes[0], policies):
        for cell, g in curves[curves["policy"] == policy].groupby("cell", sort=False):
            ax.plot(g["step"], 100 * g["adoption"], marker=".", label=cell)
        ax.set_title(policy, fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("adoption (%)")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("learning curves: adoption, mean over seeds")
    return _save(fig, path)


def study_sweep(table, path=None):
    """Validation loss over the swept learning rates, per cell (diverged runs left out)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for cell, g in table.dropna().groupby("cell", sort=False):
        ax.plot(g["lr"], g["val_loss"], marker="o", label=cell)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation loss (sweep seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return _save(fig, path)
