"""gozaru (CUDA backend) vs transformers GPTNeoXForCausalLM on one GPU, same run, side by side.

    python benchmarks/bench_gpu.py                  # rinna-3.6b shape, seq 512, random weights
    python benchmarks/bench_gpu.py --small          # a small shape: a quick smoke run (seconds)
    python benchmarks/bench_gpu.py --cpu-dry-run    # the plumbing on a CPU machine (tiny shape, no GPU)

Four cases: {gozaru, transformers} x {full fine-tuning, "last10" = the last layers holding ~10 % of the
weights + the head (gozaru.layers.select(cfg, "last", budget=0.10))}. Each case runs in its own
subprocess, so peak memory is its own and an out-of-memory retries with a smaller micro-batch. Every
optimizer step sees the same global batch (--global-batch sequences of --seq tokens) through gradient
accumulation; loss is next-token cross-entropy; the gradient is clipped to norm 1.0.

transformers: bf16 weights (--hf-precision bf16, the default) or fp32 weights under bf16 autocast
(--hf-precision amp), SDPA attention, torch.optim.AdamW(fused=True).
gozaru: fp32 master weights, gradients and AdamW moments; GEMMs in --precision (bf16, CUDA's default).

Reported per case: tokens/s, step time, peak GPU memory, MFU = 6 * N * tokens/s / 989e12 (N = all
parameters, the same formula for last10, where the real FLOPs are lower). JSON to --out, and a table.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

H100_BF16_DENSE_FLOPS = 989e12
SMALL = dict(vocab_size=32000, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
             intermediate_size=2048)
TINY = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def gz_precisions():
    from gozaru import _core
    return _core.PRECISIONS


def config_for(args):
    import gozaru as gz
    if args.cpu_dry_run:
        return gz.preset("rinna-3.6b", **TINY)
    if args.small:
        return gz.preset("rinna-3.6b", **SMALL)
    return gz.preset("rinna-3.6b")


def chosen_names(cfg, mode):
    from gozaru import layers
    if mode == "full":
        return sorted(cfg.tensor_shapes())
    return sorted(layers.select(cfg, "last", budget=0.10, train_head=True))


def batches(cfg, args, micro):
    """Deterministic random token batches [micro, seq] and next-token targets."""
    import numpy as np
    rng = np.random.default_rng(0)
    tok = rng.integers(0, cfg.vocab_size, size=(args.global_batch, args.seq + 1), dtype=np.int32)
    x, y = tok[:, :-1].copy(), tok[:, 1:].copy()
    return [(x[i:i + micro], y[i:i + micro]) for i in range(0, args.global_batch, micro)]


# --------------------------------------------------------------------------- gozaru worker
def run_gozaru(args, mode, micro):
    import gozaru as gz
    cfg = config_for(args)
    backend = "cpu" if args.cpu_dry_run else "cuda"
    torch = None
    if not args.cpu_dry_run:
        import torch  # only to draw the random init on the GPU and to read device memory
        torch.cuda.init()
        free0, total = torch.cuda.mem_get_info()
    m = gz.Model(cfg, seed=None, backend=backend)
    if not args.cpu_dry_run:
        m.set_precision(args.precision)
    t0 = time.perf_counter()
    init_random(m, cfg, torch)
    init_s = time.perf_counter() - t0
    names = chosen_names(cfg, mode)
    m.train_only(names)
    opt = gz.AdamW(m, lr=1e-5, weight_decay=0.0)
    data = batches(cfg, args, micro)
    peak = 0

    def step():
        nonlocal peak
        m.zero_grad()
        loss = 0.0
        for x, y in data:
            loss += m.loss(x, y) / len(data)
            m.backward(scale=1.0 / len(data))
        opt.step(max_grad_norm=1.0)  # returns a host float: the step has finished on the device
        if torch is not None:
            free, _ = torch.cuda.mem_get_info()
            peak = max(peak, free0 - free)
        return loss

    return timed(step, args, init_s, cfg, names, micro, len(data), lambda: peak,
                 extra=dict(precision=m.precision, memory_kind="device used"))


def init_random(m, cfg, torch):
    """HF-style init (N(0, 0.02) matrices, LayerNorm 1/0, biases 0) drawn on the GPU when there is one:
    the core's own init is a single-threaded host loop, minutes at 3.6B."""
    import numpy as np
    gen = None if torch is None else torch.Generator(device="cuda").manual_seed(0)
    rng = np.random.default_rng(0)
    for n in m.names:
        p = m.params[n]
        if p.ndim == 1:
            p[...] = 1.0 if n.endswith("layernorm.weight") or n.endswith("layer_norm.weight") else 0.0
        elif torch is None:
            p[...] = rng.standard_normal(p.shape, dtype=np.float32) * cfg.initializer_range
        else:
            t = torch.empty(p.shape, device="cuda", dtype=torch.float32).normal_(0.0, cfg.initializer_range,
                                                                                 generator=gen)
            p[...] = t.cpu().numpy()
            del t
    if torch is not None:
        torch.cuda.empty_cache()
    m.params_changed()


# --------------------------------------------------------------------------- transformers worker
def run_hf(args, mode, micro):
    import torch
    import transformers
    cfg = config_for(args)
    device = "cpu" if args.cpu_dry_run else "cuda"
    hf_cfg = transformers.GPTNeoXConfig(**cfg.to_hf_dict())
    hf_cfg._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if args.hf_precision == "bf16" else torch.float32
    t0 = time.perf_counter()
    with torch.device(device):
        model = transformers.GPTNeoXForCausalLM(hf_cfg).to(dtype)
    model.train()
    init_s = time.perf_counter() - t0
    names = set(chosen_names(cfg, mode))
    params = []
    for n, p in model.named_parameters():
        gz_name = "embed_out.weight" if n == "lm_head.weight" else n
        p.requires_grad_(gz_name in names)
        if p.requires_grad:
            params.append(p)
    fused = device == "cuda"
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=fused)
    data = [(torch.from_numpy(x).long().to(device), torch.from_numpy(y).long().to(device))
            for x, y in batches(cfg, args, micro)]
    autocast = args.hf_precision == "amp"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for x, y in data:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            (loss / len(data)).backward()
            total += loss.detach() / len(data)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(total)  # a host float: the step has finished on the device

    def peak():
        return torch.cuda.max_memory_reserved() if device == "cuda" else 0

    res = timed(step, args, init_s, cfg, names, micro, len(data), peak,
                extra=dict(hf_precision=args.hf_precision, attention="sdpa", memory_kind="torch reserved"))
    res["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated()) if device == "cuda" else 0
    return res


# --------------------------------------------------------------------------- timing and the parent
def timed(step, args, init_s, cfg, names, micro, accum, peak, extra):
    from gozaru import layers
    losses = [step() for _ in range(args.warmup)]
    t0 = time.perf_counter()
    for _ in range(args.steps):
        losses.append(step())
    dt = (time.perf_counter() - t0) / args.steps
    tokens = args.global_batch * args.seq
    tps = tokens / dt
    n_params = cfg.num_params()
    return dict(tokens_per_s=tps, step_s=dt, peak_bytes=int(peak()), mfu=6 * n_params * tps / H100_BF16_DENSE_FLOPS,
                micro_batch=micro, accumulation=accum, init_s=init_s, losses=[float(x) for x in losses],
                trainable_share=layers.share(cfg, names), params=n_params, **extra)


MICRO = {("gozaru", "full"): (4, 2, 1), ("gozaru", "last10"): (8, 4, 2, 1),
         ("hf", "full"): (8, 4, 2, 1), ("hf", "last10"): (8, 4, 2, 1)}


def worker_main(args):
    fn = run_gozaru if args.worker == "gozaru" else run_hf
    try:
        res = fn(args, args.mode, args.micro)
    except MemoryError as e:
        res = dict(error="oom", message=str(e))
    except Exception as e:  # torch.OutOfMemoryError, RuntimeError from the core, ...
        oom = "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"
        res = dict(error="oom" if oom else "failed", message=f"{type(e).__name__}: {e}")
    gc.collect()
    print("RESULT " + json.dumps(res), flush=True)


def run_case(args, who, mode):
    """Runs one case, starting at the largest micro-batch that divides the global batch; after an
    out-of-memory or a timeout it retries with half that micro-batch (down to 1). Every attempt is
    recorded in the result's "attempts"; a timeout never stops the remaining cases."""
    micro = next((m for m in MICRO[(who, mode)] if args.global_batch % m == 0), 1)
    attempts = []
    while True:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", who, "--mode", mode, "--micro", str(micro)]
        cmd += passthrough(args)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.case_timeout)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                res = dict(error="failed", message=(proc.stderr or proc.stdout)[-2000:])
            else:
                res = json.loads(line[len("RESULT "):])
        except subprocess.TimeoutExpired as e:
            out = e.stderr or e.stdout or b""
            out = out.decode(errors="replace") if isinstance(out, bytes) else out
            res = dict(error="timeout", message=f"no result within --case-timeout {args.case_timeout:g} s"
                       + (": " + out[-1000:] if out else ""))
        res["wall_s"] = time.perf_counter() - t0
        res.setdefault("micro_batch", micro)
        attempts.append(dict(micro_batch=micro, error=res.get("error"), wall_s=res["wall_s"]))
        print(f"  {who:7s} {mode:7s} micro {micro}: "
              + (f"{res['tokens_per_s']:,.0f} tok/s" if "error" not in res else res["error"]), flush=True)
        if res.get("error") not in ("oom", "timeout") or micro == 1:
            res["attempts"] = attempts
            return res
        micro = max(1, micro // 2)
        while args.global_batch % micro:
            micro -= 1


def write_report(path, report):
    """Atomic: a reader (or a killed run) sees the previous complete file or the new one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def passthrough(args):
    out = ["--seq", str(args.seq), "--global-batch", str(args.global_batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--hf-precision", args.hf_precision, "--precision", args.precision]
    if args.small:
        out.append("--small")
    if args.cpu_dry_run:
        out.append("--cpu-dry-run")
    return out


def device_info(args):
    info = dict(python=sys.version.split()[0])
    try:
        import torch
        import transformers
        info.update(torch=torch.__version__, transformers=transformers.__version__)
        if not args.cpu_dry_run and torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["device_memory"] = torch.cuda.get_device_properties(0).total_memory
    except ImportError:
        pass
    return info


def table(results):
    rows = [("case", "tok/s", "step s", "peak GiB", "MFU", "micro x acc", "trainable")]
    for key, r in results.items():
        if "error" in r:
            rows.append((key, r["error"], "", "", "", "", ""))
            continue
        rows.append((key, f"{r['tokens_per_s']:,.0f}", f"{r['step_s']:.3f}", f"{r['peak_bytes'] / 2**30:.1f}",
                     f"{100 * r['mfu']:.1f} %", f"{r['micro_batch']} x {r['accumulation']}",
                     f"{100 * r['trainable_share']:.1f} %"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def ratios(results):
    def tps(k):
        r = results.get(k, {})
        return r.get("tokens_per_s")
    out = {}
    if tps("gozaru/full") and tps("hf/full"):
        out["full_vs_transformers"] = tps("gozaru/full") / tps("hf/full")
    if tps("gozaru/last10") and tps("hf/last10"):
        out["last10_vs_transformers"] = tps("gozaru/last10") / tps("hf/last10")
    if tps("gozaru/last10") and tps("gozaru/full"):
        out["last10_vs_own_full"] = tps("gozaru/last10") / tps("gozaru/full")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="small shape for a quick smoke run")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny shape on the CPU: checks the script only")
    ap.add_argument("--seq", type=int, default=None, help="sequence length (default 512; 128 with --small)")
    ap.add_argument("--global-batch", type=int, default=8, help="sequences per optimizer step")
    ap.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    ap.add_argument("--hf-precision", choices=("bf16", "amp"), default="bf16")
    ap.add_argument("--precision", choices=gz_precisions(), default="bf16",
                    help="gozaru's GEMM precision on CUDA (csrc/precision.h)")
    ap.add_argument("--only", default="gozaru/full,gozaru/last10,hf/full,hf/last10",
                    help="comma-separated cases to run")
    ap.add_argument("--case-timeout", type=float, default=900.0, help="seconds per case subprocess")
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--worker", choices=("gozaru", "hf"), help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("full", "last10"), help=argparse.SUPPRESS)
    ap.add_argument("--micro", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.seq is None:
        args.seq = 32 if args.cpu_dry_run else 128 if args.small else 512
    if args.worker:
        return worker_main(args)

    cfg = config_for(args)
    print(f"shape: {cfg.num_params():,} params, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"seq {args.seq}, {args.global_batch} sequences per step", flush=True)
    results = {}

    def report():
        return dict(config=cfg.to_dict(), seq=args.seq, global_batch=args.global_batch, steps=args.steps,
                    warmup=args.warmup, small=args.small, cpu_dry_run=args.cpu_dry_run, info=info,
                    results=results, ratios=ratios(results))

    info = {}
    try:
        info = device_info(args)
    except Exception as e:  # noqa: BLE001 — the cases still run and the JSON still says what failed
        info = dict(error=f"{type(e).__name__}: {e}")
    try:
        for case in [c.strip() for c in args.only.split(",") if c.strip()]:
            who, mode = case.split("/")
            try:
                results[case] = run_case(args, who, mode)
            except Exception as e:  # noqa: BLE001 — recorded; the remaining cases still run
                results[case] = dict(error="failed", message=f"{type(e).__name__}: {e}")
            if args.out:
                write_report(args.out, report())  # after every case: a stage killed later keeps these
    finally:
        if args.out:
            write_report(args.out, report())
            print(f"wrote {args.out}")
    print()
    print(f"device: {info.get('device', 'cpu')}")
    print(table(results))
    for k, v in ratios(results).items():
        print(f"{k}: {v:.2f}x")
    return 0 if results and all("error" not in r for r in results.values()) else 1

if __name__ == "__main__":
    sys.exit(main())
