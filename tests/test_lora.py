"""LoRA adapters against PEFT (on transformers' GPTNeoXForCausalLM): logits, loss and every adapter gradient,
AdamW training, PEFT's file format both ways, merging, generation, checkpoints and bad input.

Error model (reference.error_model_check): torch in float64 is the reference; our fp32 error must stay within
K x torch-fp32's own error plus a small floor (fp32 rounding of a few ulps of the largest value), so the bound
tracks each case's conditioning instead of one fixed tolerance."""
import json

import numpy as np
import pytest

import torch
import transformers

import gozaru as gz
from conftest import random_small_config
from reference import (check_logits_loss_and_every_gradient, hf_causal_lm, hf_pair, peft_pair, peft_params,
                       random_batch, randomize_b, rel_err, torch_lm_loss)

peft = pytest.importorskip("peft")

FLOOR = 2e-6  # the error model's floor in these tests (its K is reference.K_ERR = 8)
MODULES = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


CASES = [  # (config seed, targets, layers, r, alpha, rslora)
    (0, MODULES, None, 4, 8, False),
    (1, ("query_key_value", "dense_4h_to_h"), [0], 2, 5, True),
    (2, ("dense", "dense_h_to_4h", "embed_out"), None, 3, 3, False),
]


@pytest.mark.parametrize("seed,targets,layers,r,alpha,rslora", CASES)
def test_logits_loss_and_adapter_gradients_match_peft(seed, targets, layers, r, alpha, rslora):
    cfg = random_small_config(seed, num_hidden_layers=2)
    ours, pm = peft_pair(cfg, targets, layers, r, alpha, rslora)
    check_logits_loss_and_every_gradient(ours, pm, *random_batch(cfg, 3, 11), names=ours.trainable_names(),
                                         params=peft_params, floor=FLOOR)
    # the frozen base has no gradient at all
    assert all("lora_" in n for n in ours.trainable_names())
    assert all(np.isnan(v) for n, v in ours.grad_norms().items() if "lora_" not in n)


def test_ten_adamw_steps_match_torch_and_frozen_weights_stay_bit_identical():
    cfg = random_small_config(4, num_hidden_layers=2)
    ours, pm = peft_pair(cfg, MODULES, None, 4, 8, False)
    frozen = {n: ours.params[n].copy() for n in ours.names if "lora_" not in n}
    tparams = [p for n, p in pm.named_parameters() if "lora_" in n]
    topt = torch.optim.AdamW(tparams, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    opt = gz.AdamW(ours, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    for step in range(10):
        tokens, targets = random_batch(cfg, 2, 9, seed=step)
        topt.zero_grad()
        torch_lm_loss(pm, tokens, targets)[1].backward()
        topt.step()
        ours.zero_grad()
        ours.loss(tokens, targets)
        ours.backward()
        opt.step()
    adapters = peft_params(pm)
    for n in ours.trainable_names():
        a, b = ours.params[n].astype(np.float64), adapters[n].detach().double().numpy()
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b), n
    for n, v in frozen.items():
        assert np.array_equal(ours.params[n], v), n
    assert [n for n in ours.names if opt.has_state(n)] == ours.trainable_names()  # no state for the base


def test_peft_loads_our_export_and_we_load_it_back(tmp_path):
    cfg = random_small_config(5, num_hidden_layers=2)
    _, base = hf_pair(cfg)
    ours = gz.lora.attach(base, ("query_key_value", "dense_4h_to_h", "embed_out"), r=3, alpha=6)
    randomize_b(ours)
    gz.lora.save_adapter(ours, tmp_path / "adapter", base_model_name_or_path="random-neox")
    conf = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == 3 and conf["lora_alpha"] == 6
    pm = peft.PeftModel.from_pretrained(hf_causal_lm(cfg, perturb=True), str(tmp_path / "adapter")).eval()
    tokens, _ = random_batch(cfg, 2, 8)
    with torch.no_grad():
        ref = pm(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    assert rel_err(ours.logits(tokens), ref) < 1e-5
    back = gz.lora.load_adapter(base, tmp_path / "adapter")
    assert back.lora == ours.lora and back.trainable_names() == ours.trainable_names()
    assert np.array_equal(back.logits(tokens), ours.logits(tokens))


def test_merged_export_and_generation_equal_the_adapted_model(tmp_path):
    cfg = random_small_config(6, num_hidden_layers=2)
    ours = gz.lora.attach(gz.Model(cfg, seed=1), r=2, alpha=4, layers=[1])
    randomize_b(ours, seed=1)
    merged = gz.lora.merge(ours)
    assert merged.lora == () and merged.names == gz.Model(cfg, seed=None).names
    merged.to_hf(tmp_path / "merged")
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    tokens, _ = random_batch(cfg, 2, 10)
    with torch.no_grad():
        ref = hf(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    assert rel_err(ours.logits(tokens), ref) < 1e-5
    prompts = [[1, 5, 7], [2, 4]]
    assert ours.generate(prompts, 6, eos_token_id=-1) == merged.generate(prompts, 6, eos_token_id=-1)
    with pytest.raises(ValueError, match="merge"):
        ours.to_hf(tmp_path / "no")


def test_peft_init_is_seeded_kaiming_uniform_and_b_zero():
    cfg = random_small_config(7, num_hidden_layers=1)
    a1 = gz.lora.attach(gz.Model(cfg, seed=0), r=4, seed=5)
    a2 = gz.lora.attach(gz.Model(cfg, seed=0), r=4, seed=5)
    for s in a1.lora:
        na, nb = a1.lora_names(s)
        bound = 1 / np.sqrt(a1.params[na].shape[1])
        assert np.abs(a1.params[na]).max() <= bound and np.abs(a1.params[na]).max() > 0.5 * bound
        assert not a1.params[nb].any() and np.array_equal(a1.params[na], a2.params[na])
    assert not np.array_equal(a1.params[na], gz.lora.attach(gz.Model(cfg, seed=0), r=4, seed=6).params[na])


def test_checkpoint_resume_through_the_trainer_is_bit_exact(tmp_path):
    from gozaru.lab.train import TrainConfig, Trainer
    cfg = random_small_config(8, num_hidden_layers=2, vocab_size=40)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 40, size=(24, 12), dtype=np.int32)
    rows = (tokens, np.where(rng.random(tokens.shape) < 0.2, -100, np.roll(tokens, -1, axis=1)).astype(np.int32))
    tc = TrainConfig(steps=6, batch_size=4, micro_batch_size=2, lr=5e-3, warmup_steps=1, seed=3, progress=False)

    def model():
        return gz.lora.attach(gz.Model(cfg, seed=0), r=2, alpha=4, targets=("query_key_value", "dense_4h_to_h"))

    straight = Trainer(model(), rows, tc).fit()
    ckpt = str(tmp_path / "run.h5")

    def stop(trainer, record):
        if trainer.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(model(), rows, tc, checkpoint=ckpt, on_step=stop).fit()
    loaded, _, _ = gz.load(ckpt)
    assert loaded.lora == straight.model.lora and loaded.trainable_names() == straight.model.trainable_names()
    resumed = Trainer(None, rows, checkpoint=ckpt, resume=ckpt, progress=False).fit()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for n in straight.model.names:
        assert np.array_equal(resumed.model.params[n], straight.model.params[n]), n


def test_bad_input_names_the_problem(tmp_path):
    cfg = random_small_config(9, num_hidden_layers=2)
    m = gz.Model(cfg, seed=0)
    with pytest.raises(ValueError, match="unknown target module.*'attn'"):
        gz.lora.attach(m, targets=("attn",))
    with pytest.raises(ValueError, match="r = 0 for gpt_neox.layers.0.attention.query_key_value.weight"):
        gz.lora.attach(m, r=0)
    big = cfg.hidden_size + 1
    with pytest.raises(ValueError, match=f"r = {big} for .*out of range"):
        gz.lora.attach(m, targets=("dense",), r=big)
    with pytest.raises(ValueError, match="layer"):
        gz.lora.attach(m, layers=[5])
    with pytest.raises(ValueError, match="unknown tensor"):
        gz.lora.attach(m, names=["nope.weight"])
    once = gz.lora.attach(m, targets=("dense",), r=2)
    with pytest.raises(ValueError, match="two adapters on gpt_neox.layers.0.attention.dense.weight"):
        gz.lora.attach(once, targets=("dense",), r=2)
    twice = gz.lora.attach(once, targets=("query_key_value",), r=2)  # other tensors: fine, the first kept
    assert len(twice.lora) == 2 * cfg.num_hidden_layers
    gz.lora.save_adapter(once, tmp_path / "a")
    other = gz.Model(cfg.replace(hidden_size=2 * cfg.hidden_size, num_attention_heads=cfg.num_attention_heads),
                     seed=0)
    with pytest.raises(gz.CheckpointError, match="adapter of gpt_neox.layers.0.attention.dense.weight has A"):
        gz.lora.load_adapter(other, tmp_path / "a")
    shallow = gz.Model(cfg.replace(num_hidden_layers=1), seed=0)
    with pytest.raises(gz.CheckpointError, match="gpt_neox.layers.1.attention.dense.weight.*another architecture"):
        gz.lora.load_adapter(shallow, tmp_path / "a")


def test_an_adapter_saved_by_peft_loads_with_the_same_logits(tmp_path):
    cfg = random_small_config(10, num_hidden_layers=2)
    _, base = hf_pair(cfg)
    lc = peft.LoraConfig(r=2, lora_alpha=3, lora_dropout=0.0, use_rslora=True, rank_pattern={"lm_head": 4},
                         target_modules=["gpt_neox.layers.1.mlp.dense_h_to_4h", "lm_head"])
    pm = peft.get_peft_model(hf_causal_lm(cfg, perturb=True), lc)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn_like(p))
    pm.save_pretrained(str(tmp_path / "peft"))
    ours = gz.lora.load_adapter(base, tmp_path / "peft")
    assert {(s.target, s.r) for s in ours.lora} == {("gpt_neox.layers.1.mlp.dense_h_to_4h.weight", 2),
                                                    ("embed_out.weight", 4)}
    tokens, _ = random_batch(cfg, 2, 8)
    with torch.no_grad():
        ref = pm.eval()(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    assert rel_err(ours.logits(tokens), ref) < 1e-5


def test_gradients_do_not_depend_on_which_adapter_halves_train():
    """Freezing every A (or every B) skips its GEMMs; the other half's gradients stay the same."""
    cfg = random_small_config(11, num_hidden_layers=2)
    m = gz.lora.attach(gz.Model(cfg, seed=0), targets=MODULES + ("embed_out",), r=2)
    randomize_b(m)
    tokens, targets = random_batch(cfg, 2, 9)
    m.zero_grad()
    m.loss(tokens, targets)
    m.backward()
    both = {n: m.grad(n) for n in m.trainable_names()}
    for half in ("lora_A", "lora_B"):
        m.train_only([n for n in both if half in n])
        m.zero_grad()
        m.loss(tokens, targets)
        m.backward()
        for n in m.trainable_names():
            np.testing.assert_allclose(m.grad(n), both[n], rtol=1e-5, atol=1e-7, err_msg=n)
