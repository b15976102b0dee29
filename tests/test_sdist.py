"""The source distribution carries every file of csrc/ (a build with GOZARU_CUDA=1 needs csrc/cuda/*.cu too)."""
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_SUFFIXES = (".c", ".h", ".cu", ".cuh")


def tree_sources():
    found = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "csrc")):
        for f in files:
            if f.endswith(SOURCE_SUFFIXES):
                found.add(os.path.relpath(os.path.join(folder, f), ROOT))
    return found


def test_sdist_holds_every_csrc_source(tmp_path):
    # a fresh egg-info folder: an old SOURCES.txt in the tree would carry files MANIFEST.in no longer names
    egg = tmp_path / "egg"
    egg.mkdir()
    out = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(egg), "sdist",
                          "--dist-dir", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (archive,) = list(tmp_path.glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    in_sdist = {n for n in names if n.startswith("csrc/")}
    expected = tree_sources()
    assert any(n.endswith(".cu") for n in expected) and any(n.endswith(".cuh") for n in expected)
    assert expected <= in_sdist, f"missing from the sdist: {sorted(expected - in_sdist)}"
    for needed in ("setup.py", "pyproject.toml", "scripts/system_deps.sh", "gozaru/__init__.py",
                   "gozaru/engine/system.py"):
        assert needed in names, needed
