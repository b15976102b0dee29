"""Untrusted PEFT adapter folders: a layout fuzzer (as tests/test_reliability_checkpoint.py does for
checkpoints). Every mutation of a PEFT-written adapter — tensor dtypes, shapes, names, values, the safetensors
header, the config's fields — either loads the same model PEFT loads from that folder, or is refused with one
line naming the folder or file (CheckpointError / FileNotFoundError / ValueError); the given model is never
changed, and nothing crashes."""
import json
import os
import struct

import numpy as np
import pytest
import torch

import gozaru as gz
from conftest import random_small_config
from reference import hf_causal_lm, hf_pair, random_batch, rel_err

peft = pytest.importorskip("peft")
from safetensors.torch import load_file, save_file  # noqa: E402

CFG = random_small_config(21, num_hidden_layers=2)
P = "base_model.model.gpt_neox.layers.{}.attention.{}.lora_{}.weight"
A0, B0 = P.format(0, "dense", "A"), P.format(0, "dense", "B")
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """An adapter folder written by PEFT (nonzero B) and the base model it belongs to."""
    folder = tmp_path_factory.mktemp("adapter") / "good"
    pm = peft.get_peft_model(hf_causal_lm(CFG, perturb=True), peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0,
                                                            target_modules=["query_key_value", "dense"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.3 * torch.randn_like(p))
    pm.save_pretrained(str(folder))
    return folder


def edit_tensors(change):
    def apply(folder):
        t = load_file(str(folder / WEIGHTS))
        change(t)
        save_file(t, str(folder / WEIGHTS), metadata={"format": "pt"})
    return apply


def edit_config(change):
    def apply(folder):
        c = json.loads((folder / CONFIG).read_text())
        change(c)
        (folder / CONFIG).write_text(json.dumps(c))
    return apply


def write(name, data):
    def apply(folder):
        (folder / name).write_bytes(data(folder) if callable(data) else data)
    return apply


def header_edit(change):
    """Rewrites the safetensors JSON header in place (data untouched)."""
    def apply(folder):
        raw = (folder / WEIGHTS).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        change(header)
        text = json.dumps(header).encode()
        (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return apply


def remove(name):
    return lambda folder: os.remove(folder / name)


LOADS, REFUSED = "loads", "refused"
MUTATIONS = {
    # valid variants: must give PEFT's model
    "as_written": (lambda f: None, LOADS),
    "float16_A": (edit_tensors(lambda t: t.update({A0: t[A0].half()})), LOADS),
    "bfloat16_B": (edit_tensors(lambda t: t.update({B0: t[B0].bfloat16()})), LOADS),
    "float64_B": (edit_tensors(lambda t: t.update({B0: t[B0].double()})), LOADS),
    "rslora": (edit_config(lambda c: c.update(use_rslora=True)), LOADS),
    "alpha_pattern": (edit_config(lambda c: c.update(alpha_pattern={"layers\\.1\\..*dense": 9})), LOADS),
    "saved_head": (lambda f: (edit_config(lambda c: c.update(modules_to_save=["lm_head"]))(f), edit_tensors(
        lambda t: t.update({"base_model.model.lm_head.weight": torch.randn(CFG.vocab_size, CFG.hidden_size)}))(f)),
        LOADS),
    "saved_head_without_tensor": (edit_config(lambda c: c.update(modules_to_save=["lm_head"])), REFUSED),
    # tensors
    "int32_A": (edit_tensors(lambda t: t.update({A0: t[A0].int()})), REFUSED),
    "int64_A": (edit_tensors(lambda t: t.update({A0: t[A0].long()})), REFUSED),
    "bool_B": (edit_tensors(lambda t: t.update({B0: t[B0] > 0})), REFUSED),
    "uint8_B": (edit_tensors(lambda t: t.update({B0: t[B0].to(torch.uint8)})), REFUSED),
    "transposed_A": (edit_tensors(lambda t: t.update({A0: t[A0].T.contiguous()})), REFUSED),
    "rank_mismatch": (edit_tensors(lambda t: t.update({A0: torch.cat([t[A0], t[A0]])})), REFUSED),
    "three_dims": (edit_tensors(lambda t: t.update({A0: t[A0][None]})), REFUSED),
    "one_dim": (edit_tensors(lambda t: t.update({A0: t[A0].ravel()})), REFUSED),
    "scalar": (edit_tensors(lambda t: t.update({A0: t[A0][0, 0].clone()})), REFUSED),
    "missing_B": (edit_tensors(lambda t: t.pop(B0)), REFUSED),
    "nan": (edit_tensors(lambda t: t.update({B0: torch.full_like(t[B0], float("nan"))})), REFUSED),
    "inf": (edit_tensors(lambda t: t.update({A0: torch.full_like(t[A0], float("inf"))})), REFUSED),
    "unknown_tensor": (edit_tensors(lambda t: t.update({"base_model.model.foo.weight": t[A0].clone()})), REFUSED),
    "no_prefix": (edit_tensors(lambda t: t.update({"gpt_neox.layers.0.attention.dense.lora_A.weight": t.pop(A0)})),
                  REFUSED),
    "other_layer": (edit_tensors(lambda t: t.update({P.format(7, "dense", "A"): t[A0].clone(),
                                                 P.format(7, "dense", "B"): t[B0].clone()})),
                    REFUSED),
    "head_twice": (edit_tensors(lambda t: t.update({
        "base_model.model.lm_head.lora_A.weight": torch.zeros(2, CFG.hidden_size),
        "base_model.model.embed_out.lora_A.weight": torch.zeros(2, CFG.hidden_size),
        "base_model.model.lm_head.lora_B.weight": torch.zeros(CFG.vocab_size, 2)})), REFUSED),
    "stray_base_layer": (edit_tensors(lambda t: t.update(
        {"base_model.model.gpt_neox.layers.0.mlp.dense_h_to_4h.base_layer.weight":
         torch.zeros(CFG.intermediate_size, CFG.hidden_size)})), REFUSED),
    "full_weight_not_saved": (edit_tensors(lambda t: t.update(
        {"base_model.model.gpt_neox.final_layer_norm.weight": torch.ones(CFG.hidden_size)})), REFUSED),
    "saved_module_wrong_shape": (lambda f: (edit_config(lambda c: c.update(modules_to_save=["final_layer_norm"]))(f),
                                            edit_tensors(lambda t: t.update(
                                                {"base_model.model.gpt_neox.final_layer_norm.weight":
                                                 torch.ones(CFG.hidden_size + 1)}))(f)), REFUSED),
    "adapted_and_saved": (lambda f: (edit_config(lambda c: c.update(modules_to_save=["dense"]))(f),
                                     edit_tensors(lambda t: t.update(
                                         {"base_model.model.gpt_neox.layers.0.attention.dense.weight":
                                          torch.zeros(CFG.hidden_size, CFG.hidden_size)}))(f)), REFUSED),
    # the safetensors file itself
    "empty_file": (write(WEIGHTS, b""), REFUSED),
    "truncated_file": (write(WEIGHTS, lambda f: (f / WEIGHTS).read_bytes()[:-9]), REFUSED),
    "garbage_header": (write(WEIGHTS, struct.pack("<Q", 12) + b"not json!!!!" + b"\0" * 64), REFUSED),
    "huge_header_length": (write(WEIGHTS, lambda f: struct.pack("<Q", 1 << 60) + (f / WEIGHTS).read_bytes()[8:]),
                           REFUSED),
    "offsets_past_end": (header_edit(lambda h: h[A0].update(data_offsets=[0, 1 << 40])), REFUSED),
    "overlapping_offsets": (header_edit(lambda h: h[B0].update(data_offsets=h[A0]["data_offsets"])), REFUSED),
    "shape_lies": (header_edit(lambda h: h[A0].update(shape=[h[A0]["shape"][0] * 2, h[A0]["shape"][1]])), REFUSED),
    "weights_missing": (remove(WEIGHTS), REFUSED),
    # the config
    "config_missing": (remove(CONFIG), REFUSED),
    "config_truncated": (write(CONFIG, lambda f: (f / CONFIG).read_bytes()[:30]), REFUSED),
    "config_deep": (write(CONFIG, b"[" * 100_000 + b"]" * 100_000), REFUSED),
    "config_a_list": (write(CONFIG, b"[1, 2]"), REFUSED),
    "config_not_utf8": (write(CONFIG, b"\xff\xfe{}"), REFUSED),
    "wrong_r": (edit_config(lambda c: c.update(r=4)), REFUSED),
    "alpha_a_string": (edit_config(lambda c: c.update(lora_alpha="16")), REFUSED),
    "alpha_pattern_string": (edit_config(lambda c: c.update(alpha_pattern={"dense": "9"})), REFUSED),
    "rank_pattern_a_list": (edit_config(lambda c: c.update(rank_pattern=["dense"])), REFUSED),
    "bad_regex": (edit_config(lambda c: c.update(rank_pattern={"dense[": 2})), REFUSED),
    "modules_to_save_a_string": (edit_config(lambda c: c.update(modules_to_save="lm_head")), REFUSED),
    "other_peft_type": (edit_config(lambda c: c.update(peft_type="IA3")), REFUSED),
    "dora": (edit_config(lambda c: c.update(use_dora=True)), REFUSED),
    "lora_bias": (edit_config(lambda c: c.update(bias="all")), REFUSED),
    "fan_in_fan_out": (edit_config(lambda c: c.update(fan_in_fan_out=True)), REFUSED),
}


@pytest.fixture(scope="module")
def base():
    return hf_pair(CFG)[1]


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_adapter_layout_fuzz(good, base, tmp_path, name):
    mutate, expected = MUTATIONS[name]
    folder = tmp_path / "adapter"
    folder.mkdir()
    for f in (WEIGHTS, CONFIG):
        (folder / f).write_bytes((good / f).read_bytes())
    mutate(folder)
    before, trainable = base.core.flat_params().copy(), base.trainable_names()
    try:
        loaded = gz.lora.load_adapter(base, folder)
    except (gz.CheckpointError, FileNotFoundError, ValueError) as e:
        assert expected == REFUSED, f"{name}: refused ({e})"
        msg = str(e)
        assert "\n" not in msg and str(tmp_path) in msg, msg
        return
    finally:
        assert np.array_equal(base.core.flat_params(), before) and base.trainable_names() == trainable, \
            f"{name}: the given model changed"
    assert expected == LOADS, f"{name}: loaded, but the folder is not a valid adapter"
    pm = peft.PeftModel.from_pretrained(hf_causal_lm(CFG, perturb=True), str(folder)).eval()
    tokens, _ = random_batch(CFG, 2, 8)
    with torch.no_grad():
        ref = pm(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    assert rel_err(loaded.logits(tokens), ref) < 1e-5, f"{name}: a model other than PEFT's"
