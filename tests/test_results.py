"""The committed studies (results/study-*) re-render from their committed files: `gozaru study report DIR` on a
copy rewrites report.md, the tables and study.json byte for byte (no training: per-run, per-prompt records
are committed). The figures are redrawn too; their bytes depend on the matplotlib and FreeType builds, so
only their presence is checked."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "results").glob("*/study.json"))
# a study whose report folder also holds the side-by-side table of other studies (sizes.md)
SIDE_BY_SIDE = {"study-large": ("study-demo", "study-head-frozen"),
                "study-llama": ("study-demo", "study-head-frozen"),
                "study-llama-large": ("study-large", "study-llama")}
TEXT = ("report.md", "study.json", "cells.csv", "comparisons.csv", "study_runs.csv", "thresholds.csv",
        "curves.csv", "steps_to.csv")


def test_the_committed_studies_are_there():
    committed = {"study-demo", "study-head-frozen", "study-large", "study-llama", "study-llama-large"}
    assert committed <= {p.name for p in STUDIES}


@pytest.mark.parametrize("folder", STUDIES, ids=[p.name for p in STUDIES])
def test_a_committed_study_re_renders_byte_for_byte(folder, tmp_path):
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    for name in TEXT:
        if name != "study.json":   # the study's definition is read from it; render rewrites its comparisons
            (copy / name).unlink()
    shutil.rmtree(copy / "plots")
    others = SIDE_BY_SIDE.get(folder.name, ())
    for other in others:
        shutil.copytree(folder.parent / other, tmp_path / other, ignore=shutil.ignore_patterns("plots"))
    if others:
        (copy / "sizes.md").unlink()
    done = subprocess.run([sys.executable, "-m", "gozaru", "study", "report", str(copy),
                           *(str(tmp_path / o) for o in others)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    for name in TEXT + (("sizes.md",) if others else ()):
        assert (copy / name).read_bytes() == (folder / name).read_bytes(), f"{folder.name}/{name} differs"
    assert sorted(p.name for p in (copy / "plots").iterdir()) == sorted(p.name for p in (folder / "plots").iterdir())
