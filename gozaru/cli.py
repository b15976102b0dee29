"""The ``gozaru`` command line: demo, train, eval, grid, import-hf, export-hf, info.

Heavy modules (the C core, pandas, matplotlib) are imported inside the commands, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

EPILOG_MAIN = """\
Start here:
  gozaru demo                  the whole reference experiment offline on a tiny model (a few minutes)
  gozaru demo --quick          the same, smaller (under a minute)

With your own data (dolly-ja layout: instruction, input, output[, category, index]; .json/.jsonl/.parquet):
  gozaru import-hf ~/models/japanese-gpt-neox-3.6b base.h5
  gozaru train --base base.h5 --tokenizer ~/models/japanese-gpt-neox-3.6b --data dolly-ja.jsonl \\
               --gozaru --select last --budget 0.05 --steps 200 --out last5.h5
  gozaru eval last5.h5 --tokenizer ~/models/japanese-gpt-neox-3.6b --data dolly-ja.jsonl --gozaru
  gozaru grid --base base.h5 --tokenizer ~/models/japanese-gpt-neox-3.6b --data dolly-ja.jsonl \\
              --gozaru --out runs/rinna
  gozaru info last5.h5

Every command takes --help.
"""


# --------------------------------------------------------------------------- shared options
def _add_threads(p, backend=True):
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the engine (default: the OpenMP default, usually all cores)")
    if backend:
        p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                       help="where the model runs (cuda needs a CUDA build; default cpu)")


def _add_progress(p):
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")


def _add_data(p, needed=True):
    g = p.add_argument_group("data")
    g.add_argument("--data", required=needed, metavar="PATH",
                   help="instruction data in the dolly-ja layout: a .json array, .jsonl, .parquet, or a folder of them")
    g.add_argument("--tokenizer", required=needed, metavar="PATH",
                   help="SentencePiece model: a spiece.model file or a folder holding one (e.g. the HF model folder)")
    g.add_argument("--gozaru", action="store_true",
                   help="rewrite the answers into ござる speech first (です→でござる, ます→ござる …)")
    g.add_argument("--style", choices=("rinna", "alpaca"), default="rinna",
                   help="prompt format: rinna 'ユーザー: …<NL>システム: ' (default) or alpaca-ja '### 指示:'")
    g.add_argument("--seq-len", type=int, default=256, help="tokens per training row (default 256)")
    g.add_argument("--eval-size", type=int, default=200,
                   help="records held out for evaluation (default 200; the split is seeded by --split-seed)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/eval split (default 0)")
    g.add_argument("--skip-bad", action="store_true", help="skip malformed records (counted and reported)")


def _add_training(p, steps=200):
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
    g.add_argument("--batch-size", type=int, default=16, help="sequences per optimizer step (default 16)")
    g.add_argument("--micro-batch-size", type=int, default=0,
                   help="sequences per forward/backward; smaller than --batch-size accumulates gradients "
                        "(default: no accumulation)")
    g.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    g.add_argument("--warmup", type=int, default=10, help="linear warmup steps before the cosine decay (default 10)")
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a share of --lr (default 0.1)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    g.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clipping, 0 = off (default 1.0)")
    g.add_argument("--seed", type=int, default=0, help="data-order seed (default 0)")
    g.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default 50)")


def _add_model_source(p):
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--base", metavar="CKPT", help="the model to start from: a gozaru .h5 checkpoint")
    g.add_argument("--hf", metavar="DIR", help="the model to start from: an HF GPT-NeoX folder")


def _train_config(args):
    from .train import TrainConfig
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                       lr=args.lr, warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio,
                       weight_decay=args.weight_decay, max_grad_norm=args.clip, seed=args.seed,
                       checkpoint_every=args.checkpoint_every, progress=args.progress)


# --------------------------------------------------------------------------- helpers
def _threads(args):
    if getattr(args, "threads", None):
        import gozaru
        gozaru.set_num_threads(args.threads)


def _load_model(args):
    import gozaru
    if getattr(args, "hf", None):
        print(f"loading HF model from {args.hf} …", file=sys.stderr)
        return gozaru.Model.from_hf(args.hf, backend=args.backend)
    return gozaru.load(args.base, backend=args.backend)[0]


def _records(args):
    """(train records, held-out records) from --data, rewritten to ござる with --gozaru."""
    from . import data
    loaded = data.load_dolly(args.data, on_error="skip" if args.skip_bad else "raise")
    if args.skip_bad and getattr(loaded, "skipped", None):
        print(loaded.report(), file=sys.stderr)
    records = list(loaded)
    if args.gozaru:
        records = data.to_gozaru_dataset(records)
    if len(records) < 2:
        raise SystemExit(f"{args.data}: need at least 2 records, found {len(records)}")
    fraction = min(args.eval_size, len(records) // 2) / len(records)
    train, held = data.train_eval_split(records, eval_fraction=fraction, seed=args.split_seed)
    return train, held


def _tokenizer(args):
    from .tokenizer import Tokenizer
    return Tokenizer.load(args.tokenizer)


def _selection(args) -> dict:
    sel = {"kind": args.select, "train_head": not args.no_head, "seed": args.select_seed}
    if args.budget is not None:
        sel["budget"] = args.budget
    if args.layers:
        sel["layers"] = args.layers if args.select == "layers" else int(args.layers[0])
    if args.pattern:
        sel["pattern"] = args.pattern
    return sel


# --------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from .demo import run_demo
    run_demo(args.out, quick=args.quick, threads=args.threads, progress=args.progress, plots=args.plots,
             fresh=args.fresh)
    return 0


def cmd_train(args) -> int:
    from . import layers
    from .experiment import ExperimentData
    from .train import Trainer
    _threads(args)
    tokenizer = _tokenizer(args)
    train_records, held = _records(args)
    exp = ExperimentData.from_records(tokenizer, train_records, held, seq_len=args.seq_len, style=args.style)
    if args.resume:  # the saved training settings continue; only the display follows this command line
        trainer = Trainer(None, exp.train, checkpoint=args.out, eval_data=exp.eval, resume=args.resume,
                          backend=args.backend, progress=args.progress)
        print(f"resuming {args.resume} at step {trainer.step} of {trainer.config.steps}")
    else:
        if not (args.base or args.hf):
            raise SystemExit("give --base or --hf (or --resume a checkpoint)")
        model = _load_model(args)
        names = layers.select(model.config, **_selection(args))
        model.train_only(sorted(names))
        print(layers.report(model.config, names)[0].splitlines()[-1].replace("all", "training", 1))
        trainer = Trainer(model, exp.train, _train_config(args), checkpoint=args.out, eval_data=exp.eval)
    print(f"{len(exp.train):,} training rows, {exp.train.counted:,} answer tokens; checkpoint {args.out}")
    t0 = time.perf_counter()
    trainer.fit()
    from .evaluate import eval_loss
    last = trainer.history[-1] if trainer.history else {"loss": float("nan")}
    print(f"done: step {trainer.step}, train loss {last['loss']:.4f}, held-out loss "
          f"{eval_loss(trainer.model, exp.eval, trainer.config.micro) if exp.eval is not None else float('nan'):.4f} "
          f"({time.perf_counter() - t0:.0f} s); saved {args.out}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import EvalConfig, eval_loss, gozaru_rate, weight_change, change_grid
    from .experiment import ExperimentData
    import gozaru
    _threads(args)
    model = gozaru.load(args.checkpoint, backend=args.backend)[0]
    tokenizer = _tokenizer(args)
    _, held = _records(args)
    exp = ExperimentData.from_records(tokenizer, [], held, seq_len=args.seq_len, style=args.style,
                                      n_prompts=args.n_prompts)
    cfg = EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size, temperature=args.temperature,
                     seed=args.gen_seed)
    rate, answers = gozaru_rate(model, tokenizer, exp.prompts, **cfg.generation(), progress=args.progress)
    print(f"ござる-rate {rate.rate:.3f}  95% CI [{rate.low:.3f}, {rate.high:.3f}]  ({rate.k}/{rate.n} answers)")
    print(f"held-out answer loss {eval_loss(model, exp.eval, args.gen_batch_size):.4f} over {exp.eval.counted:,} tokens")
    for prompt, answer in list(zip(exp.prompts, answers))[: args.show]:
        print(f"\n> {prompt.replace('<NL>', ' / ')}\n  {answer}")
    if args.base:
        base = gozaru.load(args.base)[0]
        print("\n‖ΔW‖/‖W‖ vs the base (rows: embed, layers, top; columns: tensor kind)")
        print(change_grid(weight_change(base, model)).round(4).to_string(na_rep="·"))
    return 0


def cmd_grid(args) -> int:
    from .evaluate import EvalConfig
    from .experiment import ExperimentData, load_grid, run, seed_grid
    from .demo import format_table
    _threads(args)
    tokenizer = _tokenizer(args)
    train_records, held = _records(args)
    exp = ExperimentData.from_records(tokenizer, train_records, held, seq_len=args.seq_len, style=args.style,
                                      n_prompts=args.n_prompts)
    grid = load_grid(args.grid) if args.grid else seed_grid(seeds=args.seeds, budgets=args.budgets)
    base = _load_model(args)
    results = run(grid, base, exp, args.out, train=_train_config(args),
                  eval=EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size),
                  progress=args.progress)
    print()
    print(format_table(results))
    if args.plots:
        from . import plots
        print("plots: " + ", ".join(plots.save_all(results, args.out)))
    print(f"results: {os.path.join(args.out, 'results.csv')}")
    return 0


def cmd_import_hf(args) -> int:
    import gozaru
    model = gozaru.Model.from_hf(args.folder)
    model.save(args.out)
    print(f"{args.folder} -> {args.out}: {model.num_params:,} parameters")
    return 0


def cmd_export_hf(args) -> int:
    import gozaru
    model = gozaru.load(args.checkpoint)[0]
    model.to_hf(args.folder)
    print(f"{args.checkpoint} -> {args.folder} (config.json + model.safetensors; load with "
          f"transformers.GPTNeoXForCausalLM.from_pretrained)")
    return 0


def cmd_info(args) -> int:
    from . import checkpoint
    if args.system:
        from .engine.system import build_info, format_build_info
        print(format_build_info(build_info()))
    elif not args.checkpoints:
        raise SystemExit("gozaru info: name checkpoints to describe, or pass --system")
    for path in args.checkpoints:
        print(checkpoint.describe(path))
        summary = _training_summary(path)
        if summary:
            print(summary)
    return 0


def _training_summary(path: str) -> str:
    """What a Trainer or experiment wrote into the checkpoint's extra payload, in one or two lines."""
    import json
    from . import _core
    raw = _core.read_checkpoint_meta(path)["extra"]
    try:
        extra = json.loads(bytes(raw).decode()) if raw else {}
    except (UnicodeDecodeError, ValueError):
        return ""
    if not isinstance(extra, dict):
        return ""
    lines = []
    cond = extra.get("condition")
    if cond:
        lines.append(f"  condition  {cond.get('name')}: {cond.get('selection')}")
    cfg = extra.get("config") or extra.get("train_config")
    if cfg:
        lines.append(f"  training   {cfg.get('steps')} steps × {cfg.get('batch_size')} rows, lr {cfg.get('lr')}, "
                     f"data seed {cfg.get('seed')}" + (f", data cursor {extra['cursor']}" if "cursor" in extra else ""))
    history = extra.get("history")
    if history:
        lines.append(f"  loss       first {history[0]['loss']:.4f}, last {history[-1]['loss']:.4f} "
                     f"({len(history)} steps recorded)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="gozaru", formatter_class=fmt, epilog=EPILOG_MAIN,
        description="Fine-tuning lab for GPT-NeoX models: which layers must be trained for a model to learn a style?")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"gozaru {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", formatter_class=fmt, help="run the reference experiment offline on a tiny model",
                       description="Builds a synthetic Japanese corpus and tokenizer, pretrains a tiny GPT-NeoX base "
                       "(cached in OUT/base), fine-tunes it 13 ways on ござる-rewritten instructions and prints the "
                       "ござる-rate of each. Writes results.csv, plots/*.png and one checkpoint per run into OUT; "
                       "rerunning continues where it stopped.")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="a smaller model and shorter runs (under a minute)")
    p.add_argument("--fresh", action="store_true", help="delete earlier results in OUT first (the base is kept)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    _add_threads(p, backend=False)
    _add_progress(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", formatter_class=fmt, help="fine-tune chosen tensors of a model on instruction data",
                       description="Fine-tunes the tensors chosen by --select (see gozaru.layers) on dolly-layout "
                       "data, answers only. Writes the checkpoint --out every --checkpoint-every steps, at the end "
                       "and on Ctrl-C; --resume continues one exactly.",
                       epilog="examples:\n  gozaru train --base base.h5 --tokenizer spiece.model --data d.jsonl "
                       "--gozaru --select mlp --out mlp.h5\n  gozaru train --resume mlp.h5 --tokenizer spiece.model "
                       "--data d.jsonl --gozaru --out mlp.h5")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--base", metavar="CKPT", help="the model to start from: a gozaru .h5 checkpoint")
    g.add_argument("--hf", metavar="DIR", help="the model to start from: an HF GPT-NeoX folder")
    g.add_argument("--resume", metavar="CKPT", help="continue a checkpoint written by an interrupted `gozaru train`")
    _add_data(p)
    s = p.add_argument_group("what to train")
    s.add_argument("--select", default="full",
                   choices=("full", "mlp", "non_mlp", "attention", "norms", "embed", "head", "first", "last",
                            "random", "layers", "pattern"), help="tensor group to train (default full)")
    s.add_argument("--budget", type=float, help="first/last/random: share of all weights, e.g. 0.05")
    s.add_argument("--layers", type=int, nargs="+", help="first/last/random: a layer count; layers: the indices")
    s.add_argument("--pattern", help="pattern: a regex over tensor names")
    s.add_argument("--select-seed", type=int, default=0, help="random: seed of the layer choice")
    s.add_argument("--no-head", action="store_true", help="do not add the LM head to the selection")
    _add_training(p)
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write (HDF5)")
    _add_threads(p)
    _add_progress(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", formatter_class=fmt, help="ござる-rate and held-out loss of a checkpoint",
                       description="Generates answers to the held-out prompts of --data (the same split as train "
                       "and grid use) and reports the ござる-rate with its Wilson 95 % interval and the held-out "
                       "answer loss; with --base also ‖ΔW‖/‖W‖ per layer and tensor kind.")
    p.add_argument("checkpoint", help="a gozaru .h5 checkpoint")
    _add_data(p)
    p.add_argument("--base", metavar="CKPT", help="the base checkpoint, to show how far each tensor moved")
    p.add_argument("--n-prompts", type=int, default=100, help="held-out prompts to answer (default 100)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--gen-seed", type=int, default=0, help="sampling seed when --temperature > 0")
    p.add_argument("--gen-batch-size", type=int, default=16, help="prompts per generation batch (default 16)")
    p.add_argument("--show", type=int, default=5, help="sample answers to print (default 5)")
    _add_threads(p)
    _add_progress(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("grid", formatter_class=fmt, help="run the 13-condition grid (or your own) on your data",
                       description="Trains every condition from the same base, evaluates it and writes "
                       "OUT/results.csv, OUT/runs/<condition>.h5/.json and plots. Interrupt it at any time and "
                       "rerun the same command: finished conditions are skipped.",
                       epilog='grid file example (JSON):\n  [{"name": "last 2", "selection": {"kind": "last", '
                       '"layers": 2}},\n   {"name": "attention", "selection": {"kind": "attention"}, '
                       '"hparams": {"lr": 3e-4}}]')
    _add_model_source(p)
    _add_data(p)
    p.add_argument("--out", required=True, help="experiment folder")
    p.add_argument("--grid", metavar="JSON", help="your own list of conditions (default: the reference grid)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the random conditions")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.10], help="weight shares of first/last/random")
    p.add_argument("--n-prompts", type=int, default=100, help="held-out prompts per ござる-rate (default 100)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    p.add_argument("--gen-batch-size", type=int, default=16, help="prompts per generation batch (default 16)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    _add_training(p)
    _add_threads(p)
    _add_progress(p)
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("import-hf", formatter_class=fmt, help="convert an HF GPT-NeoX folder into a gozaru checkpoint",
                       epilog="example:\n  gozaru import-hf ~/models/japanese-gpt-neox-3.6b rinna.h5\n"
                       "  (the tokenizer stays in the folder: pass it to train/eval/grid as --tokenizer)",
                       description="Reads config.json and the weights (safetensors or pytorch .bin, sharded or "
                       "not) of an HF GPT-NeoX folder and writes a gozaru HDF5 checkpoint.")
    p.add_argument("folder", help="HF model folder (e.g. a local copy of rinna/japanese-gpt-neox-3.6b)")
    p.add_argument("out", help="checkpoint to write (.h5)")
    p.set_defaults(func=cmd_import_hf)

    p = sub.add_parser("export-hf", formatter_class=fmt,
                       help="write a checkpoint as an HF folder (transformers loads it)",
                       epilog="example:\n  gozaru export-hf runs/demo/runs/full.h5 full-hf\n"
                       "  python -c \"import transformers as t; t.GPTNeoXForCausalLM.from_pretrained('full-hf')\"",
                       description="Writes config.json and model.safetensors that "
                       "transformers.GPTNeoXForCausalLM.from_pretrained loads.")
    p.add_argument("checkpoint", help="a gozaru .h5 checkpoint")
    p.add_argument("folder", help="folder to write")
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("info", formatter_class=fmt, help="describe checkpoints without loading their weights",
                       epilog="example:\n  gozaru info runs/demo/base/base.h5 runs/demo/runs/*.h5",
                       description="Prints model shape, step, tokens seen, optimizer settings and, for checkpoints "
                       "written by the trainer or an experiment, the training summary.")
    p.add_argument("checkpoints", nargs="*", help="gozaru .h5 checkpoints")
    p.add_argument("--system", action="store_true",
                   help="describe this machine instead: BLAS and its kernel, threads, OpenMP, CPU features, backends")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo" and args.out is None:
        args.out = "runs/demo-quick" if args.quick else "runs/demo"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted (rerun the same command to continue)", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        print(f"gozaru {args.command}: error: {e}", file=sys.stderr)
        return 1
