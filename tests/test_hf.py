"""HF import/export against transformers' GPTNeoXForCausalLM: same logits both ways."""
import json
import os

import numpy as np
import pytest

import torch
import transformers

import gozaru as gz
from gozaru import hf as gz_hf

TOL = 1e-4  # max |a - b| / max |b| over the logits, fp32


def small_config(parallel):
    return gz.GPTNeoXConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, rotary_pct=0.25, max_position_embeddings=64,
                            use_parallel_residual=parallel)


def random_hf(cfg, seed=0):
    hf_cfg = transformers.GPTNeoXConfig(**cfg.to_hf_dict())
    torch.manual_seed(seed)
    model = transformers.GPTNeoXForCausalLM(hf_cfg).float().eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


TOKENS = np.random.default_rng(0).integers(0, 96, size=(2, 10), dtype=np.int32)


def hf_logits(model):
    with torch.no_grad():
        return model(torch.from_numpy(TOKENS.astype(np.int64))).logits.float().numpy()


def assert_close(a, b):
    assert a.shape == b.shape
    err = np.abs(a - b).max() / np.abs(b).max()
    assert err < TOL, err


@pytest.mark.parametrize("parallel", [False, True])
def test_import_single_file(tmp_path, parallel):
    cfg = small_config(parallel)
    ref = random_hf(cfg)
    ref.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    m = gz.Model.from_hf(tmp_path)
    assert m.config.core_dict() == cfg.core_dict()
    assert_close(m.logits(TOKENS), hf_logits(ref))


def test_import_sharded(tmp_path):
    cfg = small_config(False)
    ref = random_hf(cfg)
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file()
    m = gz.Model.from_hf(tmp_path)
    assert_close(m.logits(TOKENS), hf_logits(ref))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_import_half_precision(tmp_path, dtype):
    cfg = small_config(True)
    ref = random_hf(cfg)
    ref.to(dtype).save_pretrained(tmp_path)
    m = gz.Model.from_hf(tmp_path)
    # Reference: the same half-precision weights, upcast exactly, run in fp32.
    upcast = ref.to(dtype).float()
    for name, p in upcast.state_dict().items():
        name = "embed_out.weight" if name == "lm_head.weight" else name
        if name in m.params:
            assert np.array_equal(m.params[name], p.numpy()), name
    assert_close(m.logits(TOKENS), hf_logits(upcast))


def test_import_pytorch_bin(tmp_path):
    cfg = small_config(False)
    ref = random_hf(cfg)
    ref.config.save_pretrained(tmp_path)
    sd = {k: v for k, v in ref.state_dict().items()}
    sd["embed_out.weight"] = sd.pop("lm_head.weight", sd.get("embed_out.weight"))
    sd["gpt_neox.rotary_emb.inv_freq"] = torch.ones(4)  # a buffer older transformers saved: ignored
    half = len(sd) // 2
    names = list(sd)
    torch.save({k: sd[k] for k in names[:half]}, tmp_path / "pytorch_model-1.bin")
    torch.save({k: sd[k] for k in names[half:]}, tmp_path / "pytorch_model-2.bin")
    index = {"weight_map": {k: f"pytorch_model-{1 if i < half else 2}.bin" for i, k in enumerate(names)}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    m = gz.Model.from_hf(tmp_path)
    assert_close(m.logits(TOKENS), hf_logits(ref))


@pytest.mark.parametrize("parallel", [False, True])
def test_export_loads_in_transformers(tmp_path, parallel):
    cfg = small_config(parallel)
    m = gz.Model(cfg, seed=5)
    for name in m.names:  # non-trivial LayerNorm and bias values
        if m.params[name].ndim == 1:
            m.params[name][...] += np.random.default_rng(1).normal(0, 0.1, m.params[name].shape)
    m.to_hf(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "generation_config.json", "model.safetensors"]
    loaded = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path).float().eval()
    assert_close(hf_logits(loaded), m.logits(TOKENS))
    # and back: an exact round trip
    again = gz.Model.from_hf(tmp_path)
    for name in m.names:
        assert np.array_equal(again.params[name], m.params[name]), name


def test_export_is_a_valid_safetensors_file(tmp_path):
    from safetensors.numpy import load_file

    m = gz.Model(small_config(False), seed=1)
    m.to_hf(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert set(tensors) == set(m.names)
    for name in m.names:
        assert tensors[name].dtype == np.float32 and np.array_equal(tensors[name], m.params[name])
    assert gz.GPTNeoXConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == m.config


def test_unknown_tensors_need_strict_false(tmp_path):
    from safetensors.numpy import load_file, save_file

    cfg = small_config(False)
    random_hf(cfg).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["score.weight"] = np.zeros((2, 32), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(gz.CheckpointError, match="score.weight"):
        gz.Model.from_hf(tmp_path)
    m = gz.Model.from_hf(tmp_path, strict=False)
    assert np.array_equal(m.params["embed_out.weight"], tensors["embed_out.weight"])
