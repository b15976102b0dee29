"""Packed rows: several examples in one row with ``doc_ids``, each attending only to itself with positions from 0.

A packed row must give every example the logits, loss and parameter gradients it has in a row of its own, for
GPT-NeoX and the Llama family (grouped-query attention), through ``Model.loss`` and through the Trainer; without
``doc_ids`` the same rows give other numbers (the mask is what makes packing exact); bad ``doc_ids`` are refused
by name.

Tolerance (the float32 error model, not fitted). Packed and unpacked runs compute the same sums in other orders
and groupings (other attention tiles, other GEMM shapes, the loss and every weight gradient summed over other
token sets). A sum of n float32 terms in two orders differs by about sqrt(n) u of its scale (u = 2^-24, random
rounding; n u is the worst case); between the loss and the first layer's weights lie D = 6 L + 3 such steps
(per layer: norm, q/k/v, attention, output projection, norm, MLP; then final norm, head, loss), whose errors
add. So rel_err <= K * D * sqrt(n) * u with n the longest sum (the tokens of the batch, or the hidden size,
whichever is larger) and K = 8 (the factor tests/reference.py allows between two float32 algorithms).
Measured (1 and 2 threads): <= 50 u, 30x inside the bound; without the mask, 2000x the bound or more."""
import math

import numpy as np
import pytest

import gozaru as gz
from gozaru import IGNORE_INDEX
from gozaru.data import Rows, examples_to_arrays, pack_rows
from gozaru.data.sft import Example
from gozaru.engine.arrays import next_token_targets
from gozaru.lab.evaluate import eval_loss
from gozaru.lab.train import TrainConfig, Trainer

U32 = 2.0 ** -24
K = 8.0

CONFIGS = {
    "gpt_neox_parallel": dict(model_type="gpt_neox", vocab_size=41, hidden_size=24, num_hidden_layers=2,
                              num_attention_heads=3, intermediate_size=40, rotary_pct=0.5,
                              use_parallel_residual=True),
    "gpt_neox_sequential": dict(model_type="gpt_neox", vocab_size=37, hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=24, rotary_pct=0.25,
                                use_parallel_residual=False),
    "llama_gqa": dict(model_type="llama", vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48),
    "qwen2_mqa_tied": dict(model_type="qwen2", vocab_size=47, hidden_size=24, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
                           tie_word_embeddings=True),
}
# (example lengths, packed row width): short examples (one token long too) in a few rows, and long ones that cross
# the CPU attention's 64-query blocks and 128-key tiles
LAYOUTS = {"short": ([5, 9, 3, 12, 7, 1, 10, 4], 24), "long": ([70, 3, 60, 100, 1, 40, 129], 200)}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def tolerance(cfg, n_tokens):
    return K * (6 * cfg.num_hidden_layers + 3) * math.sqrt(max(n_tokens, cfg.hidden_size)) * U32


def make_model(name, seed=1):
    # initializer_range 0.3: attention far from uniform, so which keys a query sees changes its output
    cfg = gz.ModelConfig(max_position_embeddings=256, initializer_range=0.3, **CONFIGS[name])
    model = gz.Model(cfg, seed=seed)
    model.train_all()
    return model


def examples(cfg, lengths, seed=0):
    """One example per row: random tokens, ~30 % of targets ignored, the last one counted (its row's length)."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    tokens = np.zeros((len(lengths), width), np.int32)
    targets = np.full((len(lengths), width), IGNORE_INDEX, np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(0, cfg.vocab_size, n)
        targets[i, :n] = np.where(rng.random(n) < 0.7, rng.integers(0, cfg.vocab_size, n), IGNORE_INDEX)
        targets[i, n - 1] = rng.integers(0, cfg.vocab_size)
    return Rows(tokens, targets)


def places(packed):
    """(packed row, first column) of each example, in pack_rows' order with seed=None (the given order)."""
    out = []
    for r, ids in enumerate(packed.doc_ids):
        for d in range(ids.max() + 1):
            out.append((r, int(np.argmax(ids == d))))
    return out


def loss_and_grads(model, rows, doc_ids=None):
    model.zero_grad()
    loss = model.loss(rows.tokens, rows.targets, doc_ids=doc_ids)
    model.backward()
    return loss, {n: model.grad(n) for n in model.names}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_packed_rows_give_every_example_its_own_logits_loss_and_gradients(name, layout):
    model = make_model(name)
    cfg = model.config
    lengths, width = LAYOUTS[layout]
    alone = examples(cfg, lengths)
    packed = pack_rows(alone, seed=None, width=width)
    assert len(packed) < len(alone) and packed.counted == alone.counted
    tol = tolerance(cfg, max(packed.tokens.size, alone.tokens.size))

    logits_alone = model.logits(alone.tokens)
    logits_packed = model.forward(packed.tokens, return_logits=True, keep_activations=False,
                                  doc_ids=packed.doc_ids)[2]
    logits_unmasked = model.logits(packed.tokens)
    for i, (r, at) in enumerate(places(packed)):
        n, want = lengths[i], logits_alone[i, :lengths[i]]
        assert rel_err(logits_packed[r, at:at + n], want) < tol, f"example {i}"
        if at > 0:  # the mask matters: without it an example sees the ones before it in its row
            assert rel_err(logits_unmasked[r, at:at + n], want) > 100 * tol, f"example {i} without doc_ids"
        # the example's own loss: only its targets counted
        only = np.full_like(packed.targets, IGNORE_INDEX)
        only[r, at:at + n] = packed.targets[r, at:at + n]
        one = np.full_like(alone.targets, IGNORE_INDEX)
        one[i] = alone.targets[i]
        got = model.loss(packed.tokens, only, keep_activations=False, doc_ids=packed.doc_ids)
        want_loss = model.loss(alone.tokens, one, keep_activations=False)
        assert abs(got - want_loss) <= tol * abs(want_loss), f"loss of example {i}"

    loss_a, grads_a = loss_and_grads(model, alone)
    loss_p, grads_p = loss_and_grads(model, packed, packed.doc_ids)
    assert abs(loss_p - loss_a) <= tol * abs(loss_a)
    for n in model.names:
        assert rel_err(grads_p[n], grads_a[n]) < tol, n
    _, grads_u = loss_and_grads(model, packed)  # the mean loss may move little; its gradients do not
    assert max(rel_err(grads_u[n], grads_a[n]) for n in model.names) > 100 * tol


@pytest.mark.parametrize("name", ["gpt_neox_sequential", "llama_gqa"])
def test_a_non_finite_document_does_not_reach_its_neighbours(name):
    """A zero probability times another document's value is NaN when that value is: the forward's products
    span each document's own keys, so a corrupt token leaves the other documents of its row (and of its
    attention tiles) finite, before it in the row or after it."""
    model = make_model(name)
    embed = next(n for n in model.names if "embed" in n)
    with model.edit_params() as p:
        p[embed][7] = np.nan
    good = [1, 2, 3, 4, 5]
    for tokens, docs, finite in (([*good, 7], [0] * 5 + [1], slice(0, 5)),
                                 ([7, *good], [0] + [1] * 5, slice(1, 6))):
        _, _, logits = model.forward(np.array([tokens], np.int32), return_logits=True,
                                     doc_ids=np.array([docs], np.int32))
        assert np.isfinite(logits[0, finite]).all() and not np.isfinite(logits[0, 5 if finite.start == 0 else 0]).all()


def test_one_document_per_row_is_the_unpacked_computation_bit_for_bit():
    """doc_ids with one id per row (any value) take the plain path: the same bits as no doc_ids."""
    model = make_model("llama_gqa")
    rows = examples(model.config, [6, 6, 6])
    loss, grads = loss_and_grads(model, rows)
    docs = np.array([[0] * 6, [7] * 6, [-1] * 6])
    loss_d, grads_d = loss_and_grads(model, rows, docs)
    assert loss_d == loss and all(np.array_equal(grads_d[n], grads[n]) for n in model.names)


def test_next_token_targets_stay_inside_documents():
    """loss(tokens, doc_ids=...) without targets: each document's tokens predict their successors in it, the last
    one nothing, as each document alone."""
    model = make_model("gpt_neox_parallel")
    rng = np.random.default_rng(3)
    lengths = [4, 7, 1, 8]
    docs_alone = [rng.integers(0, model.config.vocab_size, n).astype(np.int32) for n in lengths]
    tokens = np.concatenate(docs_alone)[None]
    doc_ids = np.repeat(np.arange(len(lengths)), lengths)[None]
    targets = next_token_targets(tokens, doc_ids)
    assert (targets != IGNORE_INDEX).sum() == sum(n - 1 for n in lengths)
    got = model.loss(tokens, doc_ids=doc_ids, keep_activations=False)
    total = sum(model.loss(d[None], keep_activations=False) * (len(d) - 1) for d in docs_alone if len(d) > 1)
    want = total / sum(n - 1 for n in lengths)
    assert abs(got - want) <= tolerance(model.config, tokens.size) * abs(want)


@pytest.mark.parametrize("doc_ids, error, match", [
    (np.zeros((2, 5), np.int32), ValueError, r"doc_ids must have the shape of tokens \(2, 6\), got \(2, 5\)"),
    (np.zeros((2, 6), np.float32), TypeError, "doc_ids must hold integer document ids, got dtype float32"),
    (np.zeros((2, 6), bool), TypeError, "integer document ids"),
    (np.array([[0, 0, 2**40, 2**40, 1, 1], [0] * 6], np.int64), ValueError, r"doc_ids\[0, 2\] = 1099511627776 does"),
    (np.array([[0, 0, 1, 1, 0, 0], [0] * 6]), ValueError,
     r"doc_ids\[0, 4\] = 0 comes back to the document that begins at \[0, 0\]"),
    (np.array([[0] * 6, [-1, 3, 3, -1, 4, 4]]), ValueError, r"doc_ids\[1, 3\] = -1 comes back"),
    ([[0, 0, 0]], ValueError, "shape of tokens"),
])
def test_bad_doc_ids_are_refused_by_name(doc_ids, error, match):
    model = make_model("gpt_neox_sequential")
    rows = examples(model.config, [6, 6])
    model.loss(rows.tokens, rows.targets)  # activations of a good forward, which a refused call leaves alone
    with pytest.raises(error, match=match):
        model.loss(rows.tokens, rows.targets, doc_ids=doc_ids)
    model.backward()
    good = np.array([[0, 0, 0, 1, 1, 1], [5, 6, 7, 8, 9, -1]])
    assert math.isfinite(model.loss(rows.tokens, rows.targets, doc_ids=good))


def test_core_takes_only_int32_doc_ids_of_the_batch_shape():
    model = make_model("gpt_neox_sequential")
    tokens = np.zeros((2, 4), np.int32)
    with pytest.raises(TypeError, match="doc_ids must have dtype int32"):
        model.core.forward(tokens, None, False, False, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="doc_ids"):
        model.core.forward(tokens, None, False, False, np.zeros((4, 2), np.int32))


# --------------------------------------------------------------------------- data
def test_pack_rows_keeps_every_example_whole_and_in_one_row():
    cfg = make_model("gpt_neox_parallel").config
    lengths = [5, 9, 3, 12, 7, 1, 10, 4]
    alone = examples(cfg, lengths)
    alone.targets[2] = IGNORE_INDEX  # counts no target: left out
    packed = pack_rows(alone, seed=4, width=16)
    assert packed.tokens.shape[1] == 16 and packed.n_examples == 7
    seen = []
    for r in range(len(packed)):
        ids = packed.doc_ids[r]
        assert np.all(np.diff(ids[ids >= 0]) >= 0) and np.all(ids[np.argmax(ids < 0):] < 0) if (ids < 0).any() else 1
        for d in range(ids.max() + 1):
            cols = np.flatnonzero(ids == d)
            match = [i for i in range(len(alone)) if lengths[i] == len(cols)
                     and np.array_equal(alone.tokens[i, :len(cols)], packed.tokens[r, cols])
                     and np.array_equal(alone.targets[i, :len(cols)], packed.targets[r, cols])]
            assert match
            seen.append(match[0])
        pad = ids < 0
        assert np.all(packed.targets[r, pad] == IGNORE_INDEX) and np.all(packed.tokens[r, pad] == 0)
    assert sorted(seen) == [0, 1, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="packed already"):
        pack_rows(packed)
    with pytest.raises(ValueError, match="an example of 12 tokens does not fit rows of width 8"):
        pack_rows(alone, width=8)


def test_examples_to_arrays_packs_each_example_with_its_own_targets():
    """pack=True: each example's tokens and targets are the ones of its own row (its last token predicts nothing,
    not the next example's first, even when an example has no prompt), with doc_ids."""
    exs = [Example((5, 6, 7), (8, 9, 2)), Example((), (10, 11, 2)), Example((12,), (13, 2)), Example((3, 4), (2,))]
    alone = examples_to_arrays(exs, seq_len=8, pad_id=1)
    packed = examples_to_arrays(exs, seq_len=8, pad_id=1, pack=True, seed=0)
    assert alone.doc_ids is None and packed.doc_ids is not None and packed.counted == alone.counted
    for r in range(len(packed)):
        ids = packed.doc_ids[r]
        for d in range(ids.max() + 1):
            cols = np.flatnonzero(ids == d)
            i = next(i for i in range(len(exs)) if np.array_equal(alone.tokens[i, :len(cols)], packed.tokens[r, cols]))
            assert np.array_equal(alone.targets[i, :len(cols)], packed.targets[r, cols])
        assert np.all(packed.tokens[r, ids < 0] == 1)


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("name, micro", [("gpt_neox_parallel", 0), ("llama_gqa", 2)])
def test_a_packed_training_step_is_the_unpacked_one(name, micro):
    """One Trainer step over every example, packed (TrainConfig.pack) and one per row: the same loss, gradient
    norm and gradients, and parameters as far apart as AdamW's first update lets those gradients' rounding move
    them: that update is lr g / (|g| + eps) per element, which moves by at most lr * 2 |dg| / (min |g| + eps)
    (and never by more than 2 lr) when g changes by dg, plus the float32 roundings of the update (of size <= lr)
    and of the parameter: 4 u of each."""
    lengths, _ = LAYOUTS["short"]
    model_a = make_model(name)
    model_p = model_a.clone()
    cfg = model_a.config
    rows = examples(cfg, lengths)
    tol = tolerance(cfg, rows.tokens.size)
    lr = 1e-2
    step = dict(steps=1, lr=lr, warmup_steps=0, max_grad_norm=0.0, progress=False, micro_batch_size=micro)
    n_packed = len(pack_rows(rows, seed=0))
    ta = Trainer(model_a, rows, TrainConfig(batch_size=len(rows), **step)).fit()
    tp = Trainer(model_p, rows, TrainConfig(batch_size=n_packed, pack=True, **step)).fit()
    assert tp.rows.packed and len(tp.rows) == n_packed < len(rows)
    ra, rp = ta.history[0], tp.history[0]
    assert abs(rp["loss"] - ra["loss"]) <= tol * ra["loss"]
    assert abs(rp["grad_norm"] - ra["grad_norm"]) <= tol * ra["grad_norm"]
    eps = ta.config.eps
    for n in model_a.names:
        ga, gp = model_a.grad(n).astype(np.float64), model_p.grad(n).astype(np.float64)
        assert rel_err(gp, ga) < tol, n
        pa, pp = model_a.params[n].astype(np.float64), model_p.params[n].astype(np.float64)
        move = lr * np.minimum(2.0, 2 * np.abs(gp - ga) / (np.minimum(np.abs(ga), np.abs(gp)) + eps))
        assert np.all(np.abs(pp - pa) <= move + 4 * U32 * (np.abs(pa) + lr)), n
    # without the mask the same step is another one
    tu = Trainer(model_a.clone(), pack_rows(rows, seed=0), TrainConfig(batch_size=n_packed, **step))
    tu.rows = Rows(tu.rows.tokens, tu.rows.targets)
    tu.fit()
    assert abs(tu.history[0]["loss"] - ra["loss"]) > 100 * tol * ra["loss"]


def test_eval_loss_of_packed_rows_is_the_unpacked_one():
    model = make_model("qwen2_mqa_tied")
    lengths, width = LAYOUTS["short"]
    rows = examples(model.config, lengths)
    packed = pack_rows(rows, seed=2, width=width)
    want = eval_loss(model, rows, batch_size=3)
    assert abs(eval_loss(model, packed, batch_size=2) - want) <= tolerance(model.config, rows.tokens.size) * want
