"""HF I/O of the Llama family: LlamaForCausalLM / Qwen2ForCausalLM folders (single file, sharded, bf16), both
config.json spellings (transformers 5's rope_parameters; the hub's top-level rope_theta + rope_scaling and
torch_dtype; Qwen2's sliding-window keys), what is refused by name, export that transformers loads, and HDF5
checkpoints of the family."""
import json

import numpy as np
import pytest
import torch
import transformers

import gozaru as gz
from reference import hf_causal_lm, rel_err

TOL = 1e-5  # max |a - b| / max |b| over the logits of the same fp32 weights: summation order only


def config(model_type="llama", kv=2, tied=False):
    return gz.ModelConfig(model_type=model_type, vocab_size=96, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=kv, intermediate_size=40,
                          max_position_embeddings=64, tie_word_embeddings=tied, rotary_emb_base=5e4,
                          layer_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)


def random_hf(cfg, seed=0):
    return hf_causal_lm(cfg, seed, perturb=True)


TOKENS = np.random.default_rng(0).integers(0, 96, size=(2, 10), dtype=np.int32)


def hf_logits(model):
    with torch.no_grad():
        return model(torch.from_numpy(TOKENS.astype(np.int64))).logits.float().numpy()


@pytest.mark.parametrize("model_type,kv,tied", [("llama", 2, False), ("llama", 1, True), ("qwen2", 4, True),
                                                ("qwen2", 2, False)])
def test_import_single_file(tmp_path, model_type, kv, tied):
    cfg = config(model_type, kv, tied)
    ref = random_hf(cfg)
    ref.save_pretrained(tmp_path)
    m = gz.Model.from_hf(tmp_path)
    assert m.config.core_dict() == cfg.core_dict()
    assert rel_err(m.logits(TOKENS), hf_logits(ref)) < TOL


def test_import_sharded_bf16(tmp_path):
    cfg = config("qwen2", 2, False)
    ref = random_hf(cfg).to(torch.bfloat16)
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    m = gz.Model.from_hf(tmp_path)
    for name, p in ref.named_parameters():  # bf16 widens to float32 exactly
        assert np.array_equal(m.params[name], p.detach().float().numpy()), name
    assert rel_err(m.logits(TOKENS), hf_logits(ref.float())) < TOL


def write_config(folder, d):
    (folder / "config.json").write_text(json.dumps(d))


def test_legacy_config_spelling_reads_the_same_model(tmp_path):
    cfg = config("llama", 2, False)
    ref = random_hf(cfg)
    ref.save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    theta = d.pop("rope_parameters")["rope_theta"]
    d.pop("dtype", None)
    write_config(tmp_path, {**d, "rope_theta": theta, "rope_scaling": None, "torch_dtype": "bfloat16"})
    m = gz.Model.from_hf(tmp_path)
    assert m.config.rotary_emb_base == 5e4 and m.config.num_key_value_heads == 2
    assert rel_err(m.logits(TOKENS), hf_logits(ref)) < TOL
    # a Qwen2 config with the sliding-window keys present but the window off runs
    cfg = config("qwen2", 2, False)
    random_hf(cfg).save_pretrained(tmp_path / "q")
    d = json.loads((tmp_path / "q" / "config.json").read_text())
    write_config(tmp_path / "q", {**d, "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2})
    assert gz.Model.from_hf(tmp_path / "q").config.model_type == "qwen2"


@pytest.mark.parametrize("change,match", [
    (dict(rope_parameters=None, rope_scaling={"type": "su", "factor": 2.0}), "rope_type 'su' is not supported"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}), "llama3' needs"),
    (dict(head_dim=16), "head_dim=16"),
    (dict(attention_bias=True), "o_proj"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(model_type="mistral"), "model_type is 'mistral'"),
])
def test_what_gozaru_cannot_run_is_refused_by_name(tmp_path, change, match):
    random_hf(config()).save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    write_config(tmp_path, {**d, **change})
    with pytest.raises(gz.CheckpointError, match=match) as e:
        gz.Model.from_hf(tmp_path)
    assert "config.json" in str(e.value)


ROPE_SCALINGS = [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8},
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
]


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("scaling", ROPE_SCALINGS, ids=lambda s: s["rope_type"])
def test_rope_scaling_runs_as_transformers_runs_it(tmp_path, model_type, scaling):
    """The family's RoPE goes through gozaru.engine.rope like GPT-NeoX's: the config round-trips through
    config.json and the logits match transformers' (which differ from the unscaled model's)."""
    cfg = config(model_type, 2, False).replace(rope_scaling=scaling)
    ref = random_hf(cfg)
    ref.save_pretrained(tmp_path)
    m = gz.Model.from_hf(tmp_path)
    assert m.config.rope_scaling == cfg.rope_scaling
    assert rel_err(m.logits(TOKENS), hf_logits(ref)) < TOL
    plain = gz.Model(cfg.replace(rope_scaling=None), seed=None)
    with plain.edit_params() as params:
        for name in plain.names:
            params[name][...] = m.params[name]
    assert rel_err(plain.logits(TOKENS), hf_logits(ref)) > 100 * TOL


def test_an_active_sliding_window_is_refused(tmp_path):
    random_hf(config("qwen2")).save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    write_config(tmp_path, {**d, "use_sliding_window": True, "sliding_window": 8})
    with pytest.raises(gz.CheckpointError, match="sliding-window"):
        gz.Model.from_hf(tmp_path)


@pytest.mark.parametrize("model_type,tied", [("llama", False), ("qwen2", True)])
def test_export_loads_in_transformers(tmp_path, model_type, tied):
    m = gz.Model(config(model_type, 2, tied), seed=3)
    m.to_hf(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    assert type(back).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[model_type]
    assert rel_err(m.logits(TOKENS), hf_logits(back)) < TOL
    assert gz.Model.from_hf(tmp_path).config == m.config


def test_checkpoint_round_trip_with_optimizer(tmp_path):
    m = gz.Model(config("qwen2", 1, True), seed=1)
    m.train_all()
    opt = gz.AdamW(m, lr=1e-3)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 96, (2, 9), dtype=np.int32)
    m.loss(tokens, np.roll(tokens, -1, axis=1))
    m.backward()
    opt.step()
    m.save(tmp_path / "c.h5", optimizer=opt, step=1)
    back, opt2, info = gz.load(tmp_path / "c.h5")
    assert back.config == m.config and info["step"] == 1
    for n in m.names:
        assert np.array_equal(back.params[n], m.params[n]), n
        m1, v1, s1 = opt.state(n)
        m2, v2, s2 = opt2.state(n)
        assert np.array_equal(m1, m2) and np.array_equal(v1, v2) and s1 == s2 == 1, n
    assert np.array_equal(back.logits(tokens), m.logits(tokens))


def test_a_checkpoint_written_before_the_families_loads_as_gpt_neox(tmp_path):
    """Files from before the family fields: no arch/norm_kind/... attributes on /params, no model_type in the JSON."""
    import h5py
    m = gz.Model(gz.preset("tiny", num_hidden_layers=1, vocab_size=50), seed=2)
    m.save(tmp_path / "old.h5")
    with h5py.File(tmp_path / "old.h5", "r+") as f:
        for key in ("arch", "norm_kind", "mlp_kind", "num_key_value_heads", "qkv_bias"):
            del f["params"].attrs[key]
        config = json.loads(f.attrs["config"])
        for key in ("model_type", "num_key_value_heads", "attention_bias", "hidden_act"):
            config.pop(key)
        f.attrs["config"] = json.dumps(config)
    back = gz.load(tmp_path / "old.h5")[0]
    assert back.config == m.config and back.config.model_type == "gpt_neox"
    assert all(np.array_equal(back.params[n], m.params[n]) for n in m.names)
