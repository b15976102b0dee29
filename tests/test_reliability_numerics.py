"""Numerics never go silently wrong: generation from non-finite weights raises, tiny temperatures are
greedy, sampling stays inside top_k / top_p, AdamW moments are validated (set_state and checkpoints),
and a refused step leaves the learning rate as it was."""
import h5py
import numpy as np
import pytest

import gozaru as gz

CFG = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, rotary_pct=0.25, max_position_embeddings=32)
NAME = "gpt_neox.layers.1.attention.dense.weight"
PROMPTS = [[1, 2, 3], [4, 5]]


@pytest.fixture(scope="module")
def model():
    m = gz.Model(CFG, seed=0)
    m.params["embed_out.weight"][...] *= 40  # peaked logits, so greedy and sampled tokens differ clearly
    m.params_changed()
    return m


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_generation_from_non_finite_weights_raises(value):
    m = gz.Model(CFG, seed=0)
    m.params[NAME][0, 0] = value
    m.params_changed()
    with pytest.raises(ValueError, match="not finite"):
        m.generate(PROMPTS, max_new_tokens=4)
    with pytest.raises(ValueError, match="not finite"):
        m.generate(PROMPTS, max_new_tokens=4, temperature=1.0, seed=1)


@pytest.mark.parametrize("temperature", [1e-45, 1e-39, 1e-30, 1e-9])
def test_tiny_temperature_is_greedy(model, temperature):
    greedy = model.generate(PROMPTS, max_new_tokens=8, eos_token_id=-1)
    for seed in range(5):
        got = model.generate(PROMPTS, max_new_tokens=8, temperature=temperature, top_k=3, seed=seed,
                             eos_token_id=-1)
        assert [list(g) for g in got] == [list(g) for g in greedy]


@pytest.mark.parametrize("temperature", [1e-3, 0.5, 1.0, 5.0, 1e6])
@pytest.mark.parametrize("top_k,top_p", [(1, 1.0), (2, 1.0), (5, 1.0), (0, 0.3), (3, 0.5)])
def test_sampling_stays_in_top_k_and_top_p(model, temperature, top_k, top_p):
    for seed in range(3):
        toks, logits = model.generate(PROMPTS, max_new_tokens=6, temperature=temperature, top_k=top_k, top_p=top_p,
                                      seed=seed, eos_token_id=-1, return_logits=True)
        for t, lg in zip(toks, logits):
            for tok, row in zip(t, lg):
                order = np.argsort(-row.astype(np.float64), kind="stable")
                allowed = set(order[:top_k].tolist()) if top_k else set(range(len(row)))
                if top_p < 1.0:
                    z = (row.astype(np.float64) - row.max()) / temperature
                    p = np.exp(z)[order]
                    p /= p.sum()
                    nucleus = int(np.searchsorted(np.cumsum(p), top_p - 1e-9)) + 1
                    allowed &= set(order[:nucleus].tolist())
                assert int(tok) in allowed, (temperature, top_k, top_p, seed)


def test_set_state_rejects_bad_moments():
    m = gz.Model(CFG, seed=0)
    m.train_all()
    opt = gz.AdamW(m, lr=1e-3)
    shape = m.params[NAME].shape
    ok = np.zeros(shape, np.float32)
    bad_v = ok.copy()
    bad_v[1, 2] = -1e-3
    with pytest.raises(ValueError, match=rf"second moment of {NAME}\[34\].*-0.001"):
        opt.set_state(NAME, ok, bad_v, 1)
    bad_v[1, 2] = np.nan
    with pytest.raises(ValueError, match=rf"second moment of {NAME}"):
        opt.set_state(NAME, ok, bad_v, 1)
    bad_m = ok.copy()
    bad_m[0, 0] = np.inf
    with pytest.raises(ValueError, match=rf"first moment of {NAME}"):
        opt.set_state(NAME, bad_m, ok, 1)
    assert not opt.has_state(NAME)
    opt.set_state(NAME, ok, ok, 1)


def test_checkpoint_with_negative_second_moment_is_refused(tmp_path):
    m = gz.Model(CFG, seed=0)
    m.train_all()
    opt = gz.AdamW(m, lr=1e-3)
    m.loss(np.arange(20, dtype=np.int32).reshape(2, 10))
    m.backward()
    opt.step()
    path = tmp_path / "c.h5"
    m.save(path, optimizer=opt)
    with h5py.File(path, "r+") as f:
        f["optim/v"][NAME][3, 3] = -1.0  # rewritten in place: the checksum is recomputed
    fresh = gz.Model(CFG, seed=5)
    before = fresh.core.flat_params().copy()
    with pytest.raises(gz.CheckpointError, match=rf"c.h5.*second moment of {NAME}"):
        fresh.core.load_checkpoint(str(path), gz.AdamW(fresh).core)
    assert np.array_equal(fresh.core.flat_params(), before)


def test_refused_step_keeps_lr():
    m = gz.Model(CFG, seed=0)
    m.train_all()
    opt = gz.AdamW(m, lr=1e-3)
    m.loss(np.arange(20, dtype=np.int32).reshape(2, 10))
    m.backward()
    with pytest.raises(ValueError):
        opt.step(lr=0.5, max_grad_norm=float("nan"))
    assert opt.lr == 1e-3
    with pytest.raises(ValueError):
        opt.step(lr=-1.0)
    assert opt.lr == 1e-3
    opt.step(lr=0.25)
    assert opt.lr == 0.25
