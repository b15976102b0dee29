"""What the CPU benchmarks record beside their numbers: the machine (gozaru.build_info()), the SGEMM ceiling of
the BLAS gozaru links (measured in the same run, same threads) and the FLOP count of what was timed.

FLOP model (multiply-add = 2 FLOPs; embedding lookups, LayerNorm, GELU, softmax and AdamW are not counted):
  P = matmul parameters = layers x (Linear weights of a layer) + C V   (head; not the embedding lookup):
      GPT-NeoX 4 C^2 + 2 C I (QKV, dense, MLP in/out); Llama 2 C^2 + 2 C Ckv + 3 C I (q, o, k, v, gate/up/down)
  forward  = 2 P N + attention,  attention = layers x 2 B T^2 C   (causal: QK^T and PV over the lower
             triangle, 2 x B x T^2/2 x C multiply-adds each)
  full fine-tuning step  = 3 x forward                 (backward: gradient of inputs and of weights, 2 x forward)
  last layer + head step = forward + 2 x (2 P_t N + attention of one layer)   (P_t: last layer + head)
  greedy decoding        = 2 P + layers x 4 C ctx per new token (ctx = tokens in the KV cache)
The step formulas are the standard 6 x params x tokens estimate plus attention; "share of ceiling" is achieved
FLOP/s over the SGEMM rate at n=2048, i.e. how far the whole step runs from the BLAS peak on this machine.
"""
import ctypes
import time

import numpy as np


# OpenBLAS kernels below AVX-512 (what an AVX2-only CPU gets). Under one of them, torch is held to the same
# instruction level (ATen's kernels, MKL, oneDNN), so the side-by-side run stands for that machine rather than
# pitting OpenBLAS's AVX2 GEMMs against torch's AVX-512 ones on the same CPU.
_BELOW_AVX512 = {"haswell": "avx2", "zen": "avx2", "sandybridge": "avx", "nehalem": "default", "prescott": "default",
                 "core2": "default", "penryn": "default", "dunnington": "default", "atom": "default"}
_MKL = {"avx2": "AVX2", "avx": "AVX", "default": "SSE4_2"}
_ONEDNN = {"avx2": "AVX2", "avx": "AVX", "default": "SSE41"}


def torch_env(env):
    """``env`` for a torch worker: the same instruction level as gozaru's BLAS kernel (OPENBLAS_CORETYPE, never
    set here) when that kernel is below AVX-512; unchanged otherwise. Returns (env, the level or None)."""
    level = _BELOW_AVX512.get(env.get("OPENBLAS_CORETYPE", "").lower())
    if level is None:
        return env, None
    return dict(env, ATEN_CPU_CAPABILITY=level, MKL_ENABLE_INSTRUCTIONS=_MKL[level],
                ONEDNN_MAX_CPU_ISA=_ONEDNN[level]), level


def torch_isa_line(env):
    """One line for the printout: the instruction level the torch workers were held to."""
    _, level = torch_env(env)
    if level is None:
        return "torch: its own instruction choice (no lower OpenBLAS kernel forced)"
    return (f"torch held to {level} (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA) to match "
            f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}; gozaru's own loops still take the clone CPUID picks")


def build_info():
    import gozaru
    return gozaru.build_info()


def print_build_info(info):
    from gozaru.engine.system import format_build_info
    print(format_build_info(info))


def sgemm_gflops(n=2048, repeats=3, clock="wall"):
    """GFLOP/s of one n x n x n SGEMM through the BLAS gozaru links, at gozaru's current thread count (best of
    `repeats`, after one warm-up call), timed by `clock` (CLOCKS) like the steps it is compared with."""
    timer = CLOCKS[clock]
    info = build_info()
    lib = ctypes.CDLL(info["blas_library"])  # the already loaded library: same instance, same thread setting
    name = ("scipy_" if info["blas"] == "scipy-openblas32" else "") + "cblas_sgemm"
    sgemm = getattr(lib, name)
    f, i, p = ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    c = np.zeros((n, n), np.float32)
    row_major, no_trans = 101, 111
    best = float("inf")
    for k in range(repeats + 1):
        t0 = timer()
        sgemm(row_major, no_trans, no_trans, n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0, c.ctypes.data, n)
        if k:  # the first call pays for page faults and thread start-up
            best = min(best, timer() - t0)
    return 2.0 * n ** 3 / best / 1e9


def matmul_params(cfg, layers=None):
    """Linear weights of `layers` layers (all by default) plus the head, from the core's tensor table."""
    per_layer = sum(t.numel for t in cfg.tensors() if t.layer == 0 and t.is_matrix_weight)
    return (cfg.num_hidden_layers if layers is None else layers) * per_layer + cfg.hidden_size * cfg.vocab_size


def attention_flops(cfg, B, T, layers=None):
    return (cfg.num_hidden_layers if layers is None else layers) * 2 * B * T * T * cfg.hidden_size


def train_step_flops(cfg, B, T, mode):
    N = B * T
    forward = 2 * matmul_params(cfg) * N + attention_flops(cfg, B, T)
    if mode == "full":
        return 3 * forward
    trained = 2 * matmul_params(cfg, layers=1) * N + attention_flops(cfg, B, T, layers=1)
    return forward + 2 * trained


def ceiling_bound(other_share):
    """The largest speed ratio over an engine that runs at `other_share` of the SGEMM ceiling: what gozaru would
    reach if its whole step ran at the ceiling (every FLOP at the n = 2048 SGEMM rate, nothing else costing
    time). A ratio target above it cannot be met with that BLAS kernel on that machine; one below it needs the
    step at target / bound of the ceiling."""
    return 1.0 / other_share


def decode_flops_per_token(cfg, ctx):
    return 2 * matmul_params(cfg) + cfg.num_hidden_layers * 4 * cfg.hidden_size * ctx


def bf16_skip_reason(info):
    """Why precision="bf16" cannot be timed here ("" when it can)."""
    if not info["bf16"]["built"]:
        return "gozaru built without a bf16 GEMM library (pip install mkl-devel, rebuild)"
    if not info["bf16"]["usable"]:
        return "this CPU has neither AVX512-BF16 nor AMX-BF16"
    return ""


def torch_bf16_skip_reason(info):
    f = info["cpu_features"]
    return "" if f["avx512_bf16"] or f["amx_bf16"] else "this CPU has neither AVX512-BF16 nor AMX-BF16"


def bf16_gemm_gflops(n=2048, repeats=3):
    """GFLOP/s of one n x n x n bf16 x bf16 -> fp32 GEMM through the library gozaru's precision="bf16" uses (MKL's
    cblas_gemm_bf16bf16f32), or None when gozaru was built without it. Measured wherever it is built: on CPUs
    without bf16 instructions MKL converts to fp32 inside, which this number then shows."""
    if not build_info()["bf16"]["built"]:
        return None
    lib = ctypes.CDLL("libmkl_rt.so.3")  # already loaded by gozaru._core: found by its soname
    gemm = lib.cblas_gemm_bf16bf16f32
    f, i, p = ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    gemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    rng = np.random.default_rng(0)
    # bf16 bits: the upper halves of fp32 values (truncation is fine for timing)
    a, b = ((rng.standard_normal((n, n), np.float32).view(np.uint32) >> 16).astype(np.uint16) for _ in range(2))
    c = np.zeros((n, n), np.float32)
    best = float("inf")
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        gemm(101, 111, 111, n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0, c.ctypes.data, n)
        if k:
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# The clock steps are timed with: wall time, or (GZ_BENCH_CLOCK=cpu) the process's CPU time, which a machine
# shared with other jobs inflates far less at one thread (time spent descheduled is not counted).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed_steps(step, steps, warmup):
    """Seconds of each timed call of ``step(i)``, after ``warmup`` untimed calls (clock: GZ_BENCH_CLOCK)."""
    import os
    clock = CLOCKS[os.environ.get("GZ_BENCH_CLOCK", "wall")]
    for i in range(warmup):
        step(i)
    times = []
    for i in range(steps):
        t0 = clock()
        step(i)
        times.append(clock() - t0)
    return times


def lm_batch(vocab_size, B, T, step, prompt_share=0.0):
    """Seeded random tokens [B, T] and their next-token targets (the benchmarks' training data). prompt_share:
    the first share of each row's targets is ignored (-100), as an SFT batch ignores its prompts."""
    rng = np.random.default_rng(step)
    tok = rng.integers(0, vocab_size, size=(B, T), dtype=np.int32)
    tgt = np.roll(tok, -1, axis=1)
    tgt[:, :int(prompt_share * T)] = -100
    return tok, tgt


def time_gozaru_training(model, optimizer, B, T, steps, warmup):
    """Seconds of each timed gozaru training step (zero_grad, loss, backward, clipped AdamW step)."""
    def step(i):
        tok, tgt = lm_batch(model.config.vocab_size, B, T, i)
        model.zero_grad()
        model.loss(tok, tgt)
        model.backward()
        optimizer.step(max_grad_norm=1.0)

    return timed_steps(step, steps, warmup)
