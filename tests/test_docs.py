"""Docs that cannot drift: every `gozaru` command in a bash block of README.md and docs/*.md parses with the
real CLI parser, those whose inputs a small stand-in of the demo's folder provides are executed, and the
README's Python blocks run (except those that need a download, each named below with its reason)."""
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

import gozaru as gz
from gozaru.data import SyntheticCorpus
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab.cli import COMMANDS
from gozaru.lab.cli_args import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# README python blocks that need files from the Hub (rinna's weights, dolly-ja): not run offline, by how they
# start.
NEEDS_DOWNLOAD = {
    "from gozaru.data import load_dolly, to_gozaru": "reads databricks-dolly-15k-ja.json",
    "from gozaru import experiment, plots": "loads rinna-3.6b and trains a grid on it",
}


def code_blocks(path, lang):
    return [body for kind, body in FENCE.findall(path.read_text(encoding="utf-8")) if kind == lang]


def documented_commands():
    """(file, argv) for each `gozaru …` line of a bash block (continuations joined, comments dropped)."""
    out = []
    for path in DOCS:
        for body in code_blocks(path, "bash"):
            for line in body.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if argv and argv[0] == "gozaru":
                    out.append((path.name, argv))
    return out


def test_every_documented_command_parses():
    commands = documented_commands()
    assert len(commands) >= 10, "the docs' command examples went missing"
    parser = build_parser(COMMANDS, "test")
    for name, argv in commands:
        try:
            parser.parse_args(argv[1:])
        except SystemExit as e:
            if e.code not in (0, None):
                pytest.fail(f"{name}: `{' '.join(argv)}` does not parse (exit {e.code})")


@pytest.fixture(scope="module")
def demo_layout(tmp_path_factory):
    """The files `gozaru demo` leaves in runs/demo that the README's commands read, made small and fast."""
    root = tmp_path_factory.mktemp("docs")
    base = root / "runs" / "demo" / "base"
    runs = root / "runs" / "demo" / "runs"
    base.mkdir(parents=True)
    runs.mkdir(parents=True)
    tok = Tokenizer.train(SyntheticCorpus(seed=0).pretrain_texts(200), vocab_size=600, model_prefix_or_dir=base)
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64)
    model = gz.Model(cfg, seed=0)
    model.save(str(base / "base.h5"))
    model.save(str(runs / "full.h5"))
    lm = gz.lora.attach(model, r=2)
    lm.save(str(runs / "last-22pct-lora8.h5"))
    return root


def _inputs_exist(argv, cwd):
    """True when every path-looking argument that is read exists (outputs are created)."""
    command = argv[1] if len(argv) > 1 else ""
    reads = {"export-hf": argv[2:3], "import-hf": argv[2:3], "info": [a for a in argv[2:] if not a.startswith("-")]}
    if command not in reads:
        return False
    paths = [p for p in reads[command] if "*" not in p]
    return bool(paths) and all((cwd / p).exists() for p in paths)


def test_readme_commands_run(demo_layout):
    ran = []
    for name, argv in documented_commands():
        if name != "README.md" or not _inputs_exist(argv, demo_layout):
            continue
        proc = subprocess.run([sys.executable, "-m", "gozaru", *argv[1:]], cwd=demo_layout, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, f"README.md: `{' '.join(argv)}` failed: {proc.stderr[-2000:]}"
        ran.append(argv[1])
    # the README's export/import/info walk-through is there and runs
    assert {"export-hf", "import-hf", "info"} <= set(ran), ran


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(ROOT / "README.md", "python")
    def needs_download(body):
        return any(body.startswith(start) for start in NEEDS_DOWNLOAD)

    for start in NEEDS_DOWNLOAD:
        assert any(b.startswith(start) for b in blocks), f"NEEDS_DOWNLOAD names a block the README lost: {start}"
    namespace = {"np": np, "gz": gz}
    ran = 0
    for body in blocks:
        if needs_download(body):
            continue
        if "precision=\"bf16\"" in body and not gz.build_info()["bf16"]["usable"]:
            body = body.replace('precision="bf16")', 'precision="bf16-emulated")')
        exec(compile(body, "README.md", "exec"), namespace)
        ran += 1
    assert ran >= 4
