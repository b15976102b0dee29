"""precision="bf16": the contract of csrc/precision.h checked against independent references.

Error model (bf16 has an 8-bit significand: rounding to nearest has relative error <= u = 2^-9; we use the
conservative 2^-8 of one bf16 spacing). In a GEMM with both operands rounded, each product x_i w_i gets a
relative error |d_i| <= 2 * 2^-8; with fp32 accumulation the sum's error is sum(x_i w_i d_i): at worst
2 * 2^-8 * sum|x_i w_i|, typically (independent signs) 2 * 2^-8 * sqrt(sum (x_i w_i)^2), which relative to an
output of typical size sqrt(K) * rms(x w) is ~2 * 2^-8 whatever K is. A model chains D = 4 L + 1 such GEMMs
(qkv, dense, fc, proj per layer, then the head) whose errors are independent, and LayerNorm keeps the gain ~1,
so logits differ from fp32 by ~2 * 2^-8 * sqrt(D) of their scale; BOUND_K = 4 covers the max over all
elements (about 3.5 sigma over ~1e3 logits) — a bug in the rounding (a wrong operand, a stale weight copy)
shows as 1e-1 or more. The FLOOR (2^-12) is what bf16 must differ from fp32 by at least: fp32 paths differ
from each other by ~1e-6, so a run below it never rounded. Against the bf16 reference of
tests/bf16_reference.py (same rounding points, fp32 or float64 sums) the fp32 error model of
tests/reference.py applies unchanged: only the summation order may differ. The emulated mode runs everywhere;
the library mode ("bf16") runs wherever the build has MKL: on CPUs without AVX512-BF16 / AMX-BF16 through
GOZARU_BF16_ANY_CPU=1 (MKL then converts to fp32 inside: same contract, no speed-up)."""
import copy
import os

import numpy as np
import pytest
import torch

import gozaru as gz
from bf16_reference import bf16_linears
from reference import error_model_check, hf_pair, hf_params, random_batch, rel_err, torch_lm_loss

U_BF16 = 2.0 ** -8
BOUND_K = 4.0
FLOOR = 2.0 ** -12
CFG = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
           rotary_pct=0.5, use_parallel_residual=False, max_position_embeddings=64)
HW = gz.build_info()["cpu_features"]
LIBRARY_BUILT = gz.build_info()["bf16"]["built"]


def bound(cfg):
    return BOUND_K * 2 * U_BF16 * np.sqrt(4 * cfg.num_hidden_layers + 1)


def make_pair(overrides=CFG, seed=0):
    cfg = gz.GPTNeoXConfig(**overrides)
    return (cfg, *hf_pair(cfg, seed))


# ---------------------------------------------------------------------------- bad input
def test_unknown_precision_is_a_value_error_listing_the_choices():
    with pytest.raises(ValueError, match="'fp32', 'bf16', 'bf16-emulated'"):
        gz.Model(gz.GPTNeoXConfig(**CFG), precision="fp16")
    with pytest.raises(TypeError):
        gz.Model(gz.GPTNeoXConfig(**CFG), precision=16)
    assert gz._core.PRECISIONS == ("fp32", "bf16", "bf16-emulated", "tf32")


@pytest.mark.skipif(HW["avx512_bf16"] or HW["amx_bf16"], reason="this CPU has bf16 instructions")
def test_bf16_on_a_cpu_without_it_names_the_missing_instructions(monkeypatch):
    monkeypatch.delenv("GOZARU_BF16_EMULATE", raising=False)
    monkeypatch.delenv("GOZARU_BF16_ANY_CPU", raising=False)
    with pytest.raises(gz.engine.PrecisionError, match="AVX512-BF16 nor AMX-BF16"):
        gz.Model(gz.GPTNeoXConfig(**CFG), precision="bf16")
    monkeypatch.setenv("GOZARU_BF16_EMULATE", "1")  # the opt-in: same rounding, fp32 multiplies
    assert gz.Model(gz.GPTNeoXConfig(**CFG), precision="bf16").precision == "bf16-emulated"


# ---------------------------------------------------------------------------- the rounding contract
PRECISIONS = ["bf16-emulated"] + (["bf16"] if LIBRARY_BUILT else [])


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("residual", [False, True], ids=["sequential", "parallel"])
def test_logits_loss_and_gradients_match_the_bf16_reference(precision, residual, monkeypatch):
    monkeypatch.setenv("GOZARU_BF16_ANY_CPU", "1")
    cfg, hf, model = make_pair({**CFG, "use_parallel_residual": residual})
    model.set_precision(precision)
    ref32, ref64 = bf16_linears(copy.deepcopy(hf)), bf16_linears(copy.deepcopy(hf).double())
    tokens, targets = random_batch(cfg, 3, 13)
    l32, loss32 = torch_lm_loss(ref32, tokens, targets)
    l64, loss64 = torch_lm_loss(ref64, tokens, targets)
    loss32.backward()
    loss64.backward()
    error_model_check(model.logits(tokens), l32.detach().numpy(), l64.detach().numpy(), "logits")
    model.train_all()
    model.zero_grad()
    error_model_check([model.loss(tokens, targets)], [loss32.item()], [loss64.item()], "loss")
    model.backward()
    g32, g64 = hf_params(ref32), hf_params(ref64)
    for n in model.names:
        error_model_check(model.grad(n), g32[n].grad.numpy(), g64[n].grad.numpy(), f"grad {n}")


def test_bf16_differs_from_fp32_within_the_error_model():
    cfg, hf, model = make_pair()
    tokens, targets = random_batch(cfg, 3, 13)
    bf = model.clone()
    bf.set_precision("bf16-emulated")
    e = rel_err(bf.logits(tokens), model.logits(tokens))
    assert FLOOR <= e <= bound(cfg), f"bf16 vs fp32 logits: {e:.3g} outside [{FLOOR:.3g}, {bound(cfg):.3g}]"


def test_matches_torch_autocast_within_the_error_model():
    """torch's autocast rounds the same operands but also stores each Linear's output in bf16 (one more
    rounding per GEMM, 2^-9 each): the two bf16 runs are both within the bound of fp32, so within 2x of each
    other."""
    cfg, hf, model = make_pair()
    model.set_precision("bf16-emulated")
    tokens, targets = random_batch(cfg, 3, 13)
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits, loss = torch_lm_loss(hf, tokens, targets)
    e = rel_err(model.logits(tokens), logits.float().numpy())
    assert e <= 2 * bound(cfg), f"logits vs torch bf16 autocast: {e:.3g} > {2 * bound(cfg):.3g}"
    assert abs(model.loss(tokens, targets) - loss.item()) <= 2 * bound(cfg) * loss.item()


# ---------------------------------------------------------------------------- training curve
STEPS, LR = 200, 3e-3
TRAIN_CFG = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 rotary_pct=0.5, use_parallel_residual=True, max_position_embeddings=32)


def demo_like_batches(vocab, steps, B=4, T=16, seed=0):
    """A learnable corpus: each row walks a fixed random successor table with 10 % noise (loss falls from
    log(vocab) towards ~0.6)."""
    rng = np.random.default_rng(seed)
    nxt = rng.permutation(vocab)
    out = []
    for _ in range(steps):
        rows = np.empty((B, T + 1), np.int32)
        rows[:, 0] = rng.integers(0, vocab, B)
        for t in range(T):
            noise = rng.random(B) < 0.1
            rows[:, t + 1] = np.where(noise, rng.integers(0, vocab, B), nxt[rows[:, t]])
        out.append((rows[:, :-1], rows[:, 1:]))
    return out


def gozaru_curve(model, batches):
    model.train_all()
    opt = gz.AdamW(model, lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    losses = []
    for tokens, targets in batches:
        model.zero_grad()
        losses.append(model.loss(tokens, targets))
        model.backward()
        opt.step(max_grad_norm=1.0)
    return np.array(losses)


def torch_curve(hf, batches, autocast):
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    losses = []
    for tokens, targets in batches:
        opt.zero_grad()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            _, loss = torch_lm_loss(hf, tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


def test_training_curve_follows_fp32_and_torch_autocast():
    """200 AdamW steps from the same weights on the same batches. Curves from one start drift apart as
    training amplifies small differences, so the band is on 20-step means: bf16 stays within BAND of its
    fp32 run and of torch's bf16 autocast run (measured: 5e-4), and all of them learn (loss more than halves)."""
    BAND = 0.02
    cfg, hf, model = make_pair(TRAIN_CFG, seed=1)
    batches = demo_like_batches(cfg.vocab_size, STEPS)
    bf = model.clone()
    bf.set_precision("bf16-emulated")
    ours_bf16, ours_fp32 = gozaru_curve(bf, batches), gozaru_curve(model, batches)
    torch_bf16 = torch_curve(copy.deepcopy(hf), batches, autocast=True)
    means = [c.reshape(-1, 20).mean(1) for c in (ours_bf16, ours_fp32, torch_bf16)]
    for name, other in (("gozaru fp32", means[1]), ("torch bf16 autocast", means[2])):
        gap = np.max(np.abs(means[0] - other))
        assert gap <= BAND, f"bf16 loss curve vs {name}: 20-step means differ by {gap:.3g} > {BAND}"
    for c in means:
        assert c[-1] < 0.5 * c[0], f"did not learn: {c[0]:.3f} -> {c[-1]:.3f}"


# ---------------------------------------------------------------------------- weight copies and checkpoints
def fresh_loss(model, tokens, targets, precision):
    other = gz.Model(model.config, seed=None, precision=precision)
    other.load_state_dict(model.state_dict())
    return other.loss(tokens, targets)


def test_weight_copies_follow_every_write():
    """The bf16 copies made by one forward must never be reused after the weights change: after an optimizer
    step (only trained tensors), and after a write through edit_params(), the loss equals
    that of a new model given the same weights (bit for bit: same code path). Training forwards of one shape
    only, so no buffer is released between them (a release marks every copy stale, which would hide a bug)."""
    cfg = gz.GPTNeoXConfig(**CFG)
    model = gz.Model(cfg, seed=0, precision="bf16-emulated")
    tokens, targets = random_batch(cfg, 2, 9)
    model.train_only(["gpt_neox.layers.1.mlp.dense_h_to_4h.weight", "embed_out.weight"])
    opt = gz.AdamW(model, lr=1e-2)
    model.loss(tokens, targets)  # copies made
    model.backward()
    opt.step()
    assert model.loss(tokens, targets) == fresh_loss(model, tokens, targets, "bf16-emulated")
    with model.edit_params() as params:
        params["gpt_neox.layers.0.attention.query_key_value.weight"][...] *= 1.5
    assert model.loss(tokens, targets) == fresh_loss(model, tokens, targets, "bf16-emulated")


def test_checkpoint_from_a_bf16_run_loads_into_fp32_and_back(tmp_path):
    cfg = gz.GPTNeoXConfig(**CFG)
    model = gz.Model(cfg, seed=0, precision="bf16-emulated")
    model.train_all()
    opt = gz.AdamW(model, lr=1e-2)
    tokens, targets = random_batch(cfg, 2, 9)
    for _ in range(3):
        model.zero_grad()
        model.loss(tokens, targets)
        model.backward()
        opt.step()
    path = tmp_path / "bf16.h5"
    model.save(path, opt, step=3)
    m32, _, _ = gz.load(path)
    assert m32.precision == "fp32"
    for n in model.names:  # the fp32 masters were saved
        np.testing.assert_array_equal(m32.params[n], model.params[n])
    mb, opt_b, _ = gz.load(path, precision="bf16-emulated")
    np.testing.assert_array_equal(mb.logits(tokens), model.logits(tokens))
    m32.save(tmp_path / "fp32.h5")
    mb.set_precision("fp32")
    mb._core.load_checkpoint(os.fspath(tmp_path / "fp32.h5"), None)
    mb.set_precision("bf16-emulated")
    np.testing.assert_array_equal(mb.logits(tokens), model.logits(tokens))


@pytest.mark.skipif(not LIBRARY_BUILT, reason="built without a bf16 GEMM library (MKL)")
def test_library_matches_emulation_up_to_summation_order(monkeypatch):
    monkeypatch.setenv("GOZARU_BF16_ANY_CPU", "1")
    cfg, hf, model = make_pair()
    tokens, _ = random_batch(cfg, 3, 13)
    emu = model.clone()
    emu.set_precision("bf16-emulated")
    model.set_precision("bf16")
    assert rel_err(model.logits(tokens), emu.logits(tokens)) <= 1e-4


def test_generation_rounds_like_the_forward():
    """Decoding (KV cache, the few-rows GEMM kernel) follows the same contract: the logits each token was chosen
    from equal the bf16 forward's over the finished sequence up to summation order (the fp32 error model's
    8 x 64 u), and differ from fp32 generation by at least the FLOOR."""
    cfg, hf, model = make_pair()
    bf = model.clone()
    bf.set_precision("bf16-emulated")
    prompt = [5, 9, 13, 2, 40]
    out, (steps,) = bf.generate([prompt], max_new_tokens=6, eos_token_id=-1, return_logits=True)
    full = bf.logits(np.array([prompt + out[0]]))[0, len(prompt) - 1:len(prompt) - 1 + len(out[0])]
    assert rel_err(steps, full) <= 8 * 64 * 2.0 ** -24
    _, (steps32,) = model.generate([prompt], max_new_tokens=6, eos_token_id=-1, return_logits=True)
    assert rel_err(steps[:1], steps32[:1]) >= FLOOR


def test_the_any_cpu_switch_follows_the_environment_at_each_use(monkeypatch):
    """GOZARU_BF16_ANY_CPU is read in Python when it is used, as the core's own check once read it: a value set
    for one model does not outlive the environment that set it (build_info's precisions follow it too)."""
    calls = []
    monkeypatch.setattr(gz._core, "allow_bf16_without_instructions", calls.append)
    monkeypatch.setenv("GOZARU_BF16_ANY_CPU", "1")
    gz.Model(gz.GPTNeoXConfig(**CFG), precision="bf16-emulated")
    monkeypatch.delenv("GOZARU_BF16_ANY_CPU")
    gz.build_info()
    assert calls == [True, False]
