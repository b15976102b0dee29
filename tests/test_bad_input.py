"""Every bad input at the ``gozaru._core`` boundary raises the documented exception, naming the problem
wrong dtype -> TypeError; wrong ndim/shape, non-contiguous, ids outside the vocabulary,
too long sequences, unknown names, empty batches, bad numbers -> ValueError; call order -> RuntimeError.
A crash here would take pytest down with it, so "never a segfault" is tested by the suite running at all."""
import numpy as np
import pytest

import gozaru as gz
from gozaru import _core

CFG = dict(vocab_size=37, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
           rotary_pct=0.5, rotary_emb_base=10000.0, max_position_embeddings=16, layer_norm_eps=1e-5,
           use_parallel_residual=False, tie_word_embeddings=False)
V, MAXPOS = CFG["vocab_size"], CFG["max_position_embeddings"]
NAME = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"


@pytest.fixture
def core():
    m = _core.Model(CFG, seed=0)
    for n in m.names:
        m.set_trainable(n, True)
    return m


def ids(shape, seed=0, dtype=np.int32):
    return np.random.default_rng(seed).integers(0, V, size=shape).astype(dtype)


# --------------------------------------------------------------------------- Model construction
@pytest.mark.parametrize("change, exc, words", [
    (dict(vocab_size="37"), TypeError, "vocab_size"),
    (dict(vocab_size=37.0), TypeError, "vocab_size"),
    (dict(vocab_size=0), ValueError, "vocab_size"),
    (dict(vocab_size=2**40), ValueError, "vocab_size"),
    (dict(hidden_size=15), ValueError, "hidden_size"),          # not divisible by the heads
    (dict(rotary_pct=float("nan")), ValueError, "rotary_pct"),
    (dict(layer_norm_eps="x"), TypeError, "layer_norm_eps"),
    (dict(use_parallel_residual="yes"), TypeError, "use_parallel_residual"),
    (dict(tie_word_embeddings=True), ValueError, "tie_word_embeddings"),
    (dict(hidden_sise=16), ValueError, "hidden_sise"),          # misspelt key
])
def test_bad_config(change, exc, words):
    cfg = {**CFG, **change}
    with pytest.raises(exc, match=words):
        _core.Model(cfg)


def test_config_missing_key_and_not_a_dict():
    cfg = dict(CFG)
    del cfg["num_hidden_layers"]
    with pytest.raises(ValueError, match="num_hidden_layers"):
        _core.Model(cfg)
    with pytest.raises(TypeError, match="dict"):
        _core.Model(list(CFG.items()))


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(backend="tpu"), ValueError, "backend"),
    (dict(backend=0), TypeError, "backend"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed=0, init_std=float("inf")), ValueError, "init_std"),
    (dict(seed=0, init_std=-0.1), ValueError, "init_std"),
])
def test_bad_model_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        _core.Model(CFG, **kwargs)


def test_python_layer_rejects_non_config():
    with pytest.raises(TypeError, match="ModelConfig"):
        gz.Model(CFG)


# --------------------------------------------------------------------------- forward: tokens and targets
@pytest.mark.parametrize("tokens, exc, words", [
    (ids((2, 5), dtype=np.int64), TypeError, "tokens.*int32.*int64"),
    (ids((2, 5), dtype=np.float32), TypeError, "tokens.*int32.*float32"),
    (ids((2, 5), dtype=np.uint32), TypeError, "tokens.*int32"),
    (ids((2, 5)).astype(">i4"), TypeError, "tokens.*native byte order"),
    ([[1, 2, 3]], TypeError, "tokens.*numpy.ndarray"),
    (ids((10,)), ValueError, r"tokens.*2-D.*\(10,\)"),
    (ids((2, 3, 4)), ValueError, "tokens.*2-D"),
    (ids((2, 10))[:, ::2], ValueError, "tokens.*C-contiguous"),
    (np.asfortranarray(ids((3, 4))), ValueError, "tokens.*C-contiguous"),
    (np.zeros((0, 5), np.int32), ValueError, "tokens.*empty"),
    (np.zeros((2, 0), np.int32), ValueError, "tokens.*empty"),
    (ids((2, MAXPOS + 1)), ValueError, "max_position_embeddings"),
])
def test_bad_tokens(core, tokens, exc, words):
    with pytest.raises(exc, match=words):
        core.forward(tokens)


@pytest.mark.parametrize("bad", [-1, V, 2**31 - 1, -100])
def test_token_ids_outside_the_vocabulary(core, bad):
    tokens = ids((2, 5))
    tokens[1, 3] = bad
    with pytest.raises(ValueError, match=rf"tokens\[1, 3\] = {bad} is outside the vocabulary \[0, {V}\)"):
        core.forward(tokens)


def test_misaligned_tokens(core):
    buf = np.zeros(2 * 5 * 4 + 1, np.uint8)
    tokens = buf[1:].view(np.int32).reshape(2, 5)  # a view starting one byte in
    assert not tokens.flags.aligned
    with pytest.raises(ValueError, match="tokens.*aligned"):
        core.forward(tokens)


@pytest.mark.parametrize("make, exc, words", [
    (lambda t: t.astype(np.int64), TypeError, "targets.*int32"),
    (lambda t: t[:, :-1].copy(), ValueError, r"targets.*shape \(2, 5\)"),
    (lambda t: t[:1].copy(), ValueError, "targets.*shape"),
    (lambda t: np.where(t == t[0, 0], -5, t).astype(np.int32), ValueError, "targets.*-5.*ignore index"),
    (lambda t: np.full_like(t, V), ValueError, rf"targets\[0, 0\] = {V}"),
    (lambda t: np.ascontiguousarray(np.concatenate([t, t], 1))[:, ::2], ValueError, "targets.*C-contiguous"),
])
def test_bad_targets(core, make, exc, words):
    tokens = ids((2, 5))
    with pytest.raises(exc, match=words):
        core.forward(tokens, make(ids((2, 5), seed=1)))


def test_ignored_targets_are_fine(core):
    tokens = ids((2, 5))
    targets = np.full((2, 5), -100, np.int32)
    loss, counted, _ = core.forward(tokens, targets)
    assert counted == 0 and np.isnan(loss)
    targets[0, 0] = 1
    loss, counted, _ = core.forward(tokens, targets)
    assert counted == 1 and np.isfinite(loss)


def test_python_layer_converts_int64_without_wrapping():
    m = gz.Model(gz.GPTNeoXConfig(**CFG), seed=0)
    tokens = ids((2, 5), dtype=np.int64)
    assert np.isfinite(m.loss(tokens, tokens))
    wrapped = tokens.copy()
    wrapped[0, 1] = 2**32 + 1  # would become 1 if cast blindly to int32
    with pytest.raises(ValueError, match=r"tokens\[0, 1\] = 4294967297"):
        m.loss(wrapped, tokens)
    with pytest.raises(ValueError, match=r"targets\[1, 4\] = -7"):
        bad = tokens.copy()
        bad[1, 4] = -7
        m.loss(tokens, bad)
    with pytest.raises(TypeError, match="integer"):
        m.logits(tokens.astype(np.float64))
    with pytest.raises(TypeError, match="integer"):
        m.logits(tokens.astype(bool))
    with pytest.raises(ValueError, match="empty"):
        m.logits(np.zeros((0, 3), np.int64))
    with pytest.raises(ValueError, match="2-D"):
        m.logits([1, 2, 3])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        m.logits(np.zeros((1, MAXPOS + 1), np.int64))


# --------------------------------------------------------------------------- names and call order
@pytest.mark.parametrize("method", ["param", "grad", "tensor_info", "is_trainable"])
def test_unknown_tensor_names(core, method):
    with pytest.raises(ValueError, match="unknown tensor name 'gpt_neox.nope'"):
        getattr(core, method)("gpt_neox.nope")
    with pytest.raises(TypeError, match="str"):
        getattr(core, method)(3)


def test_unknown_names_in_set_trainable(core):
    with pytest.raises(ValueError, match="unknown tensor name"):
        core.set_trainable("embed_out.bias", True)  # GPT-NeoX's head has no bias
    m = gz.Model(gz.GPTNeoXConfig(**CFG), seed=0)
    m.train_only([NAME])
    with pytest.raises(ValueError, match="nope"):
        m.set_trainable([m.names[0], "nope"], True)
    assert m.trainable_names() == [NAME]  # all names are checked before anything changes
    with pytest.raises(ValueError, match="nope"):
        m.train_only(["nope"])
    assert m.trainable_names() == [NAME]


def test_grad_of_a_frozen_tensor(core):
    core.set_trainable(NAME, False)
    core.forward(ids((2, 5)), ids((2, 5), 1))
    core.backward()
    with pytest.raises(ValueError, match="frozen"):
        core.grad(NAME)
    assert np.isnan(core.grad_norms()[core.names.index(NAME)])


def test_backward_before_forward(core):
    with pytest.raises(RuntimeError, match="forward"):
        core.backward()
    core.forward(ids((2, 5)))  # no targets: nothing to differentiate
    with pytest.raises(RuntimeError, match="forward"):
        core.backward()


def test_backward_with_nothing_trainable():
    m = _core.Model(CFG, seed=0)
    m.forward(ids((2, 5)), ids((2, 5), 1))
    with pytest.raises(RuntimeError, match="trainable"):
        m.backward()


@pytest.mark.parametrize("scale, exc", [(float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError)])
def test_bad_loss_scale(core, scale, exc):
    core.forward(ids((2, 5)), ids((2, 5), 1))
    with pytest.raises(exc, match="loss_scale"):
        core.backward(scale)


# --------------------------------------------------------------------------- AdamW
@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(beta1=1.0), ValueError, "beta1"),
    (dict(beta1=-0.1), ValueError, "beta1"),
    (dict(beta2=1.5), ValueError, "beta2"),
    (dict(beta2=float("nan")), ValueError, "beta2"),
    (dict(eps=-1e-8), ValueError, "eps"),
    (dict(weight_decay=-0.01), ValueError, "weight_decay"),
    (dict(weight_decay=float("inf")), ValueError, "weight_decay"),
    (dict(beta1="0.9"), TypeError, "beta1"),
])
def test_adamw_arguments_out_of_range(core, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        _core.AdamW(core, **kwargs)


def test_adamw_needs_a_model():
    with pytest.raises(TypeError):
        _core.AdamW("model")
    with pytest.raises(TypeError, match="gozaru.Model"):
        gz.AdamW(_core.Model(CFG))


@pytest.mark.parametrize("args, exc, words", [
    ((-1e-3,), ValueError, "lr"),
    ((float("nan"),), ValueError, "lr"),
    (("1e-3",), TypeError, "lr"),
    ((1e-3, -1.0), ValueError, "max_grad_norm"),
    ((1e-3, float("inf")), ValueError, "max_grad_norm"),
])
def test_adamw_step_arguments(core, args, exc, words):
    opt = _core.AdamW(core)
    with pytest.raises(exc, match=words):
        opt.step(*args)


def test_adamw_python_layer_arguments(small_model):
    with pytest.raises(ValueError, match="betas"):
        gz.AdamW(small_model, betas=0.9)
    with pytest.raises(ValueError, match="lr"):
        gz.AdamW(small_model, lr=-1.0)
    opt = gz.AdamW(small_model)
    with pytest.raises(ValueError, match="lr"):
        opt.step(lr=float("nan"))
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "fast"


def test_one_lr_check_for_every_path(small_model, tmp_path):
    """The core's bounds, 0 <= lr <= FLT_MAX, whichever way an lr arrives: constructor, setter, step, checkpoint."""
    opt = gz.AdamW(small_model, lr=0.0)
    for bad in (-1e-9, float("nan"), float("inf"), 3.5e38):
        messages = set()
        for attempt in (lambda: gz.AdamW(small_model, lr=bad), lambda: setattr(opt, "lr", bad),
                        lambda: opt.step(lr=bad),
                        lambda: small_model.core.save_checkpoint(str(tmp_path / "x.h5"), opt.core, lr=bad)):
            with pytest.raises(ValueError, match=r"lr = .* must be a finite number in \[0, 3.40282e\+38\]") as e:
                attempt()
            messages.add(str(e.value))
        assert len(messages) == 1, messages
    assert opt.lr == 0.0 and not (tmp_path / "x.h5").exists()
    opt.lr = 3.4e38  # the largest float32 is still a (useless) learning rate
    assert opt.lr == 3.4e38


def test_adamw_state_arguments(core):
    opt = _core.AdamW(core)
    with pytest.raises(ValueError, match="no optimizer state"):
        opt.get_state(NAME)
    with pytest.raises(ValueError, match="unknown tensor name"):
        opt.has_state("nope")
    core.forward(ids((2, 5)), ids((2, 5), 1))
    core.backward()
    opt.step(1e-3)
    m, v, step = opt.get_state(NAME)
    assert step == 1 and m.shape == core.param(NAME).shape
    with pytest.raises(ValueError, match=r"m must have shape"):
        opt.set_state(NAME, m[:-1].copy(), v, 1)
    with pytest.raises(TypeError, match="v must have dtype float32"):
        opt.set_state(NAME, m, v.astype(np.float64), 1)
    with pytest.raises(ValueError, match="v must be C-contiguous"):
        opt.set_state(NAME, m, np.asfortranarray(v), 1)
    with pytest.raises(ValueError, match="step"):
        opt.set_state(NAME, m, v, -1)
    opt.set_state(NAME, m, v, 1)


def test_non_finite_gradient_is_named_and_changes_nothing(core):
    opt = _core.AdamW(core)
    before = core.flat_params().copy()
    core.param("gpt_neox.final_layer_norm.bias")[0] = np.inf  # poisons every gradient downstream of the loss
    before[core.tensor_info("gpt_neox.final_layer_norm.bias")["offset"]] = np.inf
    core.forward(ids((2, 5)), ids((2, 5), 1))
    core.backward()
    with pytest.raises(ValueError, match="gpt_neox|embed_out"):
        opt.step(1e-3)
    assert np.array_equal(core.flat_params(), before, equal_nan=True)
