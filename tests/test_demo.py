"""`gozaru demo --quick` end to end: 13 reference conditions and a LoRA one plus the base, rates in [0, 1], full
fine-tuning beats the base, plots and checkpoints written; a second run reuses everything."""
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gozaru import demo
from gozaru.lab.experiment import seed_grid


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo") / "quick")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gozaru", "demo", "--quick", "--out", out, "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout, time.perf_counter() - t0


def test_quick_demo_table(quick_demo):
    out, stdout, seconds = quick_demo
    table = pd.read_csv(os.path.join(out, "results.csv"))
    assert len(table) == 15 and table["name"].is_unique
    runs = table[table["group"] != "base"]
    assert len(runs) == 14
    assert sorted(runs["group"].value_counts().items()) == [("first", 2), ("full", 1), ("last", 2), ("lora", 1),
                                                           ("mlp", 1), ("non_mlp", 1), ("random", 6)]
    assert table["gozaru_rate"].between(0, 1).all()
    assert ((table["rate_low"] <= table["gozaru_rate"]) & (table["gozaru_rate"] <= table["rate_high"])).all()
    base = table.loc[table["name"] == "base", "gozaru_rate"].item()
    full = table.loc[table["name"] == "full", "gozaru_rate"].item()
    assert full > base, table[["name", "gozaru_rate"]]
    assert base < 0.2  # the base answers politely
    # the printed table has every condition
    for name in table["name"]:
        assert name in stdout
    print(f"demo --quick took {seconds:.0f} s")


def test_quick_demo_files(quick_demo):
    out, _, _ = quick_demo
    for png in ("rate_by_group", "rate_by_position", "loss_curves", "weight_change", "grad_norms"):
        assert os.path.getsize(os.path.join(out, "plots", png + ".png")) > 10_000
    runs = os.listdir(os.path.join(out, "runs"))
    assert sum(f.endswith(".h5") for f in runs) == 14 and sum(f.endswith(".json") for f in runs) == 15
    assert os.path.exists(os.path.join(out, "base", "base.h5"))
    assert os.path.exists(os.path.join(out, "base", "spiece.model"))


def test_second_run_reuses_base_and_runs(quick_demo):
    out, _, _ = quick_demo
    done = subprocess.run([sys.executable, "-m", "gozaru", "demo", "--quick", "--out", out, "--no-progress",
                           "--no-plots"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reusing" in done.stdout and done.stdout.count("done before, skipped") == 14
    assert len(pd.read_csv(os.path.join(out, "results.csv"))) == 15


def test_demo_budgets_give_one_and_two_layers():
    from gozaru import layers
    for name in ("default", "quick"):
        s = demo.SETTINGS[name]
        cfg = demo.model_config(s, s.vocab_size)
        grid = seed_grid(budgets=demo.demo_budgets(cfg, s.layer_counts))
        counts = {c.name: len(layers.trained_layers(cfg, c.select(cfg))) for c in grid if c.group == "first"}
        assert sorted(counts.values()) == [1, 2], counts


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_demo_budgets_give_one_and_two_layers_on_llama_shaped_bases(arch):
    from gozaru import layers
    for name in ("default", "quick"):
        s = demo.SETTINGS[name]
        cfg = demo.model_config(demo.dataclasses.replace(s, arch=arch), s.vocab_size)
        assert cfg.model_type == arch and cfg.num_key_value_heads == s.num_heads // 2
        grid = seed_grid(budgets=demo.demo_budgets(cfg, s.layer_counts))
        counts = {c.name: len(layers.trained_layers(cfg, c.select(cfg))) for c in grid if c.group == "first"}
        assert sorted(counts.values()) == [1, 2], counts


def test_llama_demo_base_is_built_offline_and_reused(tmp_path):
    s = demo.dataclasses.replace(demo.SETTINGS["quick"], arch="llama", n_prose=200, n_pretrain_pairs=200,
                                 pretrain_steps=30)
    logs = []
    tok, base = demo.build_base(s, str(tmp_path), progress=False, log=logs.append)
    assert base.config.model_type == "llama" and base.config.is_llama_family
    assert "model.layers.0.mlp.gate_proj.weight" in base.names
    final = float(next(line for line in logs if "final loss" in line).split("final loss ")[1].split()[0])
    assert final < np.log(tok.vocab_size) - 1.0, logs  # pretraining learned more than the uniform guess
    _, again = demo.build_base(s, str(tmp_path), progress=False, log=logs.append)
    assert "reusing" in logs[-1] and again.config == base.config
