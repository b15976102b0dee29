"""The notebooks execute headless with quick settings (GOZARU_QUICK=1), and match their generator script."""
import os
import subprocess
import sys

import pytest

import nbformat
import nbclient
import ipykernel  # noqa: F401  (the kernel the notebooks run on)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("01_quickstart.ipynb", "02_seed_grid.ipynb", "03_real_model.ipynb")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv("GOZARU_QUICK", "1")
    monkeypatch.setenv("GOZARU_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("GOZARU_RINNA_DIR", raising=False)
    monkeypatch.delenv("GOZARU_DOLLY", raising=False)
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_notebooks_match_their_generator(tmp_path):
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_notebooks.py"), str(tmp_path)], check=True,
                   capture_output=True)
    for name in NOTEBOOKS:
        with open(os.path.join(ROOT, "notebooks", name), encoding="utf-8") as a, \
                open(tmp_path / name, encoding="utf-8") as b:
            assert a.read() == b.read(), f"notebooks/{name} is stale: run python scripts/make_notebooks.py"
