"""The CUDA backend against the CPU backend and transformers, on a GPU.

Runs only where ``gozaru._core.backend_available("cuda")``: a build with GOZARU_CUDA=1 on a machine
with a CUDA device (benchmarks/gpu_check.sh does both). Elsewhere every GPU test is skipped with that
reason, and the one CPU-only test checks that asking for the CUDA backend fails clearly.

Tolerances per precision of the CUDA model (set_precision; the CPU reference runs fp32), as relative errors
max|a - b| / max|b| (see docs/cuda.md for why):
  fp32                    only summation order differs from the CPU: logits 1e-4, loss 1e-5 (relative),
                          gradients and trained weights 1e-3.
  tf32                    10-bit mantissa products: logits 1e-2, loss 2e-3, gradients 3e-2.
  bf16 (CUDA's default)   8-bit mantissa operands: logits 3e-2, loss 5e-3, gradients 8e-2, and every
                          gradient's cosine similarity with the CPU's above 0.995.
After 10 AdamW steps the weights agree to 1e-3 (fp32), 3e-2 (tf32), 1e-1 (bf16): Adam divides by
sqrt(v), so a gradient error on a near-zero gradient becomes a relative error of the update itself.
"""
import glob
import os
import shutil
import site
import subprocess

import numpy as np
import pytest

import gozaru as gz
from gozaru import _core
from reference import NEOX_RESIDUAL_CASES, check_gradient_accumulation, hf_params, random_batch as batch, rel_err

CUDA = _core.backend_available("cuda")
_skip = pytest.mark.skipif(
    not CUDA, reason="no CUDA backend here: needs a GOZARU_CUDA=1 build and a GPU (run benchmarks/gpu_check.sh)")


def needs_cuda(test):
    return pytest.mark.gpu(_skip(test))


# mode -> (logits, loss, gradients / weights)
TOL = {"fp32": (1e-4, 1e-5, 1e-3), "tf32": (1e-2, 2e-3, 3e-2), "bf16": (3e-2, 5e-3, 8e-2)}
WEIGHT_TOL = {"fp32": 1e-3, "tf32": 3e-2, "bf16": 1e-1}
UPDATE_COSINE = {"fp32": 0.9999, "tf32": 0.999, "bf16": 0.98}
MODES = ("fp32", "tf32", "bf16")

# (name, config overrides, batch, seq): both residual modes, partial rotary, head sizes that are not
# multiples of 32, and one sequence long enough that every warp loop runs several times.
CONFIGS = [
    *NEOX_RESIDUAL_CASES,
    ("long_sequence", dict(vocab_size=300, hidden_size=72, num_hidden_layers=2, num_attention_heads=3,
                           intermediate_size=160, rotary_pct=0.5, use_parallel_residual=False), 2, 200),
    # scaled rotary (frequencies and attention factor from gozaru.engine.rope, tables uploaded to the device)
    ("yarn_rotary", dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=96, rotary_pct=1.0, use_parallel_residual=True,
                         rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
     2, 200),
    # the Llama family: RMSNorm, SwiGLU, grouped-query attention (the kv-head repeat and its summed gradient)
    ("llama_gqa2", dict(model_type="llama", vocab_size=97, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, intermediate_size=88), 3, 37),
    ("qwen2_mqa_tied", dict(model_type="qwen2", vocab_size=83, hidden_size=48, num_hidden_layers=2,
                            num_attention_heads=3, num_key_value_heads=1, intermediate_size=64,
                            tie_word_embeddings=True), 2, 70),
]


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    return float(a @ b / max(na * nb, 1e-300))


def make_pair(overrides, precision, seed=0, init_std=None, max_pos=256):
    """A CPU model with non-trivial LayerNorm/bias values and a CUDA model, in `precision`, holding the same
    weights."""
    cfg = gz.GPTNeoXConfig(max_position_embeddings=max_pos, **overrides)
    if init_std is not None:
        cfg = cfg.replace(initializer_range=init_std)
    cpu = gz.Model(cfg, seed=seed, backend="cpu")
    rng = np.random.default_rng(seed + 100)
    for n in cpu.names:
        p = cpu.params[n]
        if p.ndim == 1:
            p += 0.1 * rng.standard_normal(p.shape).astype(np.float32)
    cpu.params_changed()
    cuda = gz.Model(cfg, seed=None, backend="cuda")
    cuda.set_precision(precision)
    cuda.load_state_dict(cpu.state_dict())
    assert cuda.core.precision == precision, "the model does not use the precision under test"
    return cfg, cpu, cuda


def check_grad(name, got, ref, tol, mode):
    assert rel_err(got, ref) < tol, f"{name}: relative error {rel_err(got, ref):.2e} >= {tol:.0e} ({mode})"
    if mode == "bf16":
        assert cosine(got, ref) > 0.995, f"{name}: cosine {cosine(got, ref):.4f} ({mode})"


# --------------------------------------------------------------------------- CPU-only builds
@pytest.mark.skipif(CUDA, reason="the CUDA backend is available here")
def test_cuda_backend_request_fails_clearly_without_it():
    with pytest.raises((RuntimeError, ValueError), match="(?i)cuda"):
        gz.Model(gz.preset("tiny"), seed=0, backend="cuda")


def cublas_include_dir():
    """cublas_v2.h from the CUDA toolkit, or from the nvidia-cublas wheel (the toolkit may lack cuBLAS)."""
    nvcc = shutil.which("nvcc")
    homes = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    if nvcc:
        homes.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    wheels = [os.path.dirname(d) for r in site.getsitepackages() for d in glob.glob(os.path.join(r, "nvidia", "*",
                                                                                                "include"))]
    fetched = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_deps", "cublas", "include")
    includes = [os.path.join(h, "include") for h in homes if h] + [os.path.join(w, "include") for w in wheels]
    for d in includes + [fetched]:
        if os.path.isfile(os.path.join(d, "cublas_v2.h")):
            return d
    return None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    """Every csrc/cuda/*.cu compiles for sm_90 with setup.py's nvcc flags (host code at -O1, for speed)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    inc = cublas_include_dir()
    skipped = []
    for src in sorted(glob.glob(os.path.join(root, "csrc", "cuda", "*.cu"))):
        with open(src) as f:
            if "cublas" in f.read() and inc is None:
                skipped.append(os.path.basename(src))
                continue
        cmd = ["nvcc", "-c", src, "-o", str(tmp_path / (os.path.basename(src) + ".o")), "-O1", "-std=c++17",
               "-Xcompiler", "-fPIC", "-gencode=arch=compute_90,code=sm_90", "-I" + os.path.join(root, "csrc"),
               "-DGOZARU_WITH_CUDA=1", "--expt-relaxed-constexpr"] + (["-I" + inc] if inc else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{os.path.basename(src)}:\n{r.stderr[-3000:]}"
    if skipped:
        pytest.skip(f"compiled all but {', '.join(skipped)}: no cuBLAS headers (toolkit or nvidia-cublas wheel)")


# --------------------------------------------------------------------------- CUDA vs CPU
def assert_matches_cpu(cpu, cuda, tokens, targets, tols, precision):
    """Logits, loss and every gradient of the CUDA model within the mode's tolerances of the CPU model's."""
    tol_logits, tol_loss, tol_grad = tols
    assert rel_err(cuda.logits(tokens), cpu.logits(tokens)) < tol_logits
    for m in (cpu, cuda):
        m.train_all()
        m.zero_grad()
    loss_cpu, n_cpu, _ = cpu.forward(tokens, targets)
    loss_cuda, n_cuda, _ = cuda.forward(tokens, targets)
    assert n_cuda == n_cpu
    assert abs(loss_cuda - loss_cpu) <= tol_loss * abs(loss_cpu)
    cpu.backward()
    cuda.backward()
    for n in cpu.names:
        check_grad(n, cuda.grad(n), cpu.grad(n), tol_grad, precision)


@needs_cuda
@pytest.mark.parametrize("precision", MODES)
@pytest.mark.parametrize("name,overrides,B,T", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_forward_loss_and_every_gradient_match_cpu(precision, name, overrides, B, T):
    tol_logits, tol_loss, tol_grad = TOL[precision]
    cfg, cpu, cuda = make_pair(overrides, precision)
    tokens, targets = batch(cfg, B, T)
    assert_matches_cpu(cpu, cuda, tokens, targets, (tol_logits, tol_loss, tol_grad), precision)


@needs_cuda
def test_cuda_results_are_deterministic():
    """Same inputs, same bits: no atomics in any reduction, fixed cuBLAS configuration."""
    cfg, _, cuda = make_pair(CONFIGS[2][1], "bf16")
    tokens, targets = batch(cfg, 2, 64)
    cuda.train_all()
    runs = []
    for _ in range(2):
        cuda.zero_grad()
        loss, _, _ = cuda.forward(tokens, targets)
        cuda.backward()
        runs.append((loss, {n: cuda.grad(n) for n in cuda.names}))
    assert runs[0][0] == runs[1][0]
    for n in cuda.names:
        np.testing.assert_array_equal(runs[0][1][n], runs[1][1][n], err_msg=n)


@needs_cuda
def test_gradient_accumulation_on_cuda_equals_one_big_batch():
    cfg, _, cuda = make_pair(CONFIGS[0][1], "fp32")
    check_gradient_accumulation(cuda, cfg)


def masked_selection(cfg):
    """The last layer's attention + MLP weights and the head: layer 0 and the embedding stay frozen."""
    last = f"gpt_neox.layers.{cfg.num_hidden_layers - 1}."
    return [n for n in cfg.tensor_shapes() if n.startswith(last) and "layernorm" not in n] + ["embed_out.weight"]


@needs_cuda
@pytest.mark.parametrize("precision", MODES)
def test_ten_masked_adamw_steps_match_cpu(precision):
    tol = TOL[precision][2]
    cfg, cpu, cuda = make_pair(CONFIGS[1][1], precision)
    before = cpu.state_dict()
    chosen = masked_selection(cfg)
    opts = []
    for m in (cpu, cuda):
        m.train_only(chosen)
        # eps 1e-3 keeps the update a smooth function of the gradient: with 1e-8 a gradient element
        # near zero whose sign differs between backends would flip a whole lr-sized step
        opts.append(gz.AdamW(m, lr=1e-3, eps=1e-3, weight_decay=0.1))
    norms = {"cpu": [], "cuda": []}
    for step in range(10):
        tokens, targets = batch(cfg, 2, 13, seed=10 + step)
        for key, m, opt in (("cpu", cpu, opts[0]), ("cuda", cuda, opts[1])):
            m.zero_grad()
            m.loss(tokens, targets)
            m.backward()
            norms[key].append(opt.step(max_grad_norm=0.5))
    np.testing.assert_allclose(norms["cuda"], norms["cpu"], rtol=tol)
    after_cpu, after_cuda = cpu.state_dict(), cuda.state_dict()
    for n in cpu.names:
        if n in chosen:
            assert rel_err(after_cuda[n], after_cpu[n]) < WEIGHT_TOL[precision], n
            assert cosine(after_cuda[n] - before[n], after_cpu[n] - before[n]) > UPDATE_COSINE[precision], n
        else:  # frozen tensors: untouched, bit for bit
            np.testing.assert_array_equal(after_cuda[n], before[n], err_msg=n)
    for n in chosen:
        m_cpu, _, s_cpu = opts[0].state(n)
        m_cuda, _, s_cuda = opts[1].state(n)
        assert s_cuda == s_cpu == 10
        assert rel_err(m_cuda, m_cpu) < 2 * tol, n


@needs_cuda
@pytest.mark.parametrize("precision", MODES)
def test_lora_adapters_on_cuda_match_cpu(precision):
    """LoRA through the same backend ops: logits, adapter gradients, 5 AdamW steps and greedy generation."""
    tol_logits, _, tol_grad = TOL[precision]
    cfg, cpu, cuda = make_pair(CONFIGS[0][1], precision)
    models = [gz.lora.attach(m, targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "embed_out"),
                             r=4, alpha=8, seed=1) for m in (cpu, cuda)]
    rng = np.random.default_rng(0)
    for n in models[0].trainable_names():
        if ".lora_B." in n:
            b = (0.1 * rng.standard_normal(models[0].params[n].shape)).astype(np.float32)
            for m in models:
                with m.edit_params() as params:
                    params[n][...] = b
    tokens, targets = batch(cfg, 2, 13)
    assert rel_err(models[1].logits(tokens), models[0].logits(tokens)) < tol_logits
    opts = [gz.AdamW(m, lr=1e-3, eps=1e-3) for m in models]
    for step in range(5):
        tokens, targets = batch(cfg, 2, 13, seed=step)
        for m, opt in zip(models, opts):
            m.zero_grad()
            m.loss(tokens, targets)
            m.backward()
            if step == 0 and m is models[1]:
                for n in m.trainable_names():
                    check_grad(n, m.grad(n), models[0].grad(n), tol_grad, precision)
            opt.step()
    for n in models[0].names:
        if "lora_" in n:
            assert rel_err(models[1].params[n], models[0].params[n]) < WEIGHT_TOL[precision], n
        else:
            np.testing.assert_array_equal(models[1].params[n], cuda.params[n], err_msg=n)
    if precision == "fp32":
        prompts = [[1, 2, 3], [4, 5]]
        assert models[1].generate(prompts, 5, eos_token_id=-1) == models[0].generate(prompts, 5, eos_token_id=-1)


# --------------------------------------------------------------------------- vs transformers on the GPU
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_matches_transformers_on_the_gpu(precision):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    tol_logits, tol_loss, tol_grad = TOL[precision]
    cfg, _, cuda = make_pair(CONFIGS[1][1], precision)
    hf_cfg = transformers.GPTNeoXConfig(**cfg.to_hf_dict())
    hf_cfg._attn_implementation = "eager"
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference stays fp32
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).float().cuda().eval()
    named = hf_params(hf)
    state = cuda.state_dict()
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(torch.from_numpy(state[n]))
    tokens, targets = batch(cfg, 3, 13)
    tok_t = torch.from_numpy(tokens.astype(np.int64)).cuda()
    logits = hf(tok_t).logits
    loss_ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.from_numpy(targets.astype(np.int64)).cuda().reshape(-1),
                                                 ignore_index=-100)
    loss_ref.backward()
    assert rel_err(cuda.logits(tokens), logits.detach().cpu().numpy()) < tol_logits
    cuda.train_all()
    cuda.zero_grad()
    loss = cuda.loss(tokens, targets)
    assert abs(loss - loss_ref.item()) <= tol_loss * abs(loss_ref.item())
    cuda.backward()
    for n in cuda.names:
        check_grad(n, cuda.grad(n), named[n].grad.cpu().numpy(), tol_grad, precision)


# --------------------------------------------------------------------------- generation
@needs_cuda
@pytest.mark.parametrize("family", ["gpt_neox", "llama_gqa"])
def test_greedy_generation_matches_cpu(family):
    """Same greedy tokens as the CPU backend. A larger init spreads the logits, so a near tie (where
    summation order may legitimately pick the other token) is rare; any difference must be one. The Llama
    model's cache holds its 2 kv heads for 4 query heads."""
    overrides = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, rotary_pct=0.5, use_parallel_residual=False)
    if family == "llama_gqa":
        overrides.update(model_type="llama", rotary_pct=1.0, num_key_value_heads=2)
    cfg, cpu, cuda = make_pair(overrides, "fp32", init_std=0.2)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, cfg.vocab_size, size=n).tolist() for n in (1, 5, 12)]
    out_cpu = cpu.generate(prompts, max_new_tokens=16, eos_token_id=-1)
    out_cuda = cuda.generate(prompts, max_new_tokens=16, eos_token_id=-1)
    for p, a, b in zip(prompts, out_cpu, out_cuda):
        if a == b:
            continue
        i = next(j for j in range(len(a)) if a[j] != b[j])
        lg = cpu.logits(np.array([p + a[:i]], dtype=np.int32))[0, -1]
        top2 = np.sort(lg)[-2:]
        assert top2[1] - top2[0] < 1e-4, f"CUDA picked {b[i]}, CPU {a[i]} at step {i} with a margin {top2[1]-top2[0]}"


def test_each_backend_reports_the_precisions_it_runs():
    """The one vocabulary (csrc/precision.h) and each built backend's share of it; a CPU model starts in fp32 and
    refuses tf32, naming what it runs."""
    info = gz.build_info()
    assert set(info["backend_precisions"]) == set(info["backends_built"])
    for names in info["backend_precisions"].values():
        assert set(names) <= set(_core.PRECISIONS) and "fp32" in names
    if "cuda" in info["backend_precisions"]:
        assert info["backend_precisions"]["cuda"] == ["fp32", "bf16", "tf32"]
    model = gz.Model(gz.GPTNeoXConfig(**CONFIGS[0][1]), seed=0)
    assert model.core.precision == "fp32"
    with pytest.raises(gz.engine.PrecisionError, match="not supported by the cpu backend: it runs 'fp32', 'bf16'"):
        model.set_precision("tf32")
    assert model.core.precision == "fp32"


@needs_cuda
def test_precision_is_set_per_model_and_switches_in_place():
    """CUDA starts in bf16; each precision is the one used (fp32 matches the CPU tightly, bf16 does not), a model
    switches back and forth without going stale, another model is not affected, and bf16-emulated (a CPU stand-in)
    is refused naming the precisions CUDA runs."""
    cfg = gz.GPTNeoXConfig(max_position_embeddings=64, **CONFIGS[0][1])
    tokens, _ = batch(cfg, 1, 5)
    ref = gz.Model(cfg, seed=0, backend="cpu").logits(tokens)
    m, other = gz.Model(cfg, seed=0, backend="cuda"), gz.Model(cfg, seed=0, backend="cuda")
    assert m.core.precision == "bf16"
    bf16 = m.logits(tokens)
    assert rel_err(bf16, ref) > TOL["fp32"][0]
    for name in MODES:
        m.set_precision(name)
        assert m.core.precision == name and other.core.precision == "bf16"
        assert rel_err(m.logits(tokens), ref) < TOL[name][0], name
    m.set_precision("fp32")
    assert rel_err(m.logits(tokens), ref) < TOL["fp32"][0]
    m.set_precision("bf16")
    np.testing.assert_array_equal(m.logits(tokens), bf16)  # fresh bf16 weight copies, same bits
    with pytest.raises(gz.engine.PrecisionError, match="not supported by the cuda backend: it runs 'fp32', 'bf16', "
                                                       "'tf32'"):
        m.set_precision("bf16-emulated")
    assert m.core.precision == "bf16"


# N = 2 x 560 = 1120 tokens (past every 1024-sized launch bound), vocabularies over 600 (several
# cross-entropy blocks per row), head sizes 40 and 80 (not multiples of 32 or 64).
LARGE_CONFIGS = [
    ("head_size_40", dict(vocab_size=640, hidden_size=80, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=200, rotary_pct=0.25, use_parallel_residual=True)),
    ("head_size_80", dict(vocab_size=611, hidden_size=160, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=320, rotary_pct=0.5, use_parallel_residual=False)),
]


@needs_cuda
@pytest.mark.parametrize("name,overrides", LARGE_CONFIGS, ids=[c[0] for c in LARGE_CONFIGS])
def test_fp32_matches_cpu_at_1120_tokens(name, overrides):
    tol_logits, tol_loss, tol_grad = TOL["fp32"]
    cfg, cpu, cuda = make_pair(overrides, "fp32", max_pos=600)
    tokens, targets = batch(cfg, 2, 560)
    assert tokens.size >= 1100 and cfg.vocab_size >= 600
    assert_matches_cpu(cpu, cuda, tokens, targets, (tol_logits, tol_loss, tol_grad), "fp32")


@needs_cuda
@needs_cuda
def test_flash_attention_matches_cpu_at_2048_tokens_head_size_128():
    """The online-softmax kernels at the lab's longest sequences and rinna's head size: 64 key tiles of 32
    per late query row, the running max moving between them, dk/dv summed over 2048 queries."""
    tol_logits, tol_loss, tol_grad = TOL["fp32"]
    cfg, cpu, cuda = make_pair(dict(vocab_size=97, hidden_size=256, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, rotary_pct=0.25, use_parallel_residual=True), "fp32",
                               max_pos=2048)
    tokens, targets = batch(cfg, 1, 2048)
    assert_matches_cpu(cpu, cuda, tokens, targets, (tol_logits, tol_loss, tol_grad), "fp32")


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["long_sequence", "llama_gqa2"])
def test_packed_rows_match_cpu(name, precision):
    """doc_ids on the device: the forward and dq loops start at each query's document, the dk/dv loop ends at each
    key's (documents of 1 to 100 tokens, across the 32-key warp steps); logits, loss and every gradient as the
    CPU's packed rows (tests/test_packing.py checks those against the examples alone)."""
    tol_logits, tol_loss, tol_grad = TOL[precision]
    overrides = dict(next(c[1] for c in CONFIGS if c[0] == name))
    cfg, cpu, cuda = make_pair(overrides, precision)
    tokens, targets = batch(cfg, 2, 200)
    lengths = [[1, 40, 33, 100, 26], [64, 64, 31, 41]]
    doc_ids = np.array([np.repeat(np.arange(len(r)), r) for r in lengths], np.int32)
    logits = [m.forward(tokens, return_logits=True, keep_activations=False, doc_ids=doc_ids)[2] for m in (cpu, cuda)]
    assert rel_err(logits[1], logits[0]) < tol_logits
    for m in (cpu, cuda):
        m.train_all()
        m.zero_grad()
    loss_cpu, loss_cuda = (m.loss(tokens, targets, doc_ids=doc_ids) for m in (cpu, cuda))
    assert abs(loss_cuda - loss_cpu) <= tol_loss * abs(loss_cpu)
    cpu.backward()
    cuda.backward()
    for n in cpu.names:
        check_grad(n, cuda.grad(n), cpu.grad(n), tol_grad, precision)


@needs_cuda
def test_host_copy_is_refreshed_when_read_after_device_steps():
    """AdamW steps leave the host mirror stale; reading params (views, state_dict) refreshes it, and
    params_changed() refuses to upload a stale mirror through an old view."""
    cfg, cpu, cuda = make_pair(CONFIGS[0][1], "fp32")
    tokens, targets = batch(cfg, 2, 7)
    name = cuda.names[1]
    old_view = cuda.core.param(name)
    before = old_view.copy()
    cuda.train_all()
    opt = gz.AdamW(cuda, lr=1e-2)
    cuda.forward(tokens, targets)
    cuda.backward()
    opt.step()
    assert np.array_equal(old_view, before)  # stale until read
    with pytest.raises(RuntimeError, match="sync_to_host"):
        cuda.core.params_changed()
    fresh = cuda.params[name]  # reading refreshes
    assert not np.array_equal(fresh, before)
    assert np.array_equal(old_view, fresh)  # one host buffer
    cuda.params_changed()  # no longer stale: allowed




@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_device_views_are_read_only_and_edit_params_uploads(precision):
    """A write into a device model's views would never reach the device: they are read-only, and edit_params
    uploads (and re-rounds bf16 copies) when its block ends; a model made from it keeps its placement."""
    cfg, cpu, cuda = make_pair(CONFIGS[0][1], precision)
    tokens, _ = batch(cfg, 2, 7)
    cuda.logits(tokens)   # low-precision copies made
    with pytest.raises(ValueError, match="read-only"):
        cuda.params["embed_out.weight"][...] = 0.0
    for m in (cpu, cuda):
        with m.edit_params() as params:
            params["embed_out.weight"][...] *= 0.5
    assert rel_err(cuda.logits(tokens), cpu.logits(tokens)) < TOL[precision][0]
    adapted = gz.lora.attach(cuda, r=2)
    assert (adapted.backend, adapted.precision) == ("cuda", precision)
    assert gz.lora.merge(adapted).placement == cuda.placement
