"""Divergence is reported: a diverging run stops with one line and exit code 1 and keeps the last good
checkpoint; expected CLI failures never print a traceback; unwritable outputs fail before any work."""
import os

import numpy as np
import pytest

import gozaru as gz
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab import cli
from gozaru.lab.train import DivergedError, NonFiniteError, TrainConfig, Trainer
from gozaru import data

CFG = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, max_position_embeddings=32)


def rows():
    tokens = np.random.default_rng(0).integers(0, 64, (8, 16)).astype(np.int32)
    return tokens, tokens


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = gz.Model(CFG, seed=0)
    model.train_all()
    path = tmp_path / "run.h5"
    good = {}

    def on_step(trainer, record):
        if trainer.step == 2:  # a good checkpoint exists; then the learning rate explodes
            good["params"] = trainer.model.core.flat_params().copy()
            trainer.config.lr = 1e3
            trainer.config.max_grad_norm = 0.0

    t = Trainer(model, rows(), TrainConfig(steps=40, batch_size=4, lr=1e-3, warmup_steps=0, checkpoint_every=2,
                                           progress=False), checkpoint=str(path), on_step=on_step)
    with pytest.raises((DivergedError, NonFiniteError), match="step"):
        t.fit()
    assert t.step < 40
    saved, _, info = gz.load(path)
    assert info["step"] >= 2
    first_loss = t.history[0]["loss"]
    # what the file holds is from before the loss left the bound
    last_saved = [r for r in t.history if r["step"] == info["step"]][0]
    assert last_saved["loss"] <= 10 * max(first_loss, 1)
    assert np.isfinite(saved.core.flat_params()).all()


def test_divergence_rule_counts_consecutive_steps():
    t = Trainer(gz.Model(CFG, seed=0), rows(), TrainConfig(steps=10, batch_size=4, progress=False,
                                                           divergence_patience=3))
    t.history = [{"loss": 2.0}]
    for loss in (25.0, 25.0, 5.0, 25.0, 25.0):  # a dip resets the count
        t._check_divergence({"loss": loss}, last=False)
    with pytest.raises(DivergedError, match="3 step"):
        t._check_divergence({"loss": 21.0}, last=False)
    t._steps_above = 0
    with pytest.raises(DivergedError):
        t._check_divergence({"loss": 1e9}, last=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    records = data.SyntheticCorpus(0).instructions(40, seed=4)
    jsonl = data.save_jsonl(records, folder / "dolly.jsonl")
    tok = Tokenizer.train([f"{r.instruction}\n{r.output}" for r in records], vocab_size=700, seed=0)
    tokp = tok.save(str(folder / "spiece.model"))
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64)
    base = str(folder / "base.h5")
    gz.Model(cfg, seed=0).save(base)
    return folder, str(jsonl), tokp, base


def train_args(setup, out, *extra):
    folder, jsonl, tok, base = setup
    return ["train", "--base", base, "--tokenizer", tok, "--data", jsonl, "--seq-len", "32", "--eval-size", "4",
            "--select", "full", "--batch-size", "4", "--out", str(out), "--no-progress", *extra]


def test_cli_train_with_huge_lr_fails_in_one_line(setup, tmp_path, capsys):
    out = tmp_path / "big.h5"
    rc = cli.main(train_args(setup, out, "--steps", "30", "--lr", "1e3", "--warmup", "0", "--clip", "0",
                             "--checkpoint-every", "0"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err and ("diverged" in err or "not finite" in err
                                                                 or "nan" in err.lower())
    assert not out.exists()  # no checkpoint of the diverged model


def test_cli_unwritable_out_fails_before_training(setup, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    rc = cli.main(train_args(setup, blocker / "sub" / "ckpt.h5", "--steps", "1000000"))
    err = capsys.readouterr().err
    assert rc == 1 and "file.txt" in err and "Traceback" not in err and err.count("\n") == 1
    rc = cli.main(train_args(setup, tmp_path, "--steps", "1000000"))  # a folder, not a file
    assert rc == 1 and "folder" in capsys.readouterr().err
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert cli.main(train_args(setup, ro / "c.h5", "--steps", "1000000")) == 1


@pytest.mark.skipif(gz._core.backend_available("cuda"), reason="this build has CUDA")
def test_cli_missing_backend_is_one_line(setup, tmp_path, capsys):
    rc = cli.main(train_args(setup, tmp_path / "c.h5", "--steps", "1", "--backend", "cuda"))
    err = capsys.readouterr().err
    assert rc == 1 and "CUDA" in err and err.count("\n") == 1
