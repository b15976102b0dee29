"""The linter's rules hold over the Python tree: ``ruff check`` with the project's configuration (pyproject.toml
``[tool.ruff]``) when ruff is installed, and the line-length rule checked here in any case (width as ruff counts
it: East Asian wide characters take two columns)."""
import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys
import unicodedata

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TREES = ("gozaru", "tests", "benchmarks", "scripts", "setup.py")


def python_files():
    for tree in TREES:
        path = ROOT / tree
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in line)


def test_line_length():
    # [tool.ruff]'s line-length (read as text: tomllib is Python >= 3.11 only)
    limit = int(re.search(r"^\[tool\.ruff\]\s*\nline-length\s*=\s*(\d+)", (ROOT / "pyproject.toml").read_text(),
                          re.M).group(1))
    long = [f"{p.relative_to(ROOT)}:{i}" for p in python_files()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if width(line) > limit]
    assert not long, f"lines over {limit} columns: {', '.join(long)}"


def test_ruff():
    # the environment's own ruff first: `.venv/bin/python -m pytest` runs without .venv/bin on PATH
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (the test extra installs it)")
    done = subprocess.run([ruff, "check", *TREES], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_the_parser_is_built_from_small_functions():
    tree = ast.parse((ROOT / "gozaru" / "lab" / "cli_args.py").read_text(encoding="utf-8"))
    long = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
            and n.end_lineno - n.lineno + 1 > 60}
    assert not long, f"functions over 60 lines in gozaru/lab/cli_args.py: {long}"
