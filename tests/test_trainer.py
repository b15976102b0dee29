"""Trainer: the loss falls on the tiny corpus, accumulation matches one big batch, NaN/Inf is caught and named,
resume continues bit-exactly, Ctrl-C saves a checkpoint; and the warmup + cosine schedule."""
import json
import math
import os
import signal

import numpy as np
import pytest

import gozaru as gz
from gozaru import data
from gozaru.lab.schedule import warmup_cosine
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab.train import NonFiniteError, TrainConfig, Trainer
from gozaru.data.rows import Rows, as_rows, rows_at, trim_columns


@pytest.fixture(scope="module")
def corpus_rows():
    """ござる instruction pairs of the synthetic corpus as response-only SFT rows, with a small tokenizer."""
    corpus = data.SyntheticCorpus(0)
    records = data.to_gozaru_dataset(corpus.instructions(300, seed=1))
    tok = Tokenizer.train([f"{r.instruction}\n{r.input}\n{r.output}" for r in records], vocab_size=800, seed=0)
    arrays = data.sft_arrays(records, tok, seq_len=48)
    return tok, as_rows(arrays)


def tiny_model(vocab_size, seed=0):
    cfg = gz.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64)
    m = gz.Model(cfg, seed=seed)
    m.train_all()
    return m


def quiet(**kw):
    return TrainConfig(progress=False, **kw)


def test_loss_falls_on_the_tiny_corpus(corpus_rows):
    tok, rows = corpus_rows
    t = Trainer(tiny_model(tok.vocab_size), rows, quiet(steps=80, batch_size=16, lr=5e-3, warmup_steps=5)).fit()
    losses = [h["loss"] for h in t.history]
    assert len(losses) == 80 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-10:]) < 0.65 * np.mean(losses[:5])
    assert t.tokens_seen > 0 and t.history[-1]["tokens"] == t.tokens_seen
    assert set(t.mean_grad_norms()) == set(t.model.names)


def test_accumulation_matches_one_batch(corpus_rows):
    tok, rows = corpus_rows
    a = Trainer(tiny_model(tok.vocab_size), rows, quiet(steps=4, batch_size=16)).fit()
    b = Trainer(tiny_model(tok.vocab_size), rows, quiet(steps=4, batch_size=16, micro_batch_size=5)).fit()
    np.testing.assert_allclose([h["loss"] for h in a.history], [h["loss"] for h in b.history], rtol=1e-5)
    for name in a.model.names:
        np.testing.assert_allclose(a.model.params[name], b.model.params[name], rtol=0, atol=2e-5)  # Adam: ~lr·sign


def test_nan_parameter_is_caught_and_named(corpus_rows):
    tok, rows = corpus_rows
    m = tiny_model(tok.vocab_size)
    bad = "gpt_neox.layers.1.mlp.dense_h_to_4h.weight"
    t = Trainer(m, rows, quiet(steps=5, batch_size=8))
    t.fit()  # healthy first
    m.params[bad][3, 5] = np.nan
    t.config.steps = 10
    with pytest.raises(NonFiniteError) as err:
        t.fit()
    assert err.value.kind == "parameter" and err.value.tensors == [bad]
    assert bad in str(err.value) and "step 6" in str(err.value)
    assert t.step == 5  # the bad step was not counted


def test_non_finite_gradient_is_named(corpus_rows, monkeypatch):
    tok, rows = corpus_rows
    m = tiny_model(tok.vocab_size)
    culprit = "gpt_neox.layers.0.attention.dense.weight"
    real = m.grad_norms
    monkeypatch.setattr(m, "grad_norms", lambda: {**real(), culprit: float("inf")})
    with pytest.raises(NonFiniteError) as err:
        Trainer(m, rows, quiet(steps=3, batch_size=8)).fit()
    assert err.value.kind == "gradient" and err.value.tensors[0] == culprit and culprit in str(err.value)


def test_resume_continues_bit_exactly(corpus_rows, tmp_path):
    tok, rows = corpus_rows
    config = quiet(steps=12, batch_size=12, micro_batch_size=4, lr=2e-3, warmup_steps=3, seed=7)
    straight = Trainer(tiny_model(tok.vocab_size), rows, config).fit()

    ckpt = str(tmp_path / "run.h5")

    def stop_at_5(trainer, record):
        if trainer.step == 5:
            raise KeyboardInterrupt

    first = Trainer(tiny_model(tok.vocab_size), rows, config, checkpoint=ckpt, on_step=stop_at_5)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert first.interrupted and os.path.exists(ckpt)

    resumed = Trainer(None, rows, checkpoint=ckpt, resume=ckpt, progress=False)
    assert (resumed.step, resumed.cursor) == (5, 5 * 12) and resumed.config.seed == 7
    resumed.fit()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for name in straight.model.names:
        assert np.array_equal(resumed.model.params[name], straight.model.params[name]), name
    for name in resumed.model.trainable_names():
        for x, y in zip(resumed.optimizer.state(name), straight.optimizer.state(name)):
            assert np.array_equal(x, y), name
    # the final checkpoint holds the finished state
    _, _, info = gz.load(ckpt)
    assert info["step"] == 12 and json.loads(info["extra"])["cursor"] == 12 * 12


def test_ctrl_c_finishes_the_step_and_saves(corpus_rows, tmp_path, sigint_raises):
    tok, rows = corpus_rows
    ckpt = str(tmp_path / "ctrl_c.h5")

    def press_ctrl_c(trainer, record):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    t = Trainer(tiny_model(tok.vocab_size), rows, quiet(steps=10, batch_size=8), checkpoint=ckpt,
                on_step=press_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    _, opt, info = gz.load(ckpt)
    assert info["step"] == t.step == 3 and opt is not None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_resume_refuses_other_data(corpus_rows, tmp_path):
    tok, rows = corpus_rows
    ckpt = str(tmp_path / "a.h5")
    Trainer(tiny_model(tok.vocab_size), rows, quiet(steps=2, batch_size=4), checkpoint=ckpt).fit()
    with pytest.raises(ValueError, match="same data"):
        Trainer(None, rows.take(slice(0, 10)), resume=ckpt)


def test_data_order_is_a_function_of_seed_and_cursor():
    a = rows_at(10, seed=3, cursor=0, count=25)
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))
    assert np.array_equal(rows_at(10, 3, 7, 9), a[7:16])
    assert not np.array_equal(rows_at(10, 4, 0, 10), a[:10])


def test_trim_columns_keeps_every_counted_target():
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6)
    targets = np.full((2, 6), -100, dtype=np.int32)
    targets[0, 2], targets[1, 3] = 5, 6
    tok, tgt = trim_columns(tokens, targets)
    assert tok.shape == (2, 4) and (tgt != -100).sum() == 2


def test_rows_accepts_token_arrays_and_pairs(corpus_rows):
    tok, rows = corpus_rows
    assert isinstance(as_rows((rows.tokens, rows.targets)), Rows)
    assert len(as_rows([rows, rows])) == 2 * len(rows)


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 100, 1e-3, warmup_steps=10, min_lr_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4)
    assert warmup_cosine(500, 100, 1e-3, 10, 0.1) == pytest.approx(1e-4)
