"""Generation with the KV cache: greedy tokens equal transformers' generate, cached logits equal a full
recompute, sampling is reproducible per seed, EOS stops a row."""
import numpy as np
import pytest

import gozaru as gz
from reference import greedy_tokens_equal_hf_generate, hf_params

import torch
import transformers

CONFIGS = {
    "sequential": dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, rotary_pct=1.0, use_parallel_residual=False),
    "parallel_partial_rotary": dict(vocab_size=53, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                    intermediate_size=64, rotary_pct=0.25, use_parallel_residual=True),
}


def pair(overrides, seed=0):
    # large init: confident, varied greedy choices (near-ties would make the comparison fragile)
    cfg = gz.GPTNeoXConfig(max_position_embeddings=96, initializer_range=0.3, **overrides)
    model = gz.Model(cfg, seed=seed)
    hf_cfg = transformers.GPTNeoXConfig(**cfg.to_hf_dict())
    hf_cfg._attn_implementation = "eager"
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf_params(hf).items():
            p.copy_(torch.from_numpy(model.params[name]))
    return cfg, model, hf


def prompts(cfg, n, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg.vocab_size, size=int(rng.integers(1, 12))).tolist() for _ in range(n)]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_greedy_tokens_equal_transformers_generate(kind):
    cfg, model, hf = pair(CONFIGS[kind])
    ps = prompts(cfg, 5)
    ours = greedy_tokens_equal_hf_generate(model, hf, ps)  # a batch with different prompt lengths
    # each prompt alone gives what it gave inside the batch
    assert [model.generate([p], max_new_tokens=20, eos_token_id=-1)[0] for p in ps] == ours


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_kv_cache_logits_equal_full_recompute(kind):
    cfg, model, _ = pair(CONFIGS[kind])
    ps = prompts(cfg, 3, seed=5)
    tokens, step_logits = model.generate(ps, max_new_tokens=12, eos_token_id=-1, return_logits=True)
    for p, new, lg in zip(ps, tokens, step_logits):
        full = model.logits(np.array([p + new], dtype=np.int32))[0]
        expect = full[len(p) - 1:len(p) - 1 + len(new)]
        np.testing.assert_allclose(lg, expect, rtol=0, atol=2e-5 * np.abs(expect).max())


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds():
    cfg, model, _ = pair(CONFIGS["sequential"])
    ps = prompts(cfg, 4, seed=2)
    kw = dict(max_new_tokens=24, temperature=1.5, top_k=20, top_p=0.95, eos_token_id=-1)
    a = model.generate(ps, seed=11, **kw)
    assert a == model.generate(ps, seed=11, **kw)
    assert a != model.generate(ps, seed=12, **kw)
    greedy = model.generate(ps, max_new_tokens=24, eos_token_id=-1)
    assert a != greedy


def test_top_k_one_is_greedy():
    cfg, model, _ = pair(CONFIGS["parallel_partial_rotary"])
    ps = prompts(cfg, 3, seed=3)
    assert model.generate(ps, max_new_tokens=10, temperature=2.0, top_k=1, seed=4, eos_token_id=-1) == \
        model.generate(ps, max_new_tokens=10, eos_token_id=-1)


def test_eos_stops_a_row_and_is_included():
    cfg, model, _ = pair(CONFIGS["sequential"])
    ps = prompts(cfg, 4, seed=7)
    free = model.generate(ps, max_new_tokens=16, eos_token_id=-1)
    eos = free[0][3]  # the token row 0 produces at step 4 becomes the EOS
    stopped = model.generate(ps, max_new_tokens=16, eos_token_id=eos)
    for row_free, row in zip(free, stopped):
        cut = row_free.index(eos) + 1 if eos in row_free else len(row_free)
        assert row == row_free[:cut]
    assert stopped[0][-1] == eos and len(stopped[0]) <= 4


LONG = {
    "gpt_neox": CONFIGS["sequential"],
    "llama_gqa": dict(model_type="llama", vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48),
}


@pytest.mark.parametrize("family", sorted(LONG))
def test_prompts_longer_than_an_attention_tile_prefill_together(family):
    """The prefill lays the prompts end to end as documents of the blocked attention (query blocks of 64, key
    tiles of 128): prompts that straddle tiles and share them with their neighbours give each row the logits of
    its own full recompute, and the tokens it gets alone."""
    cfg = gz.ModelConfig(max_position_embeddings=320, initializer_range=0.3, **LONG[family])
    model = gz.Model(cfg, seed=3)
    rng = np.random.default_rng(7)
    ps = [rng.integers(0, cfg.vocab_size, size=n).tolist() for n in (130, 7, 201, 64)]
    tokens, step_logits = model.generate(ps, max_new_tokens=6, eos_token_id=-1, return_logits=True)
    for p, new, lg in zip(ps, tokens, step_logits):
        full = model.logits(np.array([p + new], dtype=np.int32))[0]
        expect = full[len(p) - 1:len(p) - 1 + len(new)]
        np.testing.assert_allclose(lg, expect, rtol=0, atol=2e-5 * np.abs(expect).max())
        assert model.generate([p], max_new_tokens=6, eos_token_id=-1)[0] == new


def test_a_non_finite_prompt_is_named_and_does_not_reach_the_others():
    """The prefill's prompts share attention tiles but not values: a prompt whose embedding is NaN fails the call
    naming its own row, wherever it sits in the batch."""
    cfg = gz.GPTNeoXConfig(max_position_embeddings=64, initializer_range=0.3, **CONFIGS["sequential"])
    model = gz.Model(cfg, seed=0)
    embed = next(n for n in model.names if "embed_in" in n)
    with model.edit_params() as p:
        p[embed][7] = np.nan
    good = [1, 2, 3, 4]
    assert len(model.generate([good], max_new_tokens=3, eos_token_id=-1)[0]) == 3
    for ps, bad in (([good, [7]], 1), ([[7], good], 0), ([good, [5, 7], good], 1)):
        with pytest.raises(ValueError, match=f"row {bad}, step 0"):
            model.generate(ps, max_new_tokens=3, eos_token_id=-1)
