"""LoRA on the Llama family against PEFT (on transformers' LlamaForCausalLM / Qwen2ForCausalLM): every Linear
(PEFT's q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head) — logits, loss and every adapter
gradient within the error model of tests/reference.py — and PEFT's files both ways."""
import json

import numpy as np
import pytest
import torch

import gozaru as gz
from reference import (check_logits_loss_and_every_gradient, hf_pair, peft_pair, peft_params, random_batch,
                       randomize_b, rel_err)

peft = pytest.importorskip("peft")


def config(model_type, kv, tied):
    return gz.ModelConfig(model_type=model_type, vocab_size=61, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=kv, intermediate_size=40,
                          max_position_embeddings=64, tie_word_embeddings=tied, layer_norm_eps=1e-6)


CASES = [  # (model_type, kv heads, tied, targets (None: every Linear of a layer), layers, r, alpha, rslora)
    ("llama", 2, False, None, None, 4, 8, False),
    ("llama", 1, False, ("q_proj", "v_proj", "down_proj", "lm_head"), [1], 2, 5, True),
    ("qwen2", 2, True, None, None, 3, 3, False),
    ("qwen2", 4, False, ("k_proj", "o_proj", "gate_proj", "up_proj"), [0], 2, 4, False),
]


@pytest.mark.parametrize("model_type,kv,tied,targets,layers,r,alpha,rslora", CASES)
def test_logits_loss_and_adapter_gradients_match_peft(model_type, kv, tied, targets, layers, r, alpha, rslora):
    cfg = config(model_type, kv, tied)
    ours, pm = peft_pair(cfg, targets, layers, r, alpha, rslora)
    check_logits_loss_and_every_gradient(ours, pm, *random_batch(cfg, 3, 11), names=ours.trainable_names(),
                                         params=peft_params)


def test_peft_loads_our_export_and_we_load_it_back(tmp_path):
    cfg = config("qwen2", 2, False)
    hf, base = hf_pair(cfg)
    ours = gz.lora.attach(base, r=3, alpha=6)
    randomize_b(ours)
    gz.lora.save_adapter(ours, tmp_path / "adapter", base_model_name_or_path="random-qwen2")
    conf = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(conf["target_modules"]) == sorted(gz.lora.LLAMA_TARGETS)
    pm = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    tokens, _ = random_batch(cfg, 2, 8)
    with torch.no_grad():
        ref = pm(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    assert rel_err(ours.logits(tokens), ref) < 1e-5
    back = gz.lora.load_adapter(base, tmp_path / "adapter")
    assert back.lora == ours.lora
    assert np.array_equal(back.logits(tokens), ours.logits(tokens))


def test_an_unknown_module_names_the_family_modules():
    _, base = hf_pair(config("llama", 2, False))
    with pytest.raises(ValueError, match="q_proj"):
        gz.lora.attach(base, ("query_key_value",))
