"""Parameters are zero-copy NumPy views into the core's buffer: writes change the model, the model's
updates show through, and a view keeps the buffer alive after the Model object is gone."""
import gc

import numpy as np
import pytest

import gozaru as gz
from gozaru import _core


def test_views_have_the_hf_shapes_and_share_one_buffer(small_model):
    m = small_model
    flat = m.core.flat_params()
    assert flat.shape == (m.num_params,) and m.num_params == m.config.num_params()
    assert list(m.params) == list(m.config.tensor_shapes()) == list(m.names)
    for name, shape in m.config.tensor_shapes().items():
        v = m.params[name]
        assert v.shape == shape and v.dtype == np.float32 and v.flags.c_contiguous and v.flags.writeable
        off = m.tensor_info(name)["offset"]
        assert np.shares_memory(v, flat)
        assert v.__array_interface__["data"][0] == flat.__array_interface__["data"][0] + 4 * off
    assert m.params[m.names[0]] is m.params[m.names[0]]  # cached: one view per tensor


def test_writing_into_a_view_changes_the_output(small_model, batch):
    m = small_model
    tokens, _ = batch(m.config, 2, 5)
    before = m.logits(tokens)
    m.params["embed_out.weight"][...] = 0.0
    assert np.all(m.logits(tokens) == 0.0)
    m.params["embed_out.weight"][3, :] = 1.0  # logit 3 becomes the sum of the final hidden state (~0 after LN)
    m.params["gpt_neox.final_layer_norm.bias"][...] = 0.5
    out = m.logits(tokens)
    assert np.allclose(out[..., 3], 0.5 * m.config.hidden_size, rtol=1e-4)
    assert not np.allclose(before, out)


def test_training_updates_show_through_old_views(small_model, batch):
    m = small_model
    view = m.params["gpt_neox.layers.0.attention.dense.weight"]
    copy = view.copy()
    opt = gz.AdamW(m, lr=1e-2)
    tokens, targets = batch(m.config, 2, 6)
    m.loss(tokens, targets)
    m.backward()
    opt.step()
    assert not np.array_equal(view, copy)
    assert np.array_equal(view, m.state_dict()["gpt_neox.layers.0.attention.dense.weight"])


def test_a_view_outlives_the_model(batch):
    m = gz.Model(gz.GPTNeoXConfig(vocab_size=31, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=20, max_position_embeddings=8), seed=3)
    v = m.params["gpt_neox.embed_in.weight"]
    flat = m.core.flat_params()
    expected = v.copy()
    assert isinstance(v.base, _core.Model)
    del m
    gc.collect()
    _ = [np.ones(4096, np.float32) for _ in range(64)]  # reuse any freed memory
    assert np.array_equal(v, expected)
    v[...] = 7.0  # still writable, still the same buffer
    assert np.all(flat[:v.size] == 7.0)
    core = v.base
    del v
    gc.collect()
    assert core.param("gpt_neox.embed_in.weight")[0, 0] == 7.0


def test_the_optimizer_keeps_the_model_alive(batch):
    cfg = gz.GPTNeoXConfig(vocab_size=31, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=20, max_position_embeddings=8)
    m = gz.Model(cfg, seed=1)
    m.train_all()
    opt = _core.AdamW(m.core)
    core = m.core
    tokens, targets = batch(cfg, 2, 4)
    core.forward(tokens, targets)
    core.backward()
    del m, core
    gc.collect()
    assert np.isfinite(opt.step(1e-3))
    assert opt.model.num_params == cfg.num_params()


def test_params_mapping_is_read_only(small_model):
    with pytest.raises(TypeError):
        small_model.params["embed_out.weight"] = np.zeros(3)
    with pytest.raises(KeyError):
        small_model.params["nope"]
    assert "embed_out.weight" in small_model.params and "nope" not in small_model.params


def test_state_dict_and_clone_are_copies(small_model, batch):
    m = small_model
    sd = m.state_dict()
    c = m.clone()
    assert c.trainable_names() == m.trainable_names()
    tokens, _ = batch(m.config, 2, 5)
    assert np.array_equal(c.logits(tokens), m.logits(tokens))
    for n in m.names:
        assert not np.shares_memory(sd[n], m.params[n])
        assert not np.shares_memory(c.params[n], m.params[n])
    c.params["embed_out.weight"][...] = 0
    sd["embed_out.weight"][...] = 0
    assert np.any(m.params["embed_out.weight"] != 0)
    m.load_state_dict(sd)
    assert np.all(m.params["embed_out.weight"] == 0)
