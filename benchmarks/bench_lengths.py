"""Training-step throughput and memory across sequence lengths: gozaru vs torch + transformers (SDPA attention).

Shape: the `tiny` preset (hidden 256, 8 layers, 4 heads, vocab 8000) with max_position_embeddings 4096, a fixed
number of tokens per step (B x T = --tokens, 4096 by default) at T = 128, 512, 1024, 2048, 4096; full fine-tuning
and "last layer + head" (the lab's most common partial condition). Every (engine, mode, T) runs in its own
subprocess with the same thread count, so its peak RSS is its own; the RSS right after the model and optimizer
exist is recorded too, so "peak - base" is what the step itself needs (activations, attention, logits).
--repeats N runs every (engine, mode, T) N times, interleaved, and keeps each one's best median (torch's
tokens/s can move by ~15 % between runs, gozaru's by ~4 %). Two speeds per row, both from the median step:
tokens per wall-clock second, and tokens per CPU second of the process (time.process_time), which moves far less
when other processes share the cores.
The printout and JSON carry gozaru.build_info() (CPU model and features, BLAS kernel) and the SGEMM ceiling
measured in the same run. "bound" is the ratio gozaru would reach with its whole step at that ceiling (1 / torch's
share, machine.ceiling_bound): a ratio target above it cannot be met with this BLAS kernel on this machine.
OPENBLAS_CORETYPE is never set here: run the script once as it is (the kernel OpenBLAS picks) and once under
`OPENBLAS_CORETYPE=Haswell` (or another kernel) to compare instruction paths.
Usage: python benchmarks/bench_lengths.py [--threads N] [--steps 2] [--repeats 1] [--lengths 128,512,...]
                                         [--out FILE.json]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from glob import glob

# The gozaru of this checkout when it is built in place (python setup.py build_ext --inplace), not whichever one
# is installed in the environment: a comparison of branches must time the branch's code.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob(os.path.join(ROOT, "gozaru", "_core*.so")):
    sys.path.insert(0, ROOT)

import machine  # noqa: E402
from bench_cpu import torch_model, trainable  # noqa: E402

MODES = ("full", "last_layer_head")
LENGTHS = (128, 512, 1024, 2048, 4096)


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config():
    import gozaru as gz
    return gz.preset("tiny").replace(max_position_embeddings=max(LENGTHS))


def gozaru_step(mode):
    import gozaru as gz
    cfg = config()
    m = gz.Model(cfg, seed=0)
    m.train_only(trainable(cfg, mode))
    opt = gz.AdamW(m, lr=1e-4, weight_decay=0.01)

    def step(tok, tgt):
        m.zero_grad()
        m.loss(tok, tgt)
        m.backward()
        opt.step(max_grad_norm=1.0)
    return cfg, step


def torch_step(mode):
    import torch
    cfg = config()
    model, opt = torch_model(cfg, mode)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(tok, tgt):
        opt.zero_grad()
        logits = model(torch.from_numpy(tok.astype("int64"))).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                                 torch.from_numpy(tgt.astype("int64")).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return cfg, step


def worker(engine, mode, T, tokens, steps, warmup, threads, prompt_share):
    if engine == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        import gozaru as gz
        gz.set_num_threads(threads)
    cfg, step = (torch_step if engine == "torch" else gozaru_step)(mode)
    base = rss_mb()
    B = max(1, tokens // T)
    wall, cpu = [], []
    for i in range(warmup + steps):
        tok, tgt = machine.lm_batch(cfg.vocab_size, B, T, i, prompt_share)
        t0, c0 = time.perf_counter(), time.process_time()
        step(tok, tgt)
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    print(json.dumps({"engine": engine, "mode": mode, "B": B, "T": T, "tokens_per_s": B * T / statistics.median(wall),
                      "tokens_per_cpu_s": B * T / statistics.median(cpu), "step_seconds": wall,
                      "base_rss_mb": base, "peak_rss_mb": rss_mb()}))


def run_worker(cmd, env, engine, mode, T, tries=2):
    """One measurement in its own process; on a shared machine a worker can be killed (memory pressure from
    other processes), so it is retried once and otherwise recorded with its error."""
    for _ in range(tries):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode == 0:
            return json.loads(r.stdout.strip().splitlines()[-1])
    err = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
    print(f"{engine} {mode} T={T} failed: {err}", file=sys.stderr)
    return {"engine": engine, "mode": mode, "T": T, "error": err}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokens", type=int, default=4096, help="B x T of every step")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every (engine, mode, T) this many times, interleaved, and keep each one's best median")
    ap.add_argument("--prompt-share", type=float, default=0.0,
                    help="SFT-shaped batches: this share of each row's targets ignored as a prompt (default 0)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--worker", nargs=3, metavar=("ENGINE", "MODE", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        e, mode, T = args.worker
        return worker(e, mode, int(T), args.tokens, args.steps, args.warmup, args.threads, args.prompt_share)

    import gozaru as gz
    gz.set_num_threads(args.threads)
    info = machine.build_info()
    ceiling = machine.sgemm_gflops()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    best = {}  # (engine, mode, T) -> the run with the fastest median step over the repeats
    for _ in range(args.repeats):
        for mode in args.modes.split(","):
            for T in map(int, args.lengths.split(",")):
                for engine in ("gozaru", "torch"):  # side by side: the two engines of one (mode, T) back to back
                    cmd = [sys.executable, __file__, "--worker", engine, mode, str(T), "--tokens", str(args.tokens),
                           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                           "--prompt-share", str(args.prompt_share)]
                    r = run_worker(cmd, machine.torch_env(env)[0] if engine == "torch" else env, engine, mode, T)
                    key = engine, mode, T
                    held = best.get(key, {"error": None})
                    if "error" in held or r.get("tokens_per_s", 0) > held["tokens_per_s"]:
                        best[key] = r
    rows = list(best.values())
    machine.print_build_info(info)
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; SGEMM n=2048 ceiling: "
          f"{ceiling:.1f} GFLOP/s ({args.threads} threads)")
    print(machine.torch_isa_line(env))
    print(f"tiny preset, B x T = {args.tokens} tokens per step, {args.threads} threads, median of {args.steps} steps, "
          f"best of {args.repeats} interleaved runs"
          + (f", first {args.prompt_share:.0%} of each row's targets ignored" if args.prompt_share else ""))
    print(f"{'mode':16} {'T':>5} {'gozaru tok/s':>12} {'torch tok/s':>11} {'ratio':>6} {'ratio (CPU s)':>13} "
          f"{'of SGEMM ceiling':>17} {'bound':>7} {'peak-base MB gozaru/torch':>26}")
    by = {(r["engine"], r["mode"], r["T"]): r for r in rows}
    summary = []
    for mode in args.modes.split(","):
        for T in map(int, args.lengths.split(",")):
            g, t = by["gozaru", mode, T], by["torch", mode, T]
            if "error" in g or "error" in t:
                print(f"{mode:16} {T:5d} failed: {g.get('error') or t.get('error')}")
                continue
            s = {"mode": mode, "T": T, "ratio": g["tokens_per_s"] / t["tokens_per_s"],
                 "ratio_cpu": g["tokens_per_cpu_s"] / t["tokens_per_cpu_s"],
                 "step_rss_mb": (g["peak_rss_mb"] - g["base_rss_mb"], t["peak_rss_mb"] - t["base_rss_mb"]),
                 "peak_rss_mb": (g["peak_rss_mb"], t["peak_rss_mb"]),
                 "share_of_sgemm_ceiling": tuple(machine.train_step_flops(config(), r["B"], T, mode) / (r["B"] * T)
                                                 * r["tokens_per_s"] / 1e9 / ceiling for r in (g, t))}
            s["ceiling_bound"] = machine.ceiling_bound(s["share_of_sgemm_ceiling"][1])
            summary.append(s)
            print(f"{mode:16} {T:5d} {g['tokens_per_s']:12.0f} {t['tokens_per_s']:11.0f} {s['ratio']:5.2f}x "
                  f"{s['ratio_cpu']:12.2f}x {s['share_of_sgemm_ceiling'][0]:8.0%} / "
                  f"{s['share_of_sgemm_ceiling'][1]:<6.0%} {s['ceiling_bound']:5.2f}x "
                  f"{s['step_rss_mb'][0]:12.0f} / {s['step_rss_mb'][1]:<8.0f}"
                  f"(peak {g['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f})")
    result = {"prompt_share": args.prompt_share, "build_info": info,
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
              "torch_isa": machine.torch_env(env)[1],
              "sgemm_2048_gflops": ceiling, "threads": args.threads, "tokens": args.tokens, "repeats": args.repeats,
              "rows": rows,
              "summary": summary}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
