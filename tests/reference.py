"""Helpers shared by the tests that compare gozaru with a reference (transformers, or the CPU backend)."""
import numpy as np


# The first cases of the CPU parity (test_parity_hf) and of the CUDA tests (test_cuda): one small GPT-NeoX per
# residual mode, (name, config overrides, batch, seq).
NEOX_RESIDUAL_CASES = [
    ("sequential_full_rotary", dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=48, rotary_pct=1.0, use_parallel_residual=False), 3, 11),
    ("parallel_quarter_rotary", dict(vocab_size=101, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                     intermediate_size=80, rotary_pct=0.25, use_parallel_residual=True), 2, 13),
]


def rel_err(a, b):
    """max |a - b| / max |b|: the strictest scale-aware comparison, used for logits and gradients."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def random_batch(cfg, B, T, seed=1):
    """Random tokens and targets [B, T] with about 30 % of targets ignored (response-only style masking)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(B, T), dtype=np.int32)
    targets = rng.integers(0, cfg.vocab_size, size=(B, T), dtype=np.int32)
    targets[rng.random((B, T)) < 0.3] = -100
    return tokens, targets


def check_gradient_accumulation(model, cfg):
    """Gradients of 4 rows accumulated from two backward passes of 2 rows, each scaled by its share of the counted
    targets, equal one pass over all 4 (to 1e-5); every tensor trains."""
    tokens, targets = random_batch(cfg, 4, 10)
    model.train_all()
    model.zero_grad()
    model.loss(tokens, targets)
    model.backward()
    full = {n: model.grad(n) for n in model.names}
    model.zero_grad()
    counts = [(targets[i:i + 2] != -100).sum() for i in (0, 2)]
    for i, c in zip((0, 2), counts):
        model.loss(tokens[i:i + 2], targets[i:i + 2])
        model.backward(scale=c / sum(counts))
    for n in model.names:
        assert rel_err(model.grad(n), full[n]) < 1e-5, n


def torch_lm_loss(model, tokens, targets):
    """(logits, mean cross-entropy over targets != -100) of a torch causal LM; the loss is computed in at least
    float32 (bf16 autocast logits are upcast, float64 stay float64)."""
    import torch
    logits = model(torch.from_numpy(tokens.astype(np.int64))).logits
    flat = logits.reshape(-1, logits.shape[-1])
    loss = torch.nn.functional.cross_entropy(flat.to(torch.promote_types(flat.dtype, torch.float32)),
                                             torch.from_numpy(targets.astype(np.int64)).reshape(-1),
                                             ignore_index=-100)
    return logits, loss


def greedy_tokens_equal_hf_generate(model, hf, prompts, new_tokens=20):
    """gozaru's greedy tokens for a batch of prompts of different lengths equal transformers' ``generate`` on
    each prompt alone (EOS off, exactly ``new_tokens`` tokens); returns gozaru's tokens."""
    import torch
    ours = model.generate(prompts, max_new_tokens=new_tokens, eos_token_id=-1)
    for p, got in zip(prompts, ours):
        with torch.no_grad():
            # the mask given: generate would otherwise take every token equal to pad_token_id for padding
            ref = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                              do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=0, eos_token_id=None)
        assert got == ref[0, len(p):].tolist(), p
    return ours


def hf_params(hf):
    """A transformers model's parameters under gozaru's names (transformers 5 calls GPT-NeoX's embed_out `lm_head`;
    Llama-family names are gozaru's; a tied head is not a parameter of its own)."""
    named = dict(hf.named_parameters())
    if "lm_head.weight" in named and any(n.startswith("gpt_neox.") for n in named):
        named["embed_out.weight"] = named.pop("lm_head.weight")
    return named


def hf_causal_lm(cfg, seed=0, perturb=False):
    """transformers' model for a gozaru config (eager attention, fp32, eval mode), initialised from seed;
    perturb=True adds 0.1 N(0, 1) to every vector (norm weights, biases) so their gradients mean something."""
    import torch
    import transformers
    config_class, model_class = {
        "gpt_neox": (transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[cfg.model_type]
    hf_cfg = config_class(**cfg.to_hf_dict())
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_class(hf_cfg).float().eval()
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(0.1 * torch.randn_like(p))
    return model


def hf_pair(cfg, seed=0):
    """transformers' model for cfg (hf_causal_lm, perturbed) and a gozaru Model holding the same weights."""
    import gozaru as gz
    hf = hf_causal_lm(cfg, seed, perturb=True)
    model = gz.Model(cfg, seed=None)
    model.load_state_dict({k: v.detach().numpy() for k, v in hf_params(hf).items()})
    return hf, model


def torch_adamw_run(hf, train, cfg, steps, lr, weight_decay, batch=(2, 12)):
    """``steps`` of torch AdamW (betas 0.9/0.95, eps 1e-6, clipping at 1.0; decay on matrices only) on hf, with
    requires_grad=False off the selection ``train``, on the batches random_batch(cfg, *batch, seed=100 + step);
    returns the losses."""
    import torch
    decay, no_decay = [], []
    for n, p in hf_params(hf).items():
        p.requires_grad_(n in train)
        if n in train:
            (decay if p.ndim == 2 else no_decay).append(p)
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), eps=1e-6)
    losses = []
    for step in range(steps):
        tokens, targets = random_batch(cfg, *batch, seed=100 + step)
        topt.zero_grad()
        _, loss_ref = torch_lm_loss(hf, tokens, targets)
        loss_ref.backward()
        torch.nn.utils.clip_grad_norm_([p for p in hf.parameters() if p.requires_grad], 1.0)
        topt.step()
        losses.append(loss_ref.item())
    return losses


# ---- error model for fp32 comparisons (tests/test_parity_hf.py)
#
# A fixed tolerance fitted to one machine fails on another: the BLAS kernel (Haswell, SkylakeX, ...) and the
# thread count change the summation order, hence the rounding. Instead both fp32 implementations are measured
# against a float64 run of the same computation, and gozaru may be at most K_ERR times as far from it as torch's
# own fp32 result, plus a floor:
#   - K_ERR = 8: two fp32 algorithms of the same kind (blocked dot products of the same lengths) have error
#     bounds of the same order, gamma_n = n u / (1 - n u) with u = 2^-24; what differs is the constant (block
#     sizes, pairwise vs sequential tails, exp/erf approximations within a few ulp). Measured ratios stay below
#     3 (all parity configurations, 1 and 2 threads); 8 leaves room for other kernels without hiding a bug,
#     which shows as an error of 1e-3 or more (orders of magnitude above torch's ~1e-7).
#   - FLOOR_ULPS = 64 units of roundoff (64 u = 3.8e-6 of the tensor's scale): when torch happens to land
#     almost exactly on the float64 value (tiny tensors, short sums) its error says nothing about the error
#     gozaru's order may legitimately have; sqrt(n) u with n <= 4096 accumulated terms is <= 64 u.
U32 = 2.0 ** -24
K_ERR = 8.0
FLOOR_ULPS = 64


def error_model_check(got, torch32, ref64, what, k=K_ERR, floor=FLOOR_ULPS * U32):
    """Asserts rel_err(got, ref64) <= k * rel_err(torch32, ref64) + floor; returns both errors."""
    e_gz, e_t = rel_err(got, ref64), rel_err(torch32, ref64)
    bound = k * e_t + floor
    assert e_gz <= bound, (f"{what}: gozaru fp32 error {e_gz:.3g} vs float64 exceeds {k:g} x torch fp32 error "
                           f"{e_t:.3g} + floor {floor:.3g} = {bound:.3g}")
    return e_gz, e_t


def check_masked_adamw_against_torch(model, hf, train, cfg, steps, lr, weight_decay):
    """``steps`` of gozaru AdamW on ``model`` (trainable = ``train``) next to torch_adamw_run on hf and its float64
    copy: every step's loss and every trained parameter within the error model, every trained tensor moved, every
    frozen tensor bit-identical.

    Trajectory floor, per step: AdamW divides each gradient by its running RMS, so a gradient's relative rounding
    error reappears as an absolute parameter error of about lr x that error, and parameter updates round too.
    Near-zero gradients make the first unbounded, which is why the main bound is K_ERR x torch's own fp32
    trajectory error (it suffers the same amplification); the floor allows 16 u of the tensor's scale per step
    (16 u = sqrt(256) u: a dot product of <= 256 terms), summed over the steps: 10 x 16 u = 9.5e-6."""
    import copy
    import gozaru as gz
    hf64 = copy.deepcopy(hf).double()
    model.train_only(sorted(train))
    before = {n: model.params[n].copy() for n in model.names}
    losses32, losses64 = (torch_adamw_run(h, train, cfg, steps, lr, weight_decay) for h in (hf, hf64))
    opt = gz.AdamW(model, lr=lr, betas=(0.9, 0.95), eps=1e-6, weight_decay=weight_decay)
    for step in range(steps):
        tokens, targets = random_batch(cfg, 2, 12, seed=100 + step)
        model.zero_grad()
        loss = model.loss(tokens, targets)
        error_model_check([loss], [losses32[step]], [losses64[step]], f"loss at step {step}",
                          floor=(step + 1) * 16 * U32)
        model.backward()
        opt.step(max_grad_norm=1.0)
    ref, ref64 = hf_params(hf), hf_params(hf64)
    for n in model.names:
        got = model.params[n]
        if n in train:
            error_model_check(got, ref[n].detach().numpy(), ref64[n].detach().numpy(), f"param {n}",
                              floor=steps * 16 * U32)
            assert not np.array_equal(got, before[n]), f"{n} did not move"
        else:
            assert np.array_equal(got, before[n]), f"frozen {n} changed"


def check_logits_loss_and_every_gradient(model, hf, tokens, targets, names=None, params=hf_params,
                                         floor=FLOOR_ULPS * U32):
    """gozaru's logits, loss and the gradients of ``names`` (None: every tensor, all made trainable) against the
    torch model hf and its float64 copy, each within the error model (error_model_check). ``params`` gives a torch
    model's parameters under gozaru's names: hf_params, or peft_params for a PEFT model."""
    import copy
    hf64 = copy.deepcopy(hf).double()
    logits_ref, loss_ref = torch_lm_loss(hf, tokens, targets)
    loss_ref.backward()
    logits64, loss64 = torch_lm_loss(hf64, tokens, targets)
    loss64.backward()
    error_model_check(model.logits(tokens), logits_ref.detach().numpy(), logits64.detach().numpy(), "logits",
                      floor=floor)
    if names is None:
        names = model.names
        model.train_only(names)
    model.zero_grad()
    loss = model.loss(tokens, targets)
    error_model_check([loss], [loss_ref.item()], [loss64.item()], "loss", floor=floor)
    model.backward()
    grads, grads64 = params(hf), params(hf64)
    for n in names:
        error_model_check(model.grad(n), grads[n].grad.numpy(), grads64[n].grad.numpy(), f"grad {n}", floor=floor)


# ---- LoRA against PEFT (tests/test_lora*.py)
def peft_params(pm):
    """A PEFT model's LoRA parameters under gozaru's names (no adapter name; GPT-NeoX's head is gozaru's
    embed_out)."""
    named = {n.replace(".default.", "."): p for n, p in pm.named_parameters() if "lora_" in n}
    if any(".gpt_neox." in n for n in named):
        named = {n.replace("base_model.model.lm_head.", "base_model.model.embed_out."): p for n, p in named.items()}
    return named


def randomize_b(m, seed=0):
    """B is zero after PEFT's init; a nonzero B makes a forward parity test mean something."""
    rng = np.random.default_rng(seed)
    for n in m.trainable_names():
        if ".lora_B." in n:
            m.params[n][...] = 0.2 * rng.standard_normal(m.params[n].shape)


def peft_pair(cfg, targets=None, layers=None, r=4, alpha=8, rslora=False):
    """gozaru's LoRA model (gz.lora.attach on hf_pair's weights, B randomized) and PEFT's on the same transformers
    model, holding the same adapter values. ``targets``: gozaru's module names (None: every Linear of a layer)."""
    import peft
    import torch
    import gozaru as gz
    hf, base = hf_pair(cfg)
    ours = gz.lora.attach(base, targets, layers, r=r, alpha=alpha, rslora=rslora, seed=3)
    randomize_b(ours)
    modules = ["lm_head" if t == "embed_out" else t for t in targets or gz.lora.default_targets(cfg)]
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, use_rslora=rslora,
                                                 target_modules=modules,
                                                 layers_to_transform=None if layers is None else list(layers)))
    adapters = peft_params(pm)
    assert sorted(adapters) == sorted(ours.trainable_names())  # the same adapted set as PEFT's
    with torch.no_grad():
        for n, p in adapters.items():
            p.copy_(torch.from_numpy(ours.params[n]))
    return ours, pm
