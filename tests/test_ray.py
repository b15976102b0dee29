"""The Ray executor on a local Ray instance: the same results as the local executor, bit for bit (same threads
per run), with either way of shipping the base and data; a failing run named while the others finish; the CLI."""
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

import ray  # the test extra installs gozaru[ray]
import ray_lab
from gozaru import data
from gozaru.engine.checkpoint import load
from gozaru.lab import cli
from gozaru.lab.executor import RayExecutor
from gozaru.lab.experiment import Condition, RunsFailed, run
from gozaru.lab.record import RunRecord

TRAIN = dict(steps=4, batch_size=8, checkpoint_every=2, progress=False)
SLOTS = ["full", "last-1", "mlp", "random-1-seed3"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(folder, tokenizer path, base path, experiment data, results folder of the local executor, 1 thread)."""
    return ray_lab.local_reference(tmp_path_factory.mktemp("raylab"), TRAIN)


def assert_same_results(out, reference):
    """Every number of every run equal (timings aside), and the trained weights bit-identical."""
    ours, ref = pd.read_csv(os.path.join(out, "results.csv")), pd.read_csv(os.path.join(reference, "results.csv"))
    pd.testing.assert_frame_equal(ours.drop(columns="train_seconds"), ref.drop(columns="train_seconds"),
                                  check_exact=True)
    for slug in SLOTS:
        a, b = load(os.path.join(out, "runs", slug + ".h5"))[0], load(os.path.join(reference, "runs", slug + ".h5"))[0]
        assert all(np.array_equal(a.params[n], b.params[n]) for n in a.names), slug
        with open(os.path.join(out, "runs", slug + ".json")) as f, \
                open(os.path.join(reference, "runs", slug + ".json")) as g:
            assert json.load(f)["answers"] == json.load(g)["answers"], slug


@pytest.mark.parametrize("transfer", ["storage", "object_store"])
def test_ray_executor_matches_the_local_one(cluster, lab, tmp_path, transfer):
    _, _, base, exp, reference = lab
    out = str(tmp_path / "ray")
    lines = []
    results = run(ray_lab.grid(), base, exp, out, train=TRAIN, eval=ray_lab.EVAL, progress=False, log=lines.append,
                  executor=RayExecutor(cpus_per_run=1, transfer=transfer))
    assert list(results["name"]) == ["base", "full", "last 1", "mlp", "random 1 seed3"]
    assert_same_results(out, reference)
    assert sum("ござる-rate" in line for line in lines) == 5  # base + one line per run as it lands
    assert os.path.exists(os.path.join(out, "inputs", "data.pkl")) == (transfer == "storage")
    runs = sorted(os.listdir(os.path.join(out, "runs")))
    assert runs == sorted(["base.json", "partial"] + [s + ext for s in SLOTS for ext in (".h5", ".json")])
    assert os.listdir(os.path.join(out, "runs", "partial")) == []  # interrupted runs' checkpoints: none left
    # rerun: nothing is submitted again
    again = []
    run(ray_lab.grid(), base, exp, out, train=TRAIN, eval=ray_lab.EVAL, progress=False, log=again.append,
        executor=RayExecutor(cpus_per_run=1, transfer=transfer))
    assert sum("skipped" in line for line in again) == 4 and len(again) == 4


def test_a_failed_run_is_named_and_the_others_finish(cluster, lab, tmp_path):
    _, _, base, exp, _ = lab
    out = str(tmp_path / "failing")
    grid = [ray_lab.grid()[1], Condition("nothing", {"kind": "pattern", "pattern": "^no such tensor$"})]
    lines = []
    with pytest.raises(RunsFailed,
                       match=r"^1 run\(s\) failed: nothing \(ValueError: pattern .* matches no tensor\)$") as e:
        run(grid, base, exp, out, train=TRAIN, eval=ray_lab.EVAL, progress=False, log=lines.append,
            executor=RayExecutor(cpus_per_run=1))
    assert list(e.value.failed) == ["nothing"]
    assert any(line.startswith("[2/2] nothing: FAILED: ValueError") for line in lines)
    assert list(pd.read_csv(os.path.join(out, "results.csv"))["name"]) == ["base", "last 1"]


def write_cli_inputs(folder):
    records = data.SyntheticCorpus(0).instructions(40, seed=4)
    jsonl = str(data.save_jsonl(records, folder / "dolly.jsonl"))
    grid = folder / "grid.json"
    grid.write_text(json.dumps([{"name": "last 1", "selection": {"kind": "last", "layers": 1}},
                                {"name": "head", "selection": {"kind": "head"}}]))
    return jsonl, str(grid)


def test_cli_grid_on_ray(cluster, lab, tmp_path, capsys):
    folder, tok, base, _, _ = lab
    jsonl, grid = write_cli_inputs(tmp_path)
    common = ["grid", "--base", base, "--tokenizer", tok, "--data", jsonl, "--gozaru", "--grid", grid,
              "--steps", "2", "--batch-size", "4", "--eval-size", "8", "--n-prompts", "4", "--max-new-tokens", "4",
              "--seq-len", "48", "--no-plots", "--no-progress", "--out", str(tmp_path / "cli")]
    assert cli.main(common + ["--ray", "--cpus-per-run", "1", "--max-retries", "1"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] last 1: ござる-rate" in out and "[2/2] head: ござる-rate" in out
    assert list(pd.read_csv(tmp_path / "cli" / "results.csv")["name"]) == ["base", "last 1", "head"]
    # a failing condition: the others land, the command exits 1 with one line naming it
    with open(grid) as f:
        conditions = json.load(f) + [{"name": "nothing", "selection": {"kind": "pattern", "pattern": "^none$"}}]
    with open(grid, "w") as f:
        json.dump(conditions, f)
    assert cli.main(common + ["--ray"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "gozaru grid: error: 1 run(s) failed: nothing (ValueError: pattern '^none$' matches no tensor)"]
    assert "[3/3] nothing: FAILED" in captured.out and "done before, skipped" in captured.out


@pytest.mark.parametrize("transfer", ["storage", "object-store"])
def test_cli_grid_on_ray_keeps_the_precision(cluster, lab, tmp_path, transfer):
    """--precision reaches the Ray workers whichever way the base travels (a path base once trained in fp32);
    each run records the placement its model computed with (threads: --cpus-per-run)."""
    _, tok, base, _, _ = lab
    jsonl, _ = write_cli_inputs(tmp_path)
    grid = tmp_path / "lora.json"
    grid.write_text(json.dumps([{"name": "lora", "selection": {"kind": "last", "layers": 1, "lora": {"r": 2}}}]))
    out = tmp_path / "cli"
    assert cli.main(["grid", "--base", base, "--tokenizer", tok, "--data", jsonl, "--gozaru", "--grid", str(grid),
                     "--steps", "2", "--batch-size", "4", "--eval-size", "8", "--n-prompts", "3",
                     "--max-new-tokens", "3", "--seq-len", "48", "--no-plots", "--no-progress", "--out", str(out),
                     "--precision", "bf16-emulated", "--ray", "--cpus-per-run", "1", "--transfer", transfer]) == 0
    for slug in ("base", "lora"):
        with open(out / "runs" / f"{slug}.json") as f:
            assert json.load(f)["placement"] == {"backend": "cpu", "precision": "bf16-emulated", "threads": 1}
    record = RunRecord.from_payload(load(str(out / "runs" / "lora.h5"))[2]["extra"], "lora.h5")
    assert record.placement["precision"] == "bf16-emulated"


def test_without_ray_the_cli_says_how_to_install_it(lab, tmp_path, capsys, monkeypatch):
    _, tok, base, _, _ = lab
    jsonl, grid = write_cli_inputs(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    code = cli.main(["grid", "--base", base, "--tokenizer", tok, "--data", jsonl, "--out", str(tmp_path / "x"),
                     "--ray"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert 'pip install "gozaru[ray]"' in err
