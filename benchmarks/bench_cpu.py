"""Training-step throughput on the CPU: gozaru vs torch + transformers, side by side in one run.

Shape: the `tiny` preset (GPT-NeoX: hidden 256, 8 layers, 4 heads, intermediate 1024, vocab 8000), batch 8, seq 128;
--preset llama-tiny times the Llama-shaped model of about the same size (hidden 256, 8 layers, 4 heads with 2 kv
heads, SwiGLU intermediate 688, vocab 8000: 9.9 M parameters against tiny's 10.4 M) against LlamaForCausalLM.
Each measurement runs in its own subprocess (same thread count) so peak RSS is per engine.
Every step is timed alone and tokens/s comes from the median step, so a burst of load from other processes
moves the figure less than a mean would; --repeats N runs the engines N times, interleaved, and keeps each
engine's best median (the same treatment for both).
The JSON and the printout carry gozaru.build_info() (CPU, BLAS kernel, threads) and the SGEMM ceiling at
n=2048 measured in the same run with the same threads; each row's achieved FLOP/s is given as a share of it
(FLOP model: benchmarks/machine.py), and each ratio over torch with its bound: the ratio gozaru would reach with
its whole step at the ceiling (1 / torch's share), above which no target can be met with this BLAS kernel.
Precision rows: gozaru with precision="bf16" and torch under autocast(cpu, bfloat16) are timed where the CPU has
AVX512-BF16 or AMX-BF16 (and gozaru was built with MKL) and skipped with a printed reason elsewhere; gozaru's
"bf16-emulated" (same rounding, fp32 SGEMM) is always timed, so its cost over fp32 is on record. The bf16 GEMM
ceiling at n=2048 (MKL, when built) is printed next to the SGEMM one.
--clock cpu times each step by the process's CPU time instead of the wall clock (meaningful with --threads 1):
on a machine shared with other jobs, time spent waiting for a core is then not counted.
Usage: python benchmarks/bench_cpu.py [--preset tiny|llama-tiny] [--engines gozaru,torch] [--threads N] [--steps N]
                                     [--repeats N] [--clock wall|cpu] [--out benchmarks/results/cpu.json]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

import machine

B, T = 8, 128
MODES = ("full", "last_layer_head")
# engine row -> (engine, precision): gozaru's precision name, or torch autocast to bfloat16 (True) or not
ENGINES = {"gozaru": ("gozaru", "fp32"), "gozaru-bf16": ("gozaru", "bf16"),
           "gozaru-bf16-emulated": ("gozaru", "bf16-emulated"), "torch": ("torch", False),
           "torch-bf16-autocast": ("torch", True)}


def trainable(cfg, mode):
    """Tensor names (HF's) trained in ``mode``: every one, or the last layer + the head."""
    from gozaru import layers
    return sorted(layers.select(cfg, "full" if mode == "full" else "last", layers=None if mode == "full" else 1))


def run_gozaru(mode, steps, warmup, precision="fp32", preset="tiny"):
    import gozaru as gz
    cfg = gz.preset(preset)
    m = gz.Model(cfg, seed=0, precision=precision)
    m.train_only(trainable(cfg, mode))
    opt = gz.AdamW(m, lr=1e-4, weight_decay=0.01)

    return machine.time_gozaru_training(m, opt, B, T, steps, warmup)


def torch_model(cfg, mode):
    """transformers' model of the config's family (SDPA attention) for a gozaru config, only `mode`'s tensors
    trainable; with the torch AdamW over them."""
    import torch
    import transformers
    hf_dict = cfg.to_hf_dict()
    hf_cfg = transformers.AutoConfig.for_model(hf_dict.pop("model_type"), **hf_dict)
    hf_cfg._attn_implementation = "sdpa"
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg).train()
    train = set(trainable(cfg, mode))
    for n, p in model.named_parameters():  # transformers >= 5 calls GPT-NeoX's embed_out lm_head
        p.requires_grad_((n if n != "lm_head.weight" or cfg.is_llama_family else "embed_out.weight") in train)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)


def run_torch(mode, steps, warmup, autocast=False, preset="tiny"):
    import torch
    import gozaru as gz
    cfg = gz.preset(preset)
    model, opt = torch_model(cfg, mode)

    def step(i):
        tok, tgt = machine.lm_batch(cfg.vocab_size, B, T, i)
        opt.zero_grad()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(torch.from_numpy(tok.astype("int64"))).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size).float(),
                                                 torch.from_numpy(tgt.astype("int64")).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()

    return machine.timed_steps(step, steps, warmup)


def worker(row, mode, steps, warmup, threads, preset):
    engine, precision = ENGINES[row]
    if engine == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        import gozaru as gz
        gz.set_num_threads(threads)
    times = (run_torch if engine == "torch" else run_gozaru)(mode, steps, warmup, precision, preset)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": row, "mode": mode, "steps": steps, "seconds": sum(times),
                      "step_seconds": times, "tokens_per_s": B * T / statistics.median(times),
                      "tokens_per_s_mean": steps * B * T / sum(times), "peak_rss_mb": rss_mb}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--preset", default="tiny", help="model shape: tiny (GPT-NeoX) or llama-tiny")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated rows to time (default: all)")
    ap.add_argument("--clock", choices=machine.CLOCKS, default="wall",
                    help="time steps by wall clock or by the process's CPU time (with --threads 1 on a shared machine)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs per engine; the best median is kept")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu.json"))
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker, args.steps, args.warmup, args.threads, args.preset)

    import gozaru as gz
    gz.set_num_threads(args.threads)
    info = machine.build_info()
    ceiling = machine.sgemm_gflops(clock=args.clock)
    bf16_ceiling = machine.bf16_gemm_gflops()
    skipped = {"gozaru-bf16": machine.bf16_skip_reason(info),
               "torch-bf16-autocast": machine.torch_bf16_skip_reason(info)}
    wanted = args.engines.split(",")
    unknown = [e for e in wanted if e not in ENGINES]
    if unknown or not {"gozaru", "torch"} <= set(wanted):
        raise SystemExit(f"--engines: rows {', '.join(ENGINES)}; gozaru and torch are needed (got {args.engines})")
    engines = [e for e in ENGINES if e in wanted and not skipped.get(e)]
    cfg = gz.preset(args.preset)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               GZ_BENCH_CLOCK=args.clock)
    by = {}
    for _ in range(args.repeats):
        for mode in MODES:
            for engine in engines:
                out = subprocess.run([sys.executable, __file__, "--worker", engine, mode, "--steps", str(args.steps),
                                      "--warmup", str(args.warmup), "--threads", str(args.threads),
                                      "--preset", args.preset],
                                     check=True, capture_output=True, text=True,
                                     env=machine.torch_env(env)[0] if engine.startswith("torch") else env).stdout
                r = json.loads(out.strip().splitlines()[-1])
                if (engine, mode) not in by or r["tokens_per_s"] > by[engine, mode]["tokens_per_s"]:
                    by[engine, mode] = r
    rows = [by[e, m] for m in MODES for e in engines]
    for r in rows:
        r["flops_per_step"] = machine.train_step_flops(cfg, B, T, r["mode"])
        r["gflops"] = r["flops_per_step"] * r["tokens_per_s"] / (B * T) / 1e9
        r["share_of_sgemm_ceiling"] = r["gflops"] / ceiling
    def ratio(a, b, mode="full"):
        if (a, mode) not in by or (b, mode) not in by:
            return None
        return by[a, mode]["tokens_per_s"] / by[b, mode]["tokens_per_s"]

    summary = {
        "build_info": info, "sgemm_2048_gflops": ceiling, "bf16_gemm_2048_gflops": bf16_ceiling,
        "skipped": {e: r for e, r in skipped.items() if r},
        "bf16_full_ft_vs_own_fp32": ratio("gozaru-bf16", "gozaru"),
        "bf16_full_ft_vs_torch_bf16_autocast": ratio("gozaru-bf16", "torch-bf16-autocast"),
        "bf16_emulated_full_ft_vs_own_fp32": ratio("gozaru-bf16-emulated", "gozaru"),
        "preset": args.preset, "clock": args.clock, "model_type": cfg.model_type, "num_params": cfg.num_params(),
        "threads": args.threads, "batch": B, "seq": T, "repeats": args.repeats, "rows": rows,
        "full_ft_speedup_vs_torch": by["gozaru", "full"]["tokens_per_s"] / by["torch", "full"]["tokens_per_s"],
        "last_layer_head_speedup_vs_torch": by["gozaru", "last_layer_head"]["tokens_per_s"]
        / by["torch", "last_layer_head"]["tokens_per_s"],
        # what gozaru would reach with its whole step at the SGEMM ceiling (machine.ceiling_bound)
        **{f"{m}_ceiling_bound": machine.ceiling_bound(by["torch", m]["share_of_sgemm_ceiling"]) for m in MODES},
        "last_layer_vs_own_full_ft": by["gozaru", "last_layer_head"]["tokens_per_s"]
        / by["gozaru", "full"]["tokens_per_s"],
    }
    machine.print_build_info(info)
    print(f"SGEMM n=2048 ceiling: {ceiling:.1f} GFLOP/s ({args.threads} threads)")
    print(machine.torch_isa_line(env))
    print(f"bf16 GEMM n=2048 ceiling (MKL): " + (f"{bf16_ceiling:.1f} GFLOP/s" if bf16_ceiling else "not built"))
    for e, reason in summary["skipped"].items():
        print(f"skipped {e}: {reason}")
    print(f"{args.preset} preset ({cfg.model_type}, {cfg.num_params():,} parameters), batch {B} x seq {T}, "
          f"{args.threads} threads, tokens/s from the median step (best of {args.repeats} interleaved runs)")
    print(f"{'engine':21} {'mode':16} {'tokens/s':>10} {'GFLOP/s':>8} {'of ceiling':>10} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['engine']:21} {r['mode']:16} {r['tokens_per_s']:10.0f} {r['gflops']:8.1f} "
              f"{r['share_of_sgemm_ceiling']:10.0%} {r['peak_rss_mb']:12.0f}")
    for mode, key, what in (("full", "full_ft", "full FT"),
                            ("last_layer_head", "last_layer_head", "last layer + head")):
        print(f"{what}: gozaru / torch = {summary[key + '_speedup_vs_torch']:.2f}x (bound at the SGEMM ceiling: "
              f"{summary[mode + '_ceiling_bound']:.2f}x)")
    print(f"gozaru last layer + head / gozaru full FT = {summary['last_layer_vs_own_full_ft']:.2f}x")
    for key, what in (("bf16_full_ft_vs_own_fp32", "full FT: gozaru bf16 / gozaru fp32 (target >= 2x)"),
                      ("bf16_full_ft_vs_torch_bf16_autocast",
                       "full FT: gozaru bf16 / torch bf16 autocast (target >= 1.3x)"),
                      ("bf16_emulated_full_ft_vs_own_fp32", "full FT: gozaru bf16-emulated / gozaru fp32")):
        print(f"{what} = " + (f"{summary[key]:.2f}x" if summary[key] is not None else "not measured here"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
