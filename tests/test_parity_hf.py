"""Parity with transformers' GPTNeoXForCausalLM (fp32, CPU): logits, loss and every gradient,
and masked AdamW training against torch.optim.AdamW with requires_grad=False on frozen tensors.

Tolerances follow an error model (tests/reference.py: error_model_check) instead of numbers fitted to one
machine: gozaru fp32 and torch fp32 are both compared with a float64 run of the same computation, and gozaru
may be at most K_ERR times as far from it as torch, plus a floor. The comparisons run at 1 and 2 threads,
which changes gozaru's summation order (BLAS splits and OpenMP reductions)."""
import numpy as np
import pytest

import gozaru as gz
from reference import (NEOX_RESIDUAL_CASES, check_gradient_accumulation, check_logits_loss_and_every_gradient,
                       check_masked_adamw_against_torch, hf_pair, random_batch as batch)

# (name, config overrides, batch, seq)
CONFIGS = [
    *NEOX_RESIDUAL_CASES,
    ("sequential_quarter_rotary", dict(vocab_size=131, hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                                       intermediate_size=24, rotary_pct=0.25, use_parallel_residual=False,
                                       rotary_emb_base=500.0), 4, 9),
    ("parallel_full_rotary", dict(vocab_size=64, hidden_size=24, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=96, rotary_pct=1.0, use_parallel_residual=True,
                                  layer_norm_eps=1e-6), 2, 16),
    # head size 6 x 0.5 = 3 rotary dims: HF rotates 4 dims with frequencies base^(-2i/3)
    ("odd_rotary_dims", dict(vocab_size=59, hidden_size=48, num_hidden_layers=2, num_attention_heads=8,
                             intermediate_size=40, rotary_pct=0.5, use_parallel_residual=False), 2, 7),
    # several 32-query attention blocks, the last one partial
    ("long_sequence", dict(vocab_size=71, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, rotary_pct=0.5, use_parallel_residual=False,
                           max_position_embeddings=128), 2, 97),
    # the longest sequences the lab trains on: 16 query blocks x 16 key tiles of the blocked attention, with the
    # running max moving between tiles (tiny widths keep the float64 reference cheap)
    ("sequence_2048", dict(vocab_size=37, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16, rotary_pct=0.5, use_parallel_residual=True,
                           max_position_embeddings=2048), 1, 2048),
    # 600 tokens x 16384 logits: the head and the loss run in two chunks of rows (512 + 88), the head's
    # gradients formed chunk by chunk in the forward
    ("vocab_chunks", dict(vocab_size=16384, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, rotary_pct=0.5, use_parallel_residual=False,
                          max_position_embeddings=300), 2, 300),
]



def make_pair(overrides, seed=0):
    cfg = gz.GPTNeoXConfig(**{"max_position_embeddings": 64, **overrides})
    return (cfg, *hf_pair(cfg, seed))


@pytest.mark.parametrize("name,overrides,B,T", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_logits_loss_and_every_gradient_match_transformers(name, overrides, B, T, threads):
    cfg, hf, model = make_pair(overrides)
    check_logits_loss_and_every_gradient(model, hf, *batch(cfg, B, T))


def test_gradient_accumulation_equals_one_big_batch():
    cfg, _, model = make_pair(CONFIGS[0][1])
    check_gradient_accumulation(model, cfg)


def test_loss_without_backward_leaves_gradients_alone():
    """The forward forms the head's gradients ahead of backward(): a loss() that backward() never follows must
    not reach the model's gradients, and the next loss() + backward(scale) must give exactly its own share."""
    cfg, _, model = make_pair(CONFIGS[0][1])
    tokens, targets = batch(cfg, 3, 11)
    model.train_only(model.names)
    model.zero_grad()
    model.loss(tokens, targets)
    model.backward(scale=0.5)
    half = {n: model.grad(n) for n in model.names}
    model.zero_grad()
    model.loss(tokens[::-1].copy(), targets[::-1].copy())  # no backward
    assert all(not np.any(model.grad(n)) for n in model.names)
    model.loss(tokens, targets)
    model.backward(scale=0.5)
    for n in model.names:
        assert np.array_equal(model.grad(n), half[n]), n


def selection(cfg, kind):
    L = cfg.num_hidden_layers
    names = list(cfg.tensor_shapes())
    layer = lambda i: [n for n in names if n.startswith(f"gpt_neox.layers.{i}.")]
    if kind == "full":
        return names
    if kind == "mlp_head":
        return [n for n in names if ".mlp." in n] + ["embed_out.weight"]
    if kind == "non_mlp_head":
        return [n for n in names if ".mlp." not in n]
    if kind == "last_layer":
        return layer(L - 1)
    if kind == "middle_layer":
        return layer(L // 2)
    if kind == "frozen_embed_layer0":
        return layer(0)
    raise KeyError(kind)


SELECTIONS = ["full", "mlp_head", "non_mlp_head", "last_layer", "middle_layer", "frozen_embed_layer0"]
LR, WD, STEPS = 3e-3, 0.1, 10


@pytest.mark.parametrize("residual", ["sequential", "parallel"])
@pytest.mark.parametrize("kind", SELECTIONS)
def test_masked_adamw_training_matches_torch(kind, residual, threads):
    overrides = dict(vocab_size=83, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=56, rotary_pct=0.5, use_parallel_residual=residual == "parallel")
    cfg, hf, model = make_pair(overrides, seed=3)
    check_masked_adamw_against_torch(model, hf, set(selection(cfg, kind)), cfg, STEPS, LR, WD)


def test_two_identical_runs_are_bit_identical():
    def run():
        cfg = gz.GPTNeoXConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=32)
        m = gz.Model(cfg, seed=7)
        m.train_only(m.names)
        opt = gz.AdamW(m, lr=1e-2, weight_decay=0.01)
        for step in range(5):
            tokens, targets = batch(cfg, 3, 16, seed=step)
            m.zero_grad()
            m.loss(tokens, targets)
            m.backward()
            opt.step(max_grad_norm=1.0)
        return {n: m.params[n].copy() for n in m.names}

    a, b = run(), run()
    for n in a:
        assert a[n].tobytes() == b[n].tobytes(), n


def test_evaluation_forward_matches_and_keeps_nothing_for_backward():
    cfg, hf, model = make_pair(CONFIGS[1][1])
    tokens, targets = batch(cfg, 2, 9)
    model.train_only(model.names)
    kept = model.loss(tokens, targets)
    assert model.loss(tokens, targets, keep_activations=False) == kept
    with pytest.raises(RuntimeError, match="forward"):
        model.backward()  # the evaluation forward replaced the kept activations
    model.loss(tokens, targets)
    model.backward()
