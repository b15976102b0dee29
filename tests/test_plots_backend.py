"""Plots draw with the user's matplotlib backend (MPLBACKEND, matplotlibrc, a notebook's inline) and never
switch it; headless, matplotlib's own fallback (Agg) applies."""
import os
import subprocess
import sys
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = """
import matplotlib, pandas as pd
from gozaru.lab import plots
rows = [dict(name="base", group="base", position="none", gozaru_rate=0.1, rate_low=0.0, rate_high=0.3, budget=0.0),
        dict(name="full", group="full", position="all", gozaru_rate=0.9, rate_low=0.7, rate_high=1.0, budget=1.0)]
fig = plots.rate_by_condition(pd.DataFrame(rows), path="rate.png")
print(matplotlib.get_backend().lower())
"""


def run(tmp_path, env):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY")},
                               "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "rate.png").stat().st_size > 0
    return proc.stdout.strip().splitlines()[-1]


def test_the_users_backend_is_kept(tmp_path):
    assert run(tmp_path, {"MPLBACKEND": "svg"}) == "svg"


def test_headless_falls_back_to_agg(tmp_path):
    assert run(tmp_path, {}) == "agg"
