"""SFT-shaped batches (ignored prompt, counted answer, ignored padding): the head and the loss run on the counted
rows alone, gathered chunk by chunk (csrc/model/head_loss.c). Loss and every gradient against transformers
within the error model of tests/reference.py, for both families, with the head in one chunk and in several
(a large vocabulary makes chunks of 512 rows, and answers straddle their borders); a frozen stack below a
trained head; and the loss-only path against the logits the same model returns."""
import numpy as np
import pytest

import gozaru as gz
from reference import check_logits_loss_and_every_gradient, error_model_check, hf_pair, hf_params, torch_lm_loss
from test_parity_hf import CONFIGS as PARITY_NEOX
from test_parity_llama import CONFIGS as PARITY_LLAMA


def sft_batch(cfg, B, T, seed=3):
    """Tokens and targets [B, T]: per row an ignored prompt, a counted answer, ignored padding (one run of
    counted targets per row, about half of all rows ignored)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(B, T), dtype=np.int32)
    targets = np.full((B, T), -100, np.int32)
    for b in range(B):
        start = int(rng.integers(1, T // 3))
        stop = int(rng.integers(start + 1, T - T // 5))
        targets[b, start:stop] = rng.integers(0, cfg.vocab_size, stop - start)
    return tokens, targets


# the parity suites' configurations (both families), run on SFT-shaped batches; qwen2_chunks: GQA with q/k/v
# biases and 16384 logits per row, so answers straddle the gathered chunks' borders there too
CASES = [(n, dict(fields, model_type="gpt_neox"), 4, 24 if n != "vocab_chunks" else 300)
         for n, fields, _, _ in PARITY_NEOX if n in ("sequential_full_rotary", "vocab_chunks")] + \
        [(n, fields, 3, 20) for n, fields, _, _ in PARITY_LLAMA if n == "llama_gqa2_tied"] + \
        [("qwen2_chunks", dict(model_type="qwen2", vocab_size=16384, hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, intermediate_size=16,
                               max_position_embeddings=300), 4, 300)]


def make_pair(fields):
    cfg = gz.ModelConfig(**{"max_position_embeddings": 64, "layer_norm_eps": 1e-6, **fields})
    return (cfg, *hf_pair(cfg))


@pytest.mark.parametrize("name,fields,B,T", CASES, ids=[c[0] for c in CASES])
def test_sft_batch_loss_and_every_gradient_match_transformers(name, fields, B, T):
    cfg, hf, model = make_pair(fields)
    tokens, targets = sft_batch(cfg, B, T)
    assert (targets == -100).mean() > 0.3   # the gathered path is taken (>= 1/8 of the rows skipped)
    check_logits_loss_and_every_gradient(model, hf, tokens, targets)


def test_loss_only_equals_the_loss_of_the_returned_logits():
    """The loss-only pass (gathered rows) against the cross-entropy of the full logits (every row, not gathered):
    two orders of the same sums, within float32 rounding of a log-sum-exp over the vocabulary."""
    cfg, _, model = make_pair(CASES[1][1])
    tokens, targets = sft_batch(cfg, *CASES[1][2:])
    logits = model.logits(tokens).astype(np.float64)
    keep = targets != -100
    z = logits[keep]
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    want = float(np.mean(lse - z[np.arange(len(z)), targets[keep]]))
    got = model.loss(tokens, targets, keep_activations=False)
    # per-row error of float32 logits and a float32 log-sum-exp over V terms: a few units of roundoff of the
    # logits' scale times log2(V) at most; 1e-5 relative is 40 u
    assert abs(float(got) - want) <= 1e-5 * max(1.0, abs(want)), (got, want)


def test_head_only_training_below_a_frozen_stack():
    """Only the head trains (nothing below needs the rows' input gradient): its gradient within the error model."""
    import copy
    cfg, hf, model = make_pair(CASES[1][1])
    tokens, targets = sft_batch(cfg, *CASES[1][2:])
    head = "embed_out.weight"
    model.train_only([head])
    model.zero_grad()
    model.loss(tokens, targets)
    model.backward()
    hf64 = copy.deepcopy(hf).double()
    for h in (hf, hf64):
        torch_lm_loss(h, tokens, targets)[1].backward()
    error_model_check(model.grad(head), hf_params(hf)[head].grad.numpy(), hf_params(hf64)[head].grad.numpy(),
                      f"grad {head}")
