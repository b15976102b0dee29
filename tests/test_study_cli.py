"""`gozaru study --quick` end to end, over-long real-data records in a grid, Hub ids resolved from a locally
built cache folder (never downloaded), and bad study input refused before any run."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

import gozaru as gz
from gozaru import data
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab.evaluate import EvalConfig
from gozaru.lab.experiment import Condition, ExperimentData, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gozaru_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "gozaru", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("study") / "quick")
    t0 = time.perf_counter()
    done = gozaru_cli("study", "--quick", "--out", out, "--no-progress", timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout, time.perf_counter() - t0


def test_quick_study_end_to_end(quick_study):
    out, stdout, seconds = quick_study
    print(f"study --quick took {seconds:.0f} s")
    cells = pd.read_csv(os.path.join(out, "cells.csv"))
    assert {"head", "1L", "all"} == set(cells["level"]) and (cells["n_seeds"] == 2).all()
    assert {"lr=0.004"} <= set(cells["policy"])
    for m in ("adoption", "sampled_rate", "greedy_rate"):
        assert cells[m].between(0, 1).all() and (cells[m + "_low"] <= cells[m] + 1e-12).all()
    study = json.load(open(os.path.join(out, "study.json"), encoding="utf-8"))
    assert "base GPT-NeoX with" in study["sizes"]  # the family of the base, as demo.py built it
    comps = study["comparisons"]
    assert comps and {c["factor"] for c in comps} == {"position", "type"}
    for c in comps:
        assert c["verdict"] in ("differ", "equivalent", "undecided") and c["level"] == 1
        assert c["measure"] in ("adoption", "sampled_rate", "greedy_rate") and len(c["ci"]) == 2
        assert c["policy"] == "tuned" or c["policy"] == "lr=0.004"
    sweep = json.load(open(os.path.join(out, "sweep.json")))
    assert all(len([r for r in sweep["table"] if r["cell"] == cell]) >= 5 for cell in sweep["chosen"])
    record = json.load(open(os.path.join(out, "runs", os.listdir(os.path.join(out, "runs"))[0])))
    assert {"greedy", "sampled", "adoption", "suppression"} <= set(record)
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    for needle in ("## Conclusions", "the lr policy", "## Learning curves", "## Interactions", "Wall time"):
        assert needle in report
    assert "nan" not in report.lower()
    for png in ("cells", "learning_curves", "lr_sweep"):
        assert os.path.getsize(os.path.join(out, "plots", png + ".png")) > 5_000


def test_the_report_re_renders_byte_for_byte(quick_study):
    out, _, _ = quick_study
    before = open(os.path.join(out, "report.md"), "rb").read()
    os.remove(os.path.join(out, "report.md"))
    done = gozaru_cli("study", "report", out, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert open(os.path.join(out, "report.md"), "rb").read() == before


def test_two_studies_side_by_side(quick_study, tmp_path):
    out, _, _ = quick_study
    other = tmp_path / "larger"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("base", "plots"))
    study = json.loads((other / "study.json").read_text(encoding="utf-8"))
    for c in study["comparisons"]:
        c["diff"], c["verdict"] = 12.5, "differ"
    (other / "study.json").write_text(json.dumps(study), encoding="utf-8")
    done = gozaru_cli("study", "report", out, str(other), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = open(os.path.join(out, "sizes.md"), encoding="utf-8").read()
    assert "| quick | larger |" in table and "+12.5" in table and "first vs last" in table


def test_studies_of_one_model_share_a_column(quick_study, tmp_path):
    """Two studies of the same base that compare disjoint cells (head trained / head frozen) fill one column;
    a study of a larger base gets its own, named by its family and parameter count, and so does one of another
    family's base of the same size."""
    out, _, _ = quick_study
    study = json.loads(open(os.path.join(out, "study.json"), encoding="utf-8").read())
    label = re.search(r"with ([\d,]+) parameters", study["sizes"]).group(1)
    frozen, larger, llama = tmp_path / "frozen", tmp_path / "larger", tmp_path / "llama"
    for folder, head, sizes in ((frozen, "frozen", study["sizes"]),
                                (larger, "trained", study["sizes"].replace(label, "9,999,999")),
                                (llama, "trained", study["sizes"].replace("base GPT-NeoX", "base Llama"))):
        folder.mkdir()
        comps = [dict(c, head=head, diff=-7.5) for c in study["comparisons"] if c["factor"] == "position"]
        (folder / "study.json").write_text(json.dumps(dict(study, sizes=sizes, comparisons=comps)), encoding="utf-8")
    done = gozaru_cli("study", "report", out, str(frozen), str(larger), str(llama), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = open(os.path.join(out, "sizes.md"), encoding="utf-8").read()
    assert (f"| GPT-NeoX, {label} parameters | GPT-NeoX, 9,999,999 parameters | Llama, {label} parameters |"
            in table), table
    rows = [r for r in table.splitlines() if r.startswith("| first vs last")]
    assert any("head frozen" in r and "-7.5" in r.split("|")[4] for r in rows), table   # merged into column 1
    assert any("head trained" in r and "-7.5" in r.split("|")[5] for r in rows), table


def test_quick_study_resumes(quick_study):
    out, _, _ = quick_study
    done = gozaru_cli("study", "--quick", "--out", out, "--no-progress", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ", 0 to go" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--types", "layers", "conv"], "study field types"),
    (["--shares", "head", "7"], "4 layers"),
    (["--margin", "0"], "study field margin"),
    (["--margin", "nan"], "study field margin"),
    (["--seeds", "1"], "at least 2"),
    (["--lr-factors", "1", "2", "3"], "study field sweep_factors"),
])
def test_bad_study_input_fails_before_any_run(tmp_path, args, message):
    out = tmp_path / "bad"
    done = gozaru_cli("study", "--quick", "--out", str(out), "--no-progress", *args)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (out / "runs").exists()


@pytest.mark.parametrize("fields", [{"shares": ["head", 1], "types": ["whole"]}, {"bootstrap": 200.5},
                                    {"shots": 1.5}, {"seeds": [0, 0, 1]}, {"lrs": [float("nan")]}])
def test_bad_study_file_on_the_command_line(tmp_path, fields):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(fields))
    done = gozaru_cli("study", "--quick", "--out", str(tmp_path / "o"), "--spec", str(spec))
    assert done.returncode == 1 and "study field" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "o" / "runs").exists()


def test_report_of_a_folder_without_a_study(tmp_path):
    done = gozaru_cli("study", "report", str(tmp_path))
    assert done.returncode == 1 and "no study.json" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- over-long real-data records
@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    corpus = data.SyntheticCorpus(0)
    texts = [f"{r.instruction}\n{r.input}\n{r.output}" for r in corpus.instructions(300, seed=1)]
    return Tokenizer.train(texts, vocab_size=800, seed=0).save(str(folder / "spiece.model"))


def test_over_long_records_do_not_stop_the_grid(tmp_path, tokenizer_file):
    tok = Tokenizer.load(tokenizer_file)
    corpus = data.SyntheticCorpus(0)
    held = data.to_gozaru_dataset(corpus.instructions(8, seed=3), drop_unchanged=True)
    giant = held[0].replace(instruction="とても長い質問です。" * 200)   # > 1,000 tokens; the model has 96
    train = data.to_gozaru_dataset(corpus.instructions(40, seed=2), drop_unchanged=True) + [giant]
    exp = ExperimentData.from_records(tok, train, [giant] + held[1:], seq_len=48)
    assert len(tok.encode(exp.prompts[0])) > 1000
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=96)
    logs = []
    table = run([Condition("full", {"kind": "full"})], gz.Model(cfg, seed=0), exp, str(tmp_path / "g"),
                train=dict(steps=2, batch_size=4, progress=False), eval=EvalConfig(max_new_tokens=4, batch_size=4),
                progress=False, log=logs.append)
    assert exp.dropped["prompts"] == 1 and exp.dropped["truncated training records"] >= 1
    assert (table["n_prompts"] == len(held) - 1).all()
    assert any("left out 1 of" in line for line in logs)
    assert not any("nan" in line for line in logs)   # no plain text given: forgetting prints as —


# --------------------------------------------------------------------------- Hub ids from a local cache
def _hub_repo(cache, kind, repo_id, files: dict):
    folder = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    snap = folder / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snap / name)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("a" * 40)
    return snap


def test_hub_ids_resolve_from_the_local_cache(tmp_path, tokenizer_file):
    cache = tmp_path / "hub"
    tok = Tokenizer.load(tokenizer_file)
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=96)
    hf_dir = tmp_path / "hf"
    gz.Model(cfg, seed=0).to_hf(str(hf_dir))
    _hub_repo(cache, "model", "org/tiny-neox", {"config.json": hf_dir / "config.json",
                                                "model.safetensors": hf_dir / "model.safetensors",
                                                "spiece.model": tokenizer_file})
    records = tmp_path / "d.jsonl"
    data.save_jsonl(data.SyntheticCorpus(0).instructions(30, seed=2), str(records))
    _hub_repo(cache, "dataset", "org/dolly-tiny", {"data.jsonl": records})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "t.h5"
    done = gozaru_cli("train", "--hf", "org/tiny-neox", "--tokenizer", "org/tiny-neox", "--data", "org/dolly-tiny",
                      "--gozaru", "--steps", "1", "--batch-size", "2", "--seq-len", "32", "--eval-size", "4",
                      "--out", str(out), "--no-progress", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.exists() and "snapshots" in done.stderr   # loaded from the snapshot folder
    missing = gozaru_cli("train", "--hf", "org/not-cached", "--tokenizer", "org/tiny-neox", "--data",
                         "org/dolly-tiny", "--out", str(tmp_path / "x.h5"), env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "org/not-cached" in missing.stderr and "not in the hub cache" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_study_on_user_data(tmp_path, tokenizer_file):
    tok = Tokenizer.load(tokenizer_file)
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64)
    base = tmp_path / "base.h5"
    gz.Model(cfg, seed=0).save(str(base))
    records = tmp_path / "d.jsonl"
    data.save_jsonl(data.SyntheticCorpus(0).instructions(60, seed=2), str(records))
    out = tmp_path / "s"
    done = gozaru_cli("study", "--base", str(base), "--tokenizer", tokenizer_file, "--data", str(records),
                      "--shares", "head", "1", "all", "--positions", "first", "last", "--types", "layers",
                      "--seeds", "2", "--steps", "2", "--batch-size", "4", "--seq-len", "32", "--eval-size", "8",
                      "--n-prompts", "6", "--max-new-tokens", "4", "--sweep-steps", "1", "--lr-factors", "1", "2", "4",
                      "8", "16", "--out", str(out), "--no-progress", timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = pd.read_csv(out / "study_runs.csv").drop_duplicates("name")
    assert set(runs["level"]) == {"head", "1L", "all"} and set(runs["seed"]) == {0, 1}
    assert sorted(runs.loc[runs["level"] == "1L", "position"].unique()) == ["first", "last"]
    assert (out / "report.md").exists() and "nan" not in (out / "report.md").read_text().lower()


def test_a_changed_definition_is_refused_in_the_same_folder(quick_study):
    out, _, _ = quick_study
    done = gozaru_cli("study", "--quick", "--out", out, "--margin", "0.1")
    assert done.returncode == 1 and "another spec (margin differ)" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
