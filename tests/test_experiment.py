"""The grid runner: a reduced grid end to end, skipping finished runs, and surviving SIGKILL mid-grid."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import gozaru as gz
from gozaru import data
from gozaru.lab.experiment import Condition, load_grid, load_record, load_results, run, seed_grid
from gozaru.lab.evaluate import EvalConfig, change_grid
from gozaru.data.tokenizer import Tokenizer

# Builds everything an experiment needs from a tokenizer file; shared by this file and the killed subprocess.
SETUP = textwrap.dedent("""
    import gozaru as gz
    from gozaru import data
    from gozaru.lab.experiment import ExperimentData
    from gozaru.data.tokenizer import Tokenizer

    def setup(tokenizer_path):
        tok = Tokenizer.load(tokenizer_path)
        corpus = data.SyntheticCorpus(0)
        train = data.to_gozaru_dataset(corpus.instructions(120, seed=2), drop_unchanged=True)
        held = data.to_gozaru_dataset(corpus.instructions(24, seed=3), drop_unchanged=True)
        exp = ExperimentData.from_records(tok, train, held, seq_len=48, plain_texts=corpus.pretrain_texts(12),
                                          facts=corpus.train_questions()[:6], n_prompts=8)
        cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=96)
        return gz.Model(cfg, seed=0), exp
""")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    corpus = data.SyntheticCorpus(0)
    texts = [f"{r.instruction}\n{r.input}\n{data.to_gozaru(r.output)}" for r in corpus.instructions(300, seed=1)]
    tok_path = Tokenizer.train(texts, vocab_size=800, seed=0).save(str(folder / "spiece.model"))
    (folder / "lab_setup.py").write_text(SETUP)
    sys.path.insert(0, str(folder))
    try:
        import lab_setup
        base, exp = lab_setup.setup(tok_path)
    finally:
        sys.path.remove(str(folder))
    return folder, tok_path, base, exp


SMALL = dict(steps=3, batch_size=8, progress=False)
EVAL = EvalConfig(max_new_tokens=8, batch_size=8)


def reduced_grid():
    return [Condition("full", {"kind": "full"}),
            Condition("last 1", {"kind": "last", "layers": 1}),
            Condition("random 1 seed3", {"kind": "random", "layers": 1}, seed=3)]


def test_reduced_grid_end_to_end(lab, tmp_path):
    _, _, base, exp = lab
    before = base.state_dict()
    out = str(tmp_path / "exp")
    results = run(reduced_grid(), base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    assert list(results["name"]) == ["base", "full", "last 1", "random 1 seed3"]
    assert results["gozaru_rate"].between(0, 1).all()
    assert (results["rate_low"] <= results["gozaru_rate"]).all()
    assert (results["gozaru_rate"] <= results["rate_high"]).all()
    assert results.loc[results.name == "full", "trainable_pct"].item() == pytest.approx(100.0)
    assert all(np.array_equal(before[n], base.params[n]) for n in base.names), "the base must stay untouched"
    assert list(load_results(out)["name"]) == list(results["name"])
    for slug in ("full", "last-1", "random-1-seed3"):
        assert os.path.exists(os.path.join(out, "runs", slug + ".h5"))
        assert not os.path.exists(os.path.join(out, "runs", "partial", slug + ".h5"))
    # only the last layer (and the head) moved in "last 1"
    record = load_record(out, "last 1")
    grid = change_grid(pd.DataFrame(record["weight_change"]))
    assert grid.loc["3"].max() > 0 and np.nanmax(grid.loc[["0", "1", "2"]].to_numpy()) == 0
    assert len(record["history"]) == 3 and record["grad_norms"]
    # rerun: everything is skipped, nothing is trained again
    stamp = os.path.getmtime(os.path.join(out, "runs", "full.h5"))
    logged = []
    again = run(reduced_grid(), base, exp, out, train=SMALL, eval=EVAL, progress=False, log=logged.append)
    assert again.drop(columns="checkpoint").equals(results.drop(columns="checkpoint"))
    assert sum("skipped" in line for line in logged) == 3
    assert os.path.getmtime(os.path.join(out, "runs", "full.h5")) == stamp
    # a run killed after training but before its record: evaluated again from its model, not retrained
    os.remove(os.path.join(out, "runs", "last-1.json"))
    again = run(reduced_grid(), base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    assert again.drop(columns="checkpoint").equals(results.drop(columns="checkpoint"))
    assert load_record(out, "last 1")["history"] == record["history"]
    # a changed definition under an old name is refused instead of silently reusing the old result
    with pytest.raises(ValueError, match="another definition"):
        run([Condition("full", {"kind": "mlp"})], base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    with pytest.raises(ValueError, match="training settings"):
        run(reduced_grid(), base, exp, out, train={**SMALL, "lr": 0.5}, eval=EVAL, progress=False, log=None)


def test_seed_grid_is_the_reference_13():
    grid = seed_grid()
    assert len(grid) == 13 and len({c.slug for c in grid}) == 13
    assert [c.name for c in grid[:7]] == ["full", "mlp+head", "non_mlp+head", "first 5%", "first 10%",
                                         "last 5%", "last 10%"]
    randoms = [c for c in grid if c.group == "random"]
    assert len(randoms) == 6 and {c.seed for c in randoms} == {0, 1, 2}
    cfg = gz.preset("rinna-3.6b")
    sizes = {c.name: len(c.select(cfg)) for c in grid}
    assert sizes["full"] == len(cfg.tensor_shapes())
    assert {frozenset(c.select(cfg)) for c in randoms if c.budget == 0.05}.__len__() == 3  # seeds differ


def test_condition_names_must_not_clash(lab, tmp_path):
    _, _, base, exp = lab
    with pytest.raises(ValueError, match="clashes"):
        run([Condition("a b", {"kind": "full"}), Condition("a-b", {"kind": "mlp"})], base, exp,
            str(tmp_path), train=SMALL, eval=EVAL, log=None)


KILLED_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {folder!r})
    from lab_setup import setup
    from gozaru.lab.experiment import Condition, run
    from gozaru.lab.evaluate import EvalConfig
    base, exp = setup({tok!r})
    grid = [Condition("full", {{"kind": "full"}}), Condition("mlp", {{"kind": "mlp"}}),
            Condition("last 2", {{"kind": "last", "layers": 2}}),
            Condition("first 1", {{"kind": "first", "layers": 1}})]
    run(grid, base, exp, {out!r}, train=dict(steps=40, batch_size=8, checkpoint_every=4, progress=False),
        eval=EvalConfig(max_new_tokens=8, batch_size=8), progress=False, log=lambda s: print(s, flush=True))
    print("GRID DONE", flush=True)
""")


def test_killed_grid_finishes_with_every_condition_once(lab, tmp_path):
    folder, tok_path, _, _ = lab
    out = str(tmp_path / "killed")
    script = tmp_path / "grid.py"
    script.write_text(KILLED_RUN.format(folder=str(folder), tok=tok_path, out=out))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Kill it while the second condition trains (its periodic checkpoint exists, its record does not).
    runs = os.path.join(out, "runs")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(runs, "full.json")) and os.path.exists(os.path.join(runs, "partial", "mlp.h5")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the grid finished before it could be killed: " + proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(runs, "mlp.json"))

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "full: done before, skipped" in done.stdout and "GRID DONE" in done.stdout
    table = pd.read_csv(os.path.join(out, "results.csv"))
    assert sorted(table["name"]) == sorted(["base", "full", "mlp", "last 2", "first 1"])
    for name in ("full", "mlp", "last 2", "first 1"):
        record = load_record(out, name)
        assert [h["step"] for h in record["history"]] == list(range(1, 41)), name  # resumed, not restarted twice
    assert not [f for f in os.listdir(runs) if ".partial" in f or ".tmp" in f]
    assert not os.listdir(os.path.join(runs, "partial"))


def test_lora_condition_from_a_grid_file(lab, tmp_path):
    """A LoRA condition read from a --grid JSON file: adapters on the selected layer, the head trained in full,
    the merged change confined to that layer, the adapter's own ||s B A|| / ||W|| recorded."""
    _, _, base, exp = lab
    before = base.state_dict()
    path = tmp_path / "grid.json"
    path.write_text(json.dumps([{"name": "lora last 1", "selection": {"kind": "last", "layers": 1,
                                                                       "lora": {"r": 2, "alpha": 4}}},
                                {"name": "last 1", "selection": {"kind": "last", "layers": 1}}]))
    grid = load_grid(str(path))
    out = str(tmp_path / "exp")
    results = run(grid, base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    lora_row, full_row = (results[results.name == n].iloc[0] for n in ("lora last 1", "last 1"))
    assert 0 < lora_row.trainable_params < full_row.trainable_params
    record = load_record(out, "lora last 1")
    assert "embed_out.weight" in record["trainable"] and all(
        "lora_" in n for n in record["trainable"] if n != "embed_out.weight")
    assert set(record["lora_change"]) == {n for n in grid[0].select(base.config)
                                          if n.endswith(".weight") and "layernorm" not in n and n != "embed_out.weight"}
    assert all(v > 0 for v in record["lora_change"].values())
    change = change_grid(pd.DataFrame(record["weight_change"]))
    assert change.loc["3"].max() > 0 and np.nanmax(change.loc[["0", "1", "2"]].to_numpy()) == 0
    assert all(np.array_equal(before[n], base.params[n]) for n in base.names)
    again = run(grid, base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)  # finished: reused
    assert again.drop(columns="checkpoint").equals(results.drop(columns="checkpoint"))
