"""RoPE scaling on HF import against transformers' GPTNeoXForCausalLM itself: every rope type transformers
accepts for GPT-NeoX gives its frequencies and its logits (error model of tests/reference.py, positions up to
max_position_embeddings - 1), from either config spelling; what gozaru does not implement is refused naming
the field; checkpoints and HF export keep the settings."""
import copy
import json

import numpy as np
import pytest

import torch
import transformers

import gozaru as gz

from reference import U32, error_model_check

MAX_POS = 64
BASE = dict(vocab_size=67, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
            max_position_embeddings=MAX_POS, use_parallel_residual=True, rotary_emb_base=500.0)
HALF = 8  # head size 16, full rotary: 8 frequencies

# (id, rotary_pct, HF rope dict). Factors are large enough that an unscaled model is far off.
CASES = [
    ("default", 1.0, {"rope_type": "default"}),
    ("linear", 1.0, {"rope_type": "linear", "factor": 4.0}),
    ("linear_partial", 0.5, {"rope_type": "linear", "factor": 2.5}),
    ("dynamic", 1.0, {"rope_type": "dynamic", "factor": 3.0}),
    ("yarn", 1.0, {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16}),
    ("yarn_options", 1.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                           "beta_fast": 16, "beta_slow": 2, "mscale": 1.5, "mscale_all_dim": 0.5,
                           "truncate": False}),
    ("yarn_attention_factor", 1.0, {"rope_type": "yarn", "factor": 2.0, "attention_factor": 0.8,
                                    "original_max_position_embeddings": 16}),
    ("llama3", 1.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 16}),
    ("longrope", 1.0, {"rope_type": "longrope", "short_factor": [1.0 + 0.5 * i for i in range(HALF)],
                       "long_factor": [2.0 + i for i in range(HALF)], "factor": 4.0,
                       "original_max_position_embeddings": MAX_POS}),
]


def hf_pair(rotary_pct, rope_dict, key="rope_parameters", seed=0):
    """A transformers model with this RoPE dict (under `key`) and the gozaru model its folder imports to."""
    d = gz.GPTNeoXConfig(**BASE, rotary_pct=rotary_pct).to_hf_dict()
    d.pop("rope_parameters")
    d[key] = dict(rope_dict)
    hf_cfg = transformers.GPTNeoXConfig(**copy.deepcopy(d))
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).float().eval()
    return d, hf


def import_folder(tmp_path, d, hf):
    hf.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(d))  # exactly the spelling under test
    return gz.Model.from_hf(tmp_path)


def logits_check(model, hf, what):
    tokens = np.random.default_rng(3).integers(0, BASE["vocab_size"], (2, MAX_POS), dtype=np.int32)
    t = torch.from_numpy(tokens.astype(np.int64))
    with torch.no_grad():
        ref32 = hf(t).logits.numpy()
        ref64 = copy.deepcopy(hf).double()(t).logits.numpy()
    error_model_check(model.logits(tokens), ref32, ref64, what)


@pytest.mark.parametrize("name,rotary_pct,rope_dict", CASES, ids=[c[0] for c in CASES])
def test_frequencies_and_logits_match_transformers(tmp_path, name, rotary_pct, rope_dict):
    d, hf = hf_pair(rotary_pct, rope_dict)
    model = import_folder(tmp_path, d, hf)
    emb = hf.gpt_neox.rotary_emb
    inv_freq, factor = model.core.rope
    # float32 operations of the same order, each within an ulp or two: a few ulp apart at most
    np.testing.assert_allclose(inv_freq, emb.inv_freq.numpy(), rtol=8 * U32, atol=0)
    assert factor == pytest.approx(emb.attention_scaling, rel=U32)
    logits_check(model, hf, f"{name} logits")


@pytest.mark.parametrize("name,rotary_pct,rope_dict", CASES[1:5], ids=[c[0] for c in CASES[1:5]])
def test_legacy_rope_scaling_spelling(tmp_path, name, rotary_pct, rope_dict):
    legacy = {("type" if k == "rope_type" else k): v for k, v in rope_dict.items()}
    d, hf = hf_pair(rotary_pct, legacy, key="rope_scaling")
    logits_check(import_folder(tmp_path, d, hf), hf, f"legacy {name} logits")


def test_rope_parameters_preferred_over_old_keys(tmp_path):
    """rope_theta and partial_rotary_factor inside rope_parameters win over rotary_emb_base / rotary_pct, as in
    transformers 5."""
    d, hf = hf_pair(1.0, {"rope_type": "linear", "factor": 2.0, "rope_theta": 77.0, "partial_rotary_factor": 0.5})
    d["rotary_emb_base"], d["rotary_pct"] = 10000.0, 1.0
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**copy.deepcopy(d))).float().eval()
    hf.config._attn_implementation = "eager"
    model = import_folder(tmp_path, d, hf)
    assert (model.config.rotary_emb_base, model.config.rotary_pct) == (77.0, 0.5)
    logits_check(model, hf, "rope_parameters over rotary_emb_base")


@pytest.mark.parametrize("rope_dict,field", [
    ({"rope_type": "proportional", "factor": 2.0}, "rope_type"),
    ({"rope_type": "ntk-by-parts", "factor": 2.0}, "rope_type"),
    ({"rope_type": "linear"}, "factor"),
    ({"rope_type": "linear", "factor": 2.0, "low_freq_factor": 1.0}, "low_freq_factor"),
    ({"rope_type": "linear", "factor": "2"}, "factor"),
    ({"rope_type": "linear", "factor": -1.0}, "factor"),
    ({"rope_type": "yarn", "factor": 2.0, "truncate": "yes"}, "truncate"),
    ({"rope_type": "longrope", "short_factor": [1.0] * HALF, "long_factor": [1.0] * HALF,
      "original_max_position_embeddings": 16}, "original_max_position_embeddings"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * HALF}, "short_factor"),
    ({"rope_type": "dynamic", "factor": 2.0}, "dynamic"),  # with 2 rotary dims transformers divides by zero
])
def test_unsupported_settings_are_refused_naming_the_field(tmp_path, rope_dict, field):
    d = gz.GPTNeoXConfig(**BASE).to_hf_dict()
    d["rope_parameters"] = {**rope_dict, "rope_theta": 500.0, "partial_rotary_factor": 0.125 if
                            field == "dynamic" else 1.0}
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(gz.CheckpointError) as e:
        gz.hf.read_hf_config(tmp_path)
    msg = str(e.value)
    assert "config.json" in msg and field in msg and "\n" not in msg


def test_conflicting_spellings_are_refused(tmp_path):
    d = gz.GPTNeoXConfig(**BASE).to_hf_dict()
    d["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    d["rope_scaling"] = {"type": "linear", "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(gz.CheckpointError, match="rope_parameters and rope_scaling disagree"):
        gz.hf.read_hf_config(tmp_path)


@pytest.mark.parametrize("name,rotary_pct,rope_dict", [CASES[4], CASES[7]], ids=["yarn", "llama3"])
def test_checkpoint_and_export_keep_the_rope(tmp_path, name, rotary_pct, rope_dict):
    d, hf = hf_pair(rotary_pct, rope_dict)
    (tmp_path / "in").mkdir()
    model = import_folder(tmp_path / "in", d, hf)
    model.save(tmp_path / "ckpt.h5")
    loaded, _, _ = gz.load(tmp_path / "ckpt.h5")
    assert loaded.config.rope_scaling == model.config.rope_scaling
    logits_check(loaded, hf, f"{name} after a checkpoint")
    # HF export: transformers reads the same rotary back
    loaded.to_hf(tmp_path / "out")
    back = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "out").float().eval()
    back.config._attn_implementation = "eager"
    np.testing.assert_array_equal(back.gpt_neox.rotary_emb.inv_freq.numpy(), hf.gpt_neox.rotary_emb.inv_freq.numpy())
    logits_check(loaded, back, f"{name} after export")
    # the core refuses a checkpoint whose rotary differs from the model's
    plain = gz.Model(model.config.replace(rope_scaling=None), seed=None)
    with pytest.raises(gz.CheckpointError, match="rope"):
        plain.core.load_checkpoint(str(tmp_path / "ckpt.h5"))


def test_generation_uses_the_scaled_rotary(tmp_path):
    """The KV-cache path reads the same tables: greedy tokens equal transformers' greedy tokens."""
    d, hf = hf_pair(1.0, CASES[7][2])
    model = import_folder(tmp_path, d, hf)
    prompt = [5, 9, 11, 3]
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, min_new_tokens=20,
                           pad_token_id=0)[0, len(prompt):].tolist()
    assert model.generate([prompt], max_new_tokens=20, temperature=0.0)[0] == want


def test_core_refuses_bad_frequencies():
    cfg = gz.GPTNeoXConfig(**BASE)
    for bad, match in [((np.ones(HALF + 1, np.float32), 1.0), "frequencies|shape|rot"),
                       ((np.full(HALF, np.nan, np.float32), 1.0), "inverse frequency"),
                       ((np.ones(HALF, np.float32), 0.0), "attention factor")]:
        with pytest.raises(ValueError, match=match):
            gz._core.Model(cfg.core_dict(), rope=bad)
    from gozaru.engine import rope
    assert rope.read_scaling({"rope_type": "default"}, max_position_embeddings=8) is None


def test_absent_fields_take_transformers_defaults(tmp_path):
    """A config.json without rotary_pct / use_parallel_residual means transformers' defaults (0.25, True),
    not gozaru's."""
    d = {k: v for k, v in gz.GPTNeoXConfig(**BASE).to_hf_dict().items()
         if k not in ("rotary_pct", "use_parallel_residual", "rope_parameters", "bos_token_id", "eos_token_id")}
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**copy.deepcopy(d))).float().eval()
    hf.config._attn_implementation = "eager"
    model = import_folder(tmp_path, d, hf)
    c = model.config
    assert (c.rotary_pct, c.use_parallel_residual, c.bos_token_id, c.eos_token_id) == (
        hf.config.rope_parameters["partial_rotary_factor"], hf.config.use_parallel_residual,
        hf.config.bos_token_id, hf.config.eos_token_id)
    logits_check(model, hf, "transformers' defaults")
