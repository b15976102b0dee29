"""PEFT's adapter files against PEFT itself: a head trained in full beside the adapters travels as
modules_to_save both ways, rank_pattern / alpha_pattern keys select the same modules as PEFT's
``(.*\\.)?({key})$`` match (alternations, partial names, first key wins), a pattern that backtracks without
end is an error instead of a hang, and odd tensors in an adapter file are refused naming them."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import gozaru as gz
from conftest import random_small_config
from reference import hf_causal_lm, hf_pair, random_batch, randomize_b, rel_err

peft = pytest.importorskip("peft")
from safetensors.numpy import load_file, save_file  # noqa: E402

TOL = 1e-5  # fp32 logits of the same math in two summation orders (as tests/test_lora.py)
DENSE_A = "base_model.model.gpt_neox.layers.0.attention.dense.lora_A.weight"


def peft_logits(pm, tokens):
    with torch.no_grad():
        return pm.eval()(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()


def test_a_head_trained_in_full_is_exported_as_modules_to_save(tmp_path):
    cfg = random_small_config(11, num_hidden_layers=2)
    _, base = hf_pair(cfg)
    lm = gz.lora.attach(base, ("query_key_value", "dense"), r=2, alpha=4)
    lm.set_trainable("embed_out.weight", True)  # what a LoRA condition does with a selected head
    randomize_b(lm)
    lm.params["embed_out.weight"][...] += 0.3 * np.random.default_rng(0).standard_normal(
        lm.params["embed_out.weight"].shape)  # "trained": far from the base head
    lm.params_changed()
    gz.lora.save_adapter(lm, tmp_path / "a")
    conf = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert conf["modules_to_save"] == ["lm_head"]
    pm = peft.PeftModel.from_pretrained(hf_causal_lm(cfg, perturb=True), str(tmp_path / "a"))
    tokens, _ = random_batch(cfg, 2, 8)
    assert rel_err(lm.logits(tokens), peft_logits(pm, tokens)) < TOL
    back = gz.lora.load_adapter(base, tmp_path / "a")
    assert np.array_equal(back.logits(tokens), lm.logits(tokens))
    assert back.is_trainable("embed_out.weight") and back.trainable_names() == lm.trainable_names()


def test_modules_to_save_written_by_peft_load_with_peft_logits(tmp_path):
    cfg = random_small_config(12, num_hidden_layers=2)
    pm = peft.get_peft_model(hf_causal_lm(cfg, perturb=True), peft.LoraConfig(
        r=2, lora_alpha=5, target_modules=["dense_h_to_4h"], modules_to_save=["lm_head", "final_layer_norm"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(0.2 * torch.randn_like(p))
    pm.save_pretrained(str(tmp_path / "p"))
    ours = gz.lora.load_adapter(hf_pair(cfg)[1], tmp_path / "p")
    tokens, _ = random_batch(cfg, 2, 8)
    assert rel_err(ours.logits(tokens), peft_logits(pm, tokens)) < TOL
    assert {"embed_out.weight", "gpt_neox.final_layer_norm.weight",
            "gpt_neox.final_layer_norm.bias"} <= set(ours.trainable_names())


def test_an_adapter_and_full_training_on_one_module_is_refused_naming_it(tmp_path):
    cfg = random_small_config(13, num_hidden_layers=1)
    lm = gz.lora.attach(gz.Model(cfg, seed=0), ("dense",), r=2)
    lm.set_trainable("gpt_neox.layers.0.attention.dense.bias", True)
    with pytest.raises(ValueError, match="gpt_neox.layers.0.attention.dense has an adapter and also trains"):
        gz.lora.save_adapter(lm, tmp_path / "a")


# key order matters (first match wins); alternation is grouped; keys are regular expressions on full names
PATTERNS = [
    ({"dense|query_key_value": 3, "layers.1.mlp.dense_4h_to_h": 9}, {"dense_h_to_4h": 4, "lm_head": 1}),
    ({"layers\\.[01]\\.attention\\.dense": 5, "query_key_value": 6, ".*\\.1\\.attention\\..*": 11,
      "mlp\\..*": 1.5}, {".*\\.1\\.attention\\..*": 3, "dense": 1}),
    ({"h_to_4h|4h_to_h": 13, "dense": 0.5}, {"lm_head": 4, "dense_4h_to_h|query_key_value": 3}),
]


@pytest.mark.parametrize("alpha_pattern,rank_pattern", PATTERNS)
def test_rank_and_alpha_patterns_select_what_peft_selects(tmp_path, alpha_pattern, rank_pattern):
    cfg = random_small_config(14, num_hidden_layers=2)
    pm = peft.get_peft_model(hf_causal_lm(cfg, perturb=True), peft.LoraConfig(
        r=2, lora_alpha=3, target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "lm_head"],
        rank_pattern=rank_pattern, alpha_pattern=alpha_pattern))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn_like(p))
    pm.save_pretrained(str(tmp_path / "p"))
    # PEFT writes the patterns with sorted keys, so the file's order (which decides) is what PEFT loads back
    pm = peft.PeftModel.from_pretrained(hf_causal_lm(cfg, perturb=True), str(tmp_path / "p"))
    ours = gz.lora.load_adapter(hf_pair(cfg)[1], tmp_path / "p")
    tokens, _ = random_batch(cfg, 2, 8)
    assert rel_err(ours.logits(tokens), peft_logits(pm, tokens)) < TOL
    # and our export of that model gives PEFT the same model again
    gz.lora.save_adapter(ours, tmp_path / "ours")
    again = peft.PeftModel.from_pretrained(hf_causal_lm(cfg, perturb=True), str(tmp_path / "ours"))
    assert rel_err(ours.logits(tokens), peft_logits(again, tokens)) < TOL


def adapter_folder(tmp_path, **lora_kwargs):
    cfg = random_small_config(15, num_hidden_layers=2)
    base = gz.Model(cfg, seed=0)
    lm = gz.lora.attach(base, ("dense",), **lora_kwargs)
    gz.lora.save_adapter(lm, tmp_path / "a")
    return base, tmp_path / "a"


def load_in_subprocess(base, folder, key, tmp_path):
    """load_adapter with alpha_pattern {key: 3} in a child process (a regex stuck in backtracking holds the GIL,
    so only a process can be stopped): (finished in time, the child's output)."""
    conf = json.loads((folder / "adapter_config.json").read_text())
    conf["alpha_pattern"] = {key: 3}
    (folder / "adapter_config.json").write_text(json.dumps(conf))
    base.save(tmp_path / "base.h5")
    code = (f"import gozaru as gz\nbase = gz.load({str(tmp_path / 'base.h5')!r})[0]\n"
            f"try:\n    m = gz.lora.load_adapter(base, {str(folder)!r})\n"
            "    print('alphas', sorted({s.alpha for s in m.lora}))\n"
            "except gz.CheckpointError as e:\n    print('error', e)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, ""
    return True, out.stdout + out.stderr


@pytest.mark.parametrize("key", ["((\\w|\\w)*\\.?)*g", "(.|.)*!"])
def test_patterns_that_backtrack_in_re_finish_with_peft_meaning(tmp_path, key):
    """Python's re (PEFT's matcher) never returns on these; they cannot match a module name, so the adapter
    loads with the default alpha."""
    base, folder = adapter_folder(tmp_path, r=2, alpha=4)
    done, out = load_in_subprocess(base, folder, key, tmp_path)
    assert done, f"load_adapter did not return within 120 s with alpha_pattern key {key!r}"
    assert "alphas [4.0]" in out, out


@pytest.mark.parametrize("key", ["(\\w|\\.|\\w\\.?)*(?=x)"])
def test_a_pattern_too_slow_even_for_a_guarded_matcher_is_an_error(tmp_path, key):
    base, folder = adapter_folder(tmp_path, r=2, alpha=4)
    done, out = load_in_subprocess(base, folder, key, tmp_path)
    assert done, f"load_adapter did not return within 120 s with alpha_pattern key {key!r}"
    assert "error" in out and "alpha_pattern key" in out and "takes too long" in out, out


def test_an_invalid_pattern_names_the_key(tmp_path):
    base, folder = adapter_folder(tmp_path, r=2)
    conf = json.loads((folder / "adapter_config.json").read_text())
    conf["rank_pattern"] = {"dense(": 2}
    (folder / "adapter_config.json").write_text(json.dumps(conf))
    with pytest.raises(gz.CheckpointError, match="rank_pattern key 'dense\\(' is not a valid regular expression"):
        gz.lora.load_adapter(base, folder)


def rewrite_tensors(folder, change):
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize("what,change,match", [
    ("int tensor", lambda t: t.update({k: v.astype(np.int32) for k, v in t.items() if "lora_A" in k}), "dtype I32"),
    ("bool tensor", lambda t: t.update({k: v > 0 for k, v in t.items() if "lora_B" in k}), "dtype BOOL"),
    ("base_layer of a weight without adapter", lambda t: t.update(
        {"base_model.model.gpt_neox.layers.0.mlp.dense_h_to_4h.base_layer.weight": np.zeros((1,), np.float32)}),
     "without an adapter"),
    ("head under both names", lambda t: t.update({
        "base_model.model.lm_head.lora_A.weight": t[DENSE_A],
        "base_model.model.embed_out.lora_A.weight": t[DENSE_A]}),
     "same tensor"),
    ("full weight not in modules_to_save", lambda t: t.update(
        {"base_model.model.gpt_neox.layers.0.attention.dense.weight": np.zeros((1,), np.float32)}),
     "modules_to_save"),
    ("NaN", lambda t: t.update({k: np.full_like(v, np.nan) for k, v in t.items() if "lora_B" in k}), "NaN"),
])
def test_odd_tensors_are_refused_and_the_model_is_untouched(tmp_path, what, change, match):
    base, folder = adapter_folder(tmp_path, r=2)
    rewrite_tensors(folder, change)
    before = base.core.flat_params().copy()
    with pytest.raises(gz.CheckpointError, match=match) as e:
        gz.lora.load_adapter(base, folder)
    assert "\n" not in str(e.value)
    assert np.array_equal(base.core.flat_params(), before)
