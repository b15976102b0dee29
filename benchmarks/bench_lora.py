"""LoRA training-step throughput and memory on the CPU: gozaru LoRA vs gozaru full fine-tuning vs PEFT + torch.

Shape: the `tiny` preset, batch 8 x seq 128, r = 8 (alpha 16) on every Linear of every layer (query_key_value,
dense, dense_h_to_4h, dense_4h_to_h), AdamW. Each measurement runs in its own subprocess with the same thread
count, so peak RSS is per engine; tokens/s comes from the median step. Prints one JSON object.
Usage: python benchmarks/bench_lora.py [--threads 2] [--steps 5] [--out FILE.json]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402
from machine import lm_batch, time_gozaru_training, timed_steps  # noqa: E402

B, T, R, ALPHA = 8, 128, 8, 16
MODULES = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
RUNS = (("gozaru", "full"), ("gozaru", "lora"), ("peft", "lora"))




def run_gozaru(mode, steps, warmup):
    import gozaru as gz
    cfg = gz.preset("tiny")
    m = gz.Model(cfg, seed=0)
    if mode == "lora":
        m = gz.lora.attach(m, MODULES, r=R, alpha=ALPHA)
    else:
        m.train_all()
    opt = gz.AdamW(m, lr=1e-4, weight_decay=0.01)

    return time_gozaru_training(m, opt, B, T, steps, warmup), m.num_trainable()


def run_peft(steps, warmup):
    import peft
    import torch
    import transformers
    import gozaru as gz
    cfg = gz.preset("tiny")
    hf_cfg = transformers.GPTNeoXConfig(**cfg.to_hf_dict())
    hf_cfg._attn_implementation = "sdpa"
    model = peft.get_peft_model(transformers.GPTNeoXForCausalLM(hf_cfg),
                                peft.LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0,
                                                target_modules=list(MODULES))).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)

    def step(i):
        tok, tgt = lm_batch(cfg.vocab_size, B, T, i)
        opt.zero_grad()
        logits = model(input_ids=torch.from_numpy(tok.astype("int64"))).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                                 torch.from_numpy(tgt.astype("int64")).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return timed_steps(step, steps, warmup), sum(p.numel() for p in params)


def worker(engine, mode, steps, warmup, threads):
    if engine == "peft":
        import torch
        torch.set_num_threads(threads)
        times, trainable = run_peft(steps, warmup)
    else:
        import gozaru as gz
        gz.set_num_threads(threads)
        times, trainable = run_gozaru(mode, steps, warmup)
    print(json.dumps({"engine": engine, "mode": mode, "trainable_params": trainable,
                      "step_seconds_median": statistics.median(times), "tokens_per_s": B * T / statistics.median(times),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker, args.steps, args.warmup, args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    rows = {}
    for engine, mode in RUNS:
        out = subprocess.run([sys.executable, __file__, "--worker", engine, mode, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True,
                             env=env if engine == "gozaru" else machine.torch_env(env)[0]).stdout
        rows[engine, mode] = json.loads(out.strip().splitlines()[-1])
    import gozaru as gz
    n = gz.preset("tiny").num_params()
    full, lora, peft = rows["gozaru", "full"], rows["gozaru", "lora"], rows["peft", "lora"]
    summary = {
        "preset": "tiny", "batch": B, "seq": T, "r": R, "alpha": ALPHA, "threads": args.threads,
        "steps": args.steps, "rows": list(rows.values()), "torch_isa": machine.torch_isa_line(env),
        "lora_speedup_vs_peft": lora["tokens_per_s"] / peft["tokens_per_s"],
        "lora_memory_saved_vs_full_mb": full["peak_rss_mb"] - lora["peak_rss_mb"],
        # what full FT holds for the weights LoRA freezes: a gradient plus AdamW's m and v, fp32
        "frozen_grad_and_adam_state_mb": 3 * 4 * (n - lora["trainable_params"]) / 2 ** 20,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        from gozaru.fileio import write_text_atomic
        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
