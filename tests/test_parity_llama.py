"""Parity of the Llama family (LlamaForCausalLM, Qwen2ForCausalLM) with transformers (fp32, CPU): logits, loss and
every parameter gradient on random small configs (grouped-query attention with 1, 2 and 4 kv heads, tied and
untied embeddings, Qwen2's q/k/v biases), masked AdamW training against torch.optim.AdamW with
requires_grad=False on frozen tensors, and greedy generation against ``generate``. Tolerances: the error model
of tests/reference.py (gozaru's fp32 distance from a float64 run at most K_ERR times torch's own, plus a floor)."""
import numpy as np
import pytest
import torch

import gozaru as gz
from reference import (check_logits_loss_and_every_gradient, check_masked_adamw_against_torch,
                       greedy_tokens_equal_hf_generate, hf_pair, hf_params, random_batch as batch)

# (name, config fields, batch, seq)
CONFIGS = [
    ("llama_mqa_untied", dict(model_type="llama", vocab_size=97, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, intermediate_size=48), 3, 11),
    ("llama_gqa2_tied", dict(model_type="llama", vocab_size=64, hidden_size=48, num_hidden_layers=3,
                             num_attention_heads=6, num_key_value_heads=2, intermediate_size=40,
                             tie_word_embeddings=True, rotary_emb_base=500.0, layer_norm_eps=1e-5), 2, 13),
    ("llama_kv4_no_grouping", dict(model_type="llama", vocab_size=71, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, intermediate_size=56), 2, 9),
    ("qwen2_gqa4_untied", dict(model_type="qwen2", vocab_size=83, hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=8, num_key_value_heads=4, intermediate_size=72,
                               rotary_emb_base=1e6), 2, 10),
    ("qwen2_mqa_tied", dict(model_type="qwen2", vocab_size=59, hidden_size=24, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
                            tie_word_embeddings=True), 3, 7),
    # several 32-query attention blocks, the last one partial; head size 10
    ("llama_long_sequence", dict(model_type="llama", vocab_size=53, hidden_size=40, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                 max_position_embeddings=128), 2, 70),
]


def make_pair(fields, seed=0, init_range=0.02):
    cfg = gz.ModelConfig(**{"max_position_embeddings": 64, "layer_norm_eps": 1e-6, "initializer_range": init_range,
                            **fields})
    return (cfg, *hf_pair(cfg, seed))


@pytest.mark.parametrize("name,fields,B,T", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_logits_loss_and_every_gradient_match_transformers(name, fields, B, T, threads):
    cfg, hf, model = make_pair(fields)
    assert sorted(model.names) == sorted(hf_params(hf)), "gozaru's tensors are transformers' parameters"
    check_logits_loss_and_every_gradient(model, hf, *batch(cfg, B, T))


def test_odd_head_size_is_refused_by_name():
    # head size 5: transformers' rotate_half cannot rotate it either
    with pytest.raises(ValueError, match="odd rotary dimension"):
        gz.ModelConfig(model_type="llama", hidden_size=15, num_attention_heads=3, intermediate_size=8)


@pytest.mark.parametrize("fields,match", [
    (dict(num_key_value_heads=3), "num_key_value_heads"),
    (dict(rotary_pct=0.5), "rotate the whole head"),
    (dict(use_parallel_residual=True), "sequential"),
    (dict(attention_bias=True), "o_proj"),
    (dict(hidden_act="gelu"), "hidden_act"),
])
def test_bad_llama_configs_are_refused_by_name(fields, match):
    with pytest.raises(ValueError, match=match):
        gz.ModelConfig(model_type="llama", hidden_size=32, num_attention_heads=4, intermediate_size=8, **fields)


def selection(cfg, kind):
    L = cfg.num_hidden_layers
    names = list(cfg.tensor_shapes())
    layer = lambda i: [n for n in names if n.startswith(f"model.layers.{i}.")]
    head = [cfg.head_name]
    if kind == "full":
        return names
    if kind == "mlp_head":
        return [n for n in names if ".mlp." in n] + head
    if kind == "attention":
        return [n for n in names if ".self_attn." in n]
    if kind == "last_layer":
        return layer(L - 1)
    if kind == "middle_layer":
        return layer(L // 2)
    if kind == "k_and_v_only":
        return [n for n in names if ".k_proj." in n or ".v_proj." in n]
    raise KeyError(kind)


SELECTIONS = ["full", "mlp_head", "attention", "last_layer", "middle_layer", "k_and_v_only"]
LR, WD, STEPS = 3e-3, 0.1, 8


@pytest.mark.parametrize("family", ["llama_gqa_untied", "qwen2_mqa_tied"])
@pytest.mark.parametrize("kind", SELECTIONS)
def test_masked_adamw_training_matches_torch(kind, family):
    fields = dict(model_type="llama", num_key_value_heads=2, tie_word_embeddings=False) \
        if family == "llama_gqa_untied" else dict(model_type="qwen2", num_key_value_heads=1, tie_word_embeddings=True)
    cfg, hf, model = make_pair(dict(vocab_size=67, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                    intermediate_size=40, **fields), seed=3)
    check_masked_adamw_against_torch(model, hf, set(selection(cfg, kind)), cfg, STEPS, LR, WD)


GEN_CONFIGS = {k: v for k, v in ((c[0], c[1]) for c in CONFIGS) if k != "llama_long_sequence"}


@pytest.mark.parametrize("name", sorted(GEN_CONFIGS))
def test_greedy_tokens_equal_transformers_generate(name):
    # large init: confident, varied greedy choices (near-ties would make the comparison fragile)
    cfg, hf, model = make_pair(dict(GEN_CONFIGS[name], max_position_embeddings=96), init_range=0.3)
    rng = np.random.default_rng(1)
    ps = [rng.integers(0, cfg.vocab_size, size=int(rng.integers(1, 12))).tolist() for _ in range(5)]
    ours = greedy_tokens_equal_hf_generate(model, hf, ps)  # a batch with different prompt lengths
    tokens, step_logits = model.generate(ps[:2], max_new_tokens=8, eos_token_id=-1, return_logits=True)
    for p, new, lg in zip(ps, tokens, step_logits):  # the kv-head cache equals a full recompute
        full = model.logits(np.array([p + new], dtype=np.int32))[0]
        expect = full[len(p) - 1:len(p) - 1 + len(new)]
        np.testing.assert_allclose(lg, expect, rtol=0, atol=2e-5 * np.abs(expect).max())
