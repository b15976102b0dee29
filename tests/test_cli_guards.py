"""What a user of the command line expects after Ctrl-C and when a model meets a tokenizer:

- ``gozaru train`` interrupted tells to continue with ``--resume`` (a plain rerun would start at step 0), and a
  plain rerun refuses to overwrite an existing --out (an unfinished run's checkpoint is named as such) unless
  ``--force``;
- a tokenizer with more pieces than the model's vocabulary, or with other BOS/EOS/padding ids, is refused in
  one line wherever a model meets it (train, eval, grid), before any training."""
import os

import numpy as np
import pytest

import gozaru as gz
from gozaru.lab import cli
from gozaru.lab.experiment import Condition, run
from gozaru.lab.train import TrainConfig, Trainer
from test_cli import setup  # noqa: F401 - the shared CLI fixture
from test_experiment import EVAL, SMALL, lab  # noqa: F401 - the shared lab fixture


def common(setup):  # noqa: F811
    _, jsonl, tok, _ = setup
    return ["--tokenizer", tok, "--data", jsonl, "--gozaru", "--seq-len", "48", "--eval-size", "8", "--no-progress",
            "--batch-size", "4"]


def test_a_plain_rerun_refuses_to_overwrite_without_force(setup, tmp_path, capsys):  # noqa: F811
    base = setup[3]
    out = str(tmp_path / "run.h5")
    cmd = ["train", "--base", base, *common(setup), "--steps", "2", "--out", out]
    assert cli.main(cmd) == 0
    before = open(out, "rb").read()
    capsys.readouterr()
    assert cli.main(cmd) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and err.count("\n") == 1
    assert open(out, "rb").read() == before
    assert cli.main(cmd + ["--force"]) == 0


def test_an_unfinished_run_is_named_and_resume_is_advised(setup, tmp_path, capsys):  # noqa: F811
    base = setup[3]
    out = str(tmp_path / "run.h5")
    model = gz.load(base)[0]
    model.train_all()
    tokens = np.random.default_rng(0).integers(4, 700, (8, 12)).astype(np.int32)

    def stop(trainer, record):
        if trainer.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(model, (tokens, tokens), TrainConfig(steps=5, batch_size=4, progress=False), checkpoint=out,
                on_step=stop).fit()
    assert cli.main(["train", "--base", base, *common(setup), "--steps", "5", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "unfinished run (step 2 of 5)" in err and f"--resume {out}" in err
    assert gz.load(out)[2]["step"] == 2  # untouched


def test_ctrl_c_in_train_advises_resume(setup, tmp_path, capsys, monkeypatch):  # noqa: F811
    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "fit", interrupted)
    out = str(tmp_path / "run.h5")
    assert cli.main(["train", "--base", setup[3], *common(setup), "--steps", "2", "--out", out]) == 130
    err = capsys.readouterr().err
    assert f"--resume {out}" in err and "rerun the same command to continue" not in err


@pytest.mark.parametrize("change,match", [
    (dict(vocab_size=100), "pieces, the model's vocabulary only 100"),
    (dict(eos_token_id=5), "EOS id is 3, the model's eos_token_id is 5"),
    (dict(bos_token_id=0), "BOS id is 2, the model's bos_token_id is 0"),
    (dict(pad_token_id=7), "padding id is 0, the model's pad_token_id is 7"),
])
def test_a_tokenizer_that_does_not_fit_the_model_is_refused(setup, tmp_path, capsys, change, match):  # noqa: F811
    cfg = gz.load(setup[3])[0].config.replace(**change)
    base = str(tmp_path / "other.h5")
    gz.Model(cfg, seed=0).save(base)
    out = str(tmp_path / "run.h5")
    assert cli.main(["train", "--base", base, *common(setup), "--steps", "2", "--out", out]) == 1
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not os.path.exists(out)
    assert cli.main(["eval", base, *common(setup)[:7], "--n-prompts", "2", "--no-progress"]) == 1
    assert match in capsys.readouterr().err


def test_the_grid_checks_the_tokenizer_before_any_run(lab, tmp_path):  # noqa: F811
    _, _, base, exp = lab
    other = gz.Model(base.config.replace(eos_token_id=9), seed=0)
    with pytest.raises(ValueError, match="EOS id is 3, the model's eos_token_id is 9"):
        run([Condition("full", {"kind": "full"})], other, exp, str(tmp_path / "g"), train=SMALL, eval=EVAL,
            progress=False, log=None)
    assert not os.path.exists(tmp_path / "g" / "runs" / "base.json")


def test_a_list_of_eos_ids_fits_when_it_holds_the_tokenizers(lab):  # noqa: F811
    tok = lab[3].tokenizer
    cfg = lab[2].config.replace(eos_token_id=9, extra_eos_token_ids=(tok.eos_id,))
    tok.check_model(cfg)  # no error
