"""The gozaru command line: every subcommand's --help, and train → eval → info → export/import on a tiny setup."""
import subprocess
import sys

import pandas as pd
import pytest

import gozaru as gz
from gozaru import data
from gozaru.lab import cli
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab.train import TrainConfig, Trainer

COMMANDS = ("demo", "train", "eval", "grid", "import-hf", "export-hf", "info")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: gozaru {command}" in text and len(text) > 300


def test_main_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "gozaru", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout
    assert "gozaru demo" in out.stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dolly-layout jsonl, a tokenizer file and a tiny base checkpoint."""
    folder = tmp_path_factory.mktemp("cli")
    records = data.SyntheticCorpus(0).instructions(80, seed=4)
    jsonl = data.save_jsonl(records, folder / "dolly.jsonl")
    texts = [f"{r.instruction}\n{r.input}\n{r.output}\n{data.to_gozaru(r.output)}" for r in records]
    tokenizer = Tokenizer.train(texts, vocab_size=800, seed=0)
    tok = tokenizer.save(str(folder / "spiece.model"))
    # The model's vocabulary is padded past the tokenizer's, as HF models often are.
    cfg = gz.GPTNeoXConfig(vocab_size=tokenizer.vocab_size + 30, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    base = str(folder / "base.h5")
    gz.Model(cfg, seed=0).save(base)
    return folder, str(jsonl), tok, base


def test_train_eval_info_export_import(setup, capsys):
    folder, jsonl, tok, base = setup
    out = str(folder / "last1.h5")
    common = ["--tokenizer", tok, "--data", jsonl, "--gozaru", "--seq-len", "48", "--eval-size", "8"]
    assert cli.main(["train", "--base", base, *common, "--select", "last", "--layers", "1", "--steps", "3",
                     "--batch-size", "4", "--out", out, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "done: step 3" in text
    model, opt, info = gz.load(out)
    assert info["step"] == 3 and opt is not None
    assert set(model.trainable_names()) == {n for n in model.names if ".layers.1." in n} | {"embed_out.weight"}

    assert cli.main(["eval", out, *common, "--n-prompts", "4", "--max-new-tokens", "6", "--base", base,
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ござる-rate" in text and "95% CI" in text and "mlp_up" in text

    assert cli.main(["info", out]) == 0
    text = capsys.readouterr().out
    assert "step 3" in text and "training   3 steps × 4 rows" in text and "loss" in text

    hf_dir = str(folder / "hf")
    assert cli.main(["export-hf", out, hf_dir]) == 0
    back = str(folder / "back.h5")
    assert cli.main(["import-hf", hf_dir, back]) == 0
    again = gz.load(back)[0]
    for name in model.names:
        assert (again.params[name] == model.params[name]).all()


def test_info_on_a_trainer_checkpoint(setup, capsys):
    folder, _, _, base = setup
    model = gz.load(base)[0]
    model.train_all()
    import numpy as np
    tokens = np.random.default_rng(0).integers(4, 700, (6, 12)).astype(np.int32)
    path = str(folder / "trainer.h5")
    Trainer(model, (tokens, tokens), TrainConfig(steps=2, batch_size=3, progress=False), checkpoint=path).fit()
    assert cli.main(["info", path]) == 0
    text = capsys.readouterr().out
    assert "step 2" in text and "data cursor 6" in text and "AdamW" in text


def test_errors_are_one_line(setup, capsys):
    folder, jsonl, tok, _ = setup
    assert cli.main(["info", str(folder / "missing.h5")]) == 1
    assert "gozaru info: error:" in capsys.readouterr().err


def test_grid_file_with_a_lora_condition(setup, capsys):
    folder, jsonl, tok, base = setup
    grid = folder / "grid.json"
    grid.write_text('[{"name": "lora last 1", "selection": {"kind": "last", "layers": 1, "lora": {"r": 2}}}]')
    out = str(folder / "grid")
    assert cli.main(["grid", "--base", base, "--tokenizer", tok, "--data", jsonl, "--gozaru", "--seq-len", "48",
                     "--eval-size", "8", "--grid", str(grid), "--steps", "2", "--batch-size", "4", "--n-prompts", "4",
                     "--max-new-tokens", "4", "--samples", "2", "--no-plots", "--out", out, "--no-progress"]) == 0
    assert "lora last 1" in capsys.readouterr().out
    table = pd.read_csv(f"{out}/results.csv")   # the study's measures beside the greedy rate
    assert table["sampled_rate"].notna().all(), table
    assert cli.main(["grid", "--out", out, "--samples", "-1", "--base", base, "--tokenizer", tok, "--data", jsonl,
                     "--gozaru"]) == 1
    assert "--samples must be >= 0" in capsys.readouterr().err
    model = gz.load(f"{out}/runs/lora-last-1.h5")[0]
    assert model.lora and all("lora_" in n or n == "embed_out.weight" for n in model.trainable_names())


def test_precision_flag(setup, capsys, monkeypatch):
    """--precision reaches the model; bf16 on a CPU without it is a one-line error naming the instructions."""
    folder, jsonl, tok, base = setup
    common = ["--base", base, "--tokenizer", tok, "--data", jsonl, "--gozaru", "--seq-len", "48", "--eval-size", "8",
              "--select", "last", "--layers", "1", "--steps", "2", "--batch-size", "4", "--no-progress"]
    monkeypatch.delenv("GOZARU_BF16_EMULATE", raising=False)
    out = str(folder / "bf16.h5")
    assert cli.main(["train", *common, "--precision", "bf16-emulated", "--out", out]) == 0
    assert "done: step 2" in capsys.readouterr().out
    assert gz.load(out)[0].precision == "fp32"  # a run setting: the file holds fp32 weights
    info = gz.build_info()
    if not (info["cpu_features"]["avx512_bf16"] or info["cpu_features"]["amx_bf16"]):
        assert cli.main(["train", *common, "--precision", "bf16", "--out", str(folder / "no.h5")]) == 1
        err = capsys.readouterr().err
        assert "gozaru train: error:" in err and "AVX512-BF16" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        cli.main(["train", *common, "--precision", "fp16", "--out", str(folder / "no.h5")])
