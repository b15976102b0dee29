"""Generation throughput on the CPU: gozaru (C, KV cache) vs transformers `generate`, same run, same threads.

Tiny preset with random weights, greedy, 128 new tokens (EOS disabled so every row runs to the end),
batch 1 and batch 8 with prompts of 16..32 tokens, or of --context tokens each (e.g. 1024: decoding against a long
KV cache, where attention over the cache rather than the weights dominates).
Records gozaru.build_info() and the SGEMM ceiling at n=2048 (same run, same threads); achieved FLOP/s is
given as a share of it (FLOP model: benchmarks/machine.py; decoding is memory-bound, so the share is small).
bf16 rows (table below the fp32 one): gozaru precision="bf16" and transformers under torch.autocast(cpu,
bfloat16) where the CPU has AVX512-BF16 or AMX-BF16 (skipped with a printed reason elsewhere), and gozaru's
"bf16-emulated" everywhere; the bf16 GEMM ceiling (MKL, when built) is printed next to the SGEMM one.
Usage: python benchmarks/bench_generate.py [--threads N] [--new 128] [--context N] [--out FILE.json]
"""
import argparse
import json
import os
import time

import numpy as np

import machine


CONTEXT = None  # prompt length (--context); None: 16..32 tokens


def prompts(batch, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(4, vocab, size=CONTEXT or int(rng.integers(16, 33))).tolist() for _ in range(batch)]


def bench_gozaru(model, batch, new):
    ps = prompts(batch, model.config.vocab_size)
    model.generate(ps[:1], max_new_tokens=4, eos_token_id=-1)  # warm-up
    t0 = time.perf_counter()
    out = model.generate(ps, max_new_tokens=new, eos_token_id=-1)
    secs = time.perf_counter() - t0
    return sum(len(o) for o in out) / secs, out


def bench_hf(hf, torch, batch, new, vocab, autocast=False):
    ps = prompts(batch, vocab)
    width = max(len(p) for p in ps)
    ids = torch.zeros((batch, width), dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for i, p in enumerate(ps):  # left padding, as transformers expects for decoder-only batches
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    kw = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=0, eos_token_id=None)
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
        hf.generate(input_ids=ids[:1], attention_mask=mask[:1], **dict(kw, max_new_tokens=4, min_new_tokens=4))
        t0 = time.perf_counter()
        out = hf.generate(input_ids=ids, attention_mask=mask, **kw)
        secs = time.perf_counter() - t0
    return batch * (out.shape[1] - width) / secs, [out[i, width:].tolist() for i in range(batch)]


def _with_precision(model, precision):
    other = model.clone()
    other.set_precision(precision)
    return other


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--context", type=int, default=None, help="prompt length in tokens (default 16..32)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "generate.json"))
    args = ap.parse_args()
    global CONTEXT
    CONTEXT = args.context

    import torch
    import transformers
    import gozaru as gz

    torch.set_num_threads(args.threads)
    gz.set_num_threads(args.threads)
    cfg = gz.preset("tiny")
    if CONTEXT:
        cfg = cfg.replace(max_position_embeddings=max(cfg.max_position_embeddings, CONTEXT + args.new))
    model = gz.Model(cfg, seed=0)
    hf_cfg = transformers.GPTNeoXConfig(**cfg.to_hf_dict())
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # same weights in both engines (transformers 5 names the head lm_head)
        for name, p in hf.named_parameters():
            p.copy_(torch.from_numpy(model.params["embed_out.weight" if name == "lm_head.weight" else name]))

    info = machine.build_info()
    ceiling = machine.sgemm_gflops()
    bf16_ceiling = machine.bf16_gemm_gflops()
    rows = []
    for batch in (1, 8):
        g_tps, g_out = bench_gozaru(model, batch, args.new)
        h_tps, h_out = bench_hf(hf, torch, batch, args.new, cfg.vocab_size)
        same = sum(a == b for a, b in zip(g_out, h_out))
        # mean context over the decode: prompt (~24 or --context) plus half the new tokens
        flops = machine.decode_flops_per_token(cfg, (CONTEXT or 24) + args.new // 2)
        rows.append({"batch": batch, "gozaru_tokens_per_s": g_tps, "hf_tokens_per_s": h_tps,
                     "speedup": g_tps / h_tps, "identical_rows": same, "flops_per_token": flops,
                     "gozaru_share_of_sgemm_ceiling": g_tps * flops / 1e9 / ceiling,
                     "hf_share_of_sgemm_ceiling": h_tps * flops / 1e9 / ceiling})
    # bf16: tokens/s per (row, batch); rows that cannot run here are skipped with their reason
    skipped = {"gozaru bf16": machine.bf16_skip_reason(info), "HF bf16 autocast": machine.torch_bf16_skip_reason(info)}
    bf16_rows = []
    for batch in (1, 8):
        r = {"batch": batch}
        for name, precision in (("gozaru bf16", "bf16"), ("gozaru bf16-emulated", "bf16-emulated")):
            if not skipped.get(name):
                r[name] = bench_gozaru(_with_precision(model, precision), batch, args.new)[0]
        if not skipped["HF bf16 autocast"]:
            r["HF bf16 autocast"] = bench_hf(hf, torch, batch, args.new, cfg.vocab_size, autocast=True)[0]
        bf16_rows.append(r)
    machine.print_build_info(info)
    print(f"SGEMM n=2048 ceiling: {ceiling:.1f} GFLOP/s ({args.threads} threads)")
    print(f"bf16 GEMM n=2048 ceiling (MKL): " + (f"{bf16_ceiling:.1f} GFLOP/s" if bf16_ceiling else "not built"))
    print(f"tiny preset, greedy, {args.new} new tokens, prompts of {CONTEXT or '16..32'} tokens, {args.threads} threads")
    print(f"{'batch':>5} {'gozaru tok/s':>13} {'HF tok/s':>10} {'speedup':>8} {'same tokens':>12} "
          f"{'gozaru of ceiling':>18}")
    for r in rows:
        print(f"{r['batch']:5d} {r['gozaru_tokens_per_s']:13.1f} {r['hf_tokens_per_s']:10.1f} "
              f"{r['speedup']:7.2f}x {r['identical_rows']:>9d}/{r['batch']} {r['gozaru_share_of_sgemm_ceiling']:17.1%}")
    for name, reason in skipped.items():
        if reason:
            print(f"skipped {name}: {reason}")
    for r in bf16_rows:
        print(f"batch {r['batch']}: " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in r.items() if k != "batch"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"build_info": info, "sgemm_2048_gflops": ceiling, "threads": args.threads,
                   "bf16_gemm_2048_gflops": bf16_ceiling, "new_tokens": args.new, "context": CONTEXT, "rows": rows,
                   "bf16_rows": bf16_rows, "skipped": {k: v for k, v in skipped.items() if v}}, f, indent=2)


if __name__ == "__main__":
    main()
