"""The package's import graph: no circles, and no edge that climbs the documented layer order
(docs/ARCHITECTURE.md): base (``_core``, ``_version``, ``fileio``) < ``engine`` < ``data`` < ``lab`` < ``gozaru``."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gozaru"
LAYERS = {"gozaru._core": 0, "gozaru._runtime": 0, "gozaru._version": 0, "gozaru.fileio": 0, "gozaru.engine": 1,
          "gozaru.data": 2, "gozaru.lab": 3, "gozaru": 4, "gozaru.__main__": 4}


def module_names() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_edges() -> dict[str, set[str]]:
    """module -> gozaru modules it imports anywhere (module level or inside functions)."""
    modules = module_names()
    known = set(modules) | {"gozaru._core"}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "gozaru"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != "gozaru":
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in known else base)
        edges[name] = {t for t in targets if t != name}
    return edges


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def test_every_module_has_a_layer():
    for name in module_names():
        assert any(name == p or name.startswith(p + ".") for p in LAYERS), name


def test_no_upward_imports():
    upward = [f"{a} -> {b}" for a, targets in import_edges().items() for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, "imports that climb the layer order: " + ", ".join(sorted(upward))


def test_no_import_circles():
    edges = import_edges()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_circle(tmp_path, monkeypatch):
    """The walk above must be able to fail: a planted circle is found."""
    (tmp_path / "gozaru" / "lab").mkdir(parents=True)
    (tmp_path / "gozaru" / "__init__.py").write_text("")
    (tmp_path / "gozaru" / "lab" / "__init__.py").write_text("")
    (tmp_path / "gozaru" / "lab" / "a.py").write_text("from . import b\n")
    (tmp_path / "gozaru" / "lab" / "b.py").write_text("def f():\n    from .a import x\n")
    (tmp_path / "gozaru" / "engine.py").write_text("from .lab import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "gozaru")
    edges = import_edges()
    assert edges["gozaru.lab.a"] == {"gozaru.lab.b"} and edges["gozaru.lab.b"] == {"gozaru.lab.a"}
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circles()
    with pytest.raises(AssertionError, match="gozaru.engine -> gozaru.lab.a"):
        test_no_upward_imports()


def test_importing_gozaru_leaves_the_environment_as_it_was():
    """No os.environ change, yet the OpenMP runtime got gozaru's default wait policy (gozaru/_runtime.py) where
    the user set none, and the user's own value where they did (omp_display_env prints what libgomp read)."""
    script = ("import ctypes, os, sys; before = dict(os.environ); import gozaru; "
              "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
              "print(gozaru.build_info()['openmp_library'], flush=True); "
              "ctypes.CDLL('libgomp.so.1').omp_display_env(0)")
    for user, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                                 "OPENBLAS_THREAD_TIMEOUT")}
        if user:
            env["OMP_WAIT_POLICY"] = user
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                              cwd=PACKAGE.parent)
        assert done.returncode == 0, done.stderr[-2000:]
        if "gomp" not in done.stdout:
            pytest.skip(f"the core links another OpenMP runtime: {done.stdout.strip()}")
        assert f"OMP_WAIT_POLICY = '{expected}'" in done.stderr


def test_the_core_reads_no_environment():
    """Environment variables are documented defaults read in Python (gozaru/engine/placement.py,
    gozaru/_runtime.py): no C or CUDA file of the core calls getenv."""
    csrc = PACKAGE.parent / "csrc"
    readers = [str(p.relative_to(csrc)) for p in sorted(csrc.rglob("*"))
               if p.suffix in (".c", ".h", ".cu", ".cuh") and "getenv" in p.read_text(errors="replace")]
    assert readers == [], f"getenv in {readers}"
