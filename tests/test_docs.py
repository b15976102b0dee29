"""Docs that cannot drift: every `gozaru` command in a bash block of README.md and docs/*.md parses with the
real CLI parser; the README's commands run, in order, against a small stand-in of the demo's folder (a tiny base,
its tokenizer, two finished runs and a dolly-ja.jsonl of synthetic records), except those that need a download,
each named below with its reason; and the README's Python blocks run (with the same exception)."""
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

import gozaru as gz
from gozaru.data import SyntheticCorpus, save_jsonl
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


# README commands not run, by how they start, and why (each must still be in the README).
NOT_RUN = {
    "gozaru import-hf path/to/japanese-gpt-neox-3.6b": "needs rinna's 3.6B weights (a download)",
    "gozaru import-hf path/to/llama-3-youko-8b": "needs an 8B Llama folder (a download)",
}
# The arguments each command reads (parsed names): it runs when every one given exists (outputs are created).
READS = {"import-hf": ("folder",), "export-hf": ("checkpoint",), "info": ("checkpoints",),
         "train": ("base", "hf", "resume", "data", "tokenizer"), "eval": ("checkpoint", "base", "data", "tokenizer"),
         "grid": ("base", "hf", "data", "tokenizer", "grid")}


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
                           intermediate_size=64, max_position_embeddings=128)  # the demo base's positions
    model = gz.Model(cfg, seed=0)
    model.save(str(base / "base.h5"))
    model.save(str(runs / "full.h5"))
    lm = gz.lora.attach(model, r=2)
    lm.save(str(runs / "last-22pct-lora8.h5"))
    save_jsonl(SyntheticCorpus(seed=0).instructions(260, seed=1), root / "dolly-ja.jsonl")  # "your own data"
    return root


def _reads(argv):
    """The paths a documented command reads, from the real parser."""
    ns = build_parser(COMMANDS, "test").parse_args(argv[1:])
    paths = []
    for name in READS.get(ns.command, ()):
        value = getattr(ns, name, None)
        paths += value if isinstance(value, list) else [value] if value else []
    return paths


def test_readme_commands_run(demo_layout):
    """Each README command runs where it reads only what the stand-in has (or an earlier command wrote), or is
    named in NOT_RUN with its reason; the train, eval, grid, export, import and info walk-throughs all run."""
    ran, skipped = [], []
    for name, argv in documented_commands():
        if name != "README.md":
            continue
        line = " ".join(argv)
        reason = next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)
        if reason:
            skipped.append(line)
            continue
        paths = _reads(argv)
        missing = [p for p in paths if not (demo_layout / p).exists()]
        assert paths and not missing, (f"README.md: `{line}` reads {missing or 'nothing known'}, which the stand-in "
                                       "does not have: give it the file, or name the command in NOT_RUN with why")
        proc = subprocess.run([sys.executable, "-m", "gozaru", *argv[1:], *(["--no-progress"] if argv[1] in (
            "train", "eval", "grid") else [])], cwd=demo_layout, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, f"README.md: `{line}` failed: {proc.stderr[-2000:]}"
        ran.append(argv[1])
    for start in NOT_RUN:
        assert any(s.startswith(start) for s in skipped), f"NOT_RUN names a command the README lost: {start}"
    assert {"train", "eval", "grid", "export-hf", "import-hf", "info"} <= set(ran), ran


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
