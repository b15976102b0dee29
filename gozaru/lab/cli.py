"""The ``gozaru`` command line: demo, train, eval, grid, import-hf, export-hf, info.

Arguments are defined in ``gozaru.lab.cli_args``; an expected failure prints one line, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

from .. import _core, data
from .._version import __version__
from ..fileio import write_json_atomic
from ..data.tokenizer import load_tokenizer
from ..engine import checkpoint, layers
from ..engine.checkpoint import load, read_config
from ..engine.model import Model
from ..engine.system import build_info, format_build_info
from . import hub, plots, tracking
from .cli_args import build_parser, placement_from_args
from .study import demo as study_demo, inputs as study_inputs, runner as study_runner, spec as study_spec
from .demo import format_table, run_demo
from .evaluate import EvalConfig, change_grid, eval_loss, generated_rate, weight_change
from .executor import from_args as executor_from_args
from .export import export_hf, push_to_hub
from .experiment import ExperimentData, load_grid, run, seed_grid
from .record import RunRecord
from .source import BaseSource
from .train import TrainConfig, Trainer


def _train_config(args):
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                       lr=args.lr, warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio,
                       weight_decay=args.weight_decay, max_grad_norm=args.clip, seed=args.seed,
                       checkpoint_every=args.checkpoint_every, progress=args.progress, pack=args.pack)


# --------------------------------------------------------------------------- helpers
def _check_writable(path: str, is_folder: bool = False) -> None:
    """OSError now, before any work, when ``path`` (a file, or a folder with is_folder) cannot be written:
    the nearest existing folder on its way must take a new file."""
    target = os.path.abspath(path)
    if os.path.isdir(target) and not is_folder:
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    folder = target if is_folder else os.path.dirname(target)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"cannot write {path}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def _source(args) -> BaseSource:
    """The model to start from: --hf (an HF folder or Hub id) or --base (a gozaru checkpoint)."""
    if getattr(args, "hf", None):
        source = BaseSource.hf(args.hf)
        print(f"HF model: {source.value}", file=sys.stderr)
        return source
    return BaseSource.checkpoint(args.base)


def _records(args, originals: bool = False):
    """(train records, held-out records) from --data, rewritten to ござる with --gozaru; ``originals`` adds the
    held-out records as given (before the rewrite; None without --gozaru): their loss measures forgetting."""
    loaded = data.load_dolly(hub.resolve(args.data, "dataset"), on_error="skip" if args.skip_bad else "raise")
    if args.skip_bad and getattr(loaded, "skipped", None):
        print(loaded.report(), file=sys.stderr)
    records = list(loaded)
    if len(records) < 2:
        raise SystemExit(f"{args.data}: need at least 2 records, found {len(records)}")
    fraction = min(args.eval_size, len(records) // 2) / len(records)
    train, held = data.train_eval_split(records, eval_fraction=fraction, seed=args.split_seed)
    original = held if args.gozaru else None
    if args.gozaru:   # rewriting keeps every record, so the split is the same as of the rewritten ones
        train, held = data.to_gozaru_dataset(train), data.to_gozaru_dataset(held)
    return (train, held, original) if originals else (train, held)


def _tokenizer(args):
    return load_tokenizer(hub.resolve(args.tokenizer, "model"))


def _fit_seq_len(args, config) -> None:
    """Rows no longer than the model's positions: a --seq-len beyond them (the default 256 on the demo's base of
    128) becomes max_position_embeddings, noted on stderr."""
    limit = config.max_position_embeddings
    if args.seq_len > limit:
        print(f"--seq-len {args.seq_len} is more than the model's {limit} positions: rows of {limit} tokens",
              file=sys.stderr)
        args.seq_len = limit


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
    run_demo(args.out, quick=args.quick, placement=placement_from_args(args), progress=args.progress,
             plots=args.plots, fresh=args.fresh, arch=args.arch)
    return 0


def _check_not_overwriting(args) -> None:
    """A plain ``gozaru train`` starts at step 0 and overwrites --out: refused for an existing file unless
    --force (an interrupted run continues with --resume)."""
    if args.resume or args.force or not os.path.exists(args.out):
        return
    hint = "give --force to start over and overwrite it"
    try:
        record = RunRecord.from_payload(_core.read_checkpoint_meta(args.out)["extra"], args.out)
        step = _core.read_checkpoint_meta(args.out)["step"]
    except (OSError, ValueError):
        record, step = None, None
    if record is not None and step is not None and step < int(record.train_config.get("steps", 0)):
        raise ValueError(f"{args.out} holds an unfinished run (step {step} of {record.train_config['steps']}); "
                         f"continue it with --resume {args.out}, or {hint}")
    raise ValueError(f"{args.out} exists; {hint}, or choose another --out")


def cmd_train(args) -> int:
    _check_writable(args.out)
    placement = placement_from_args(args)
    placement.apply_threads()
    _check_not_overwriting(args)
    tokenizer = _tokenizer(args)
    train_records, held = _records(args)
    if not (args.resume or args.base or args.hf):
        raise SystemExit("give --base or --hf (or --resume a checkpoint)")
    source = None if args.resume else _source(args)
    _fit_seq_len(args, read_config(args.resume) if args.resume else source.config())
    exp = ExperimentData.from_records(tokenizer, train_records, held, seq_len=args.seq_len, style=args.style)
    if args.resume:  # the saved training settings continue; only the display follows this command line
        tokenizer.check_model(read_config(args.resume), args.resume)
        trainer = Trainer(None, exp.train, checkpoint=args.out, eval_data=exp.eval, resume=args.resume,
                          placement=placement, progress=args.progress)
        print(f"resuming {args.resume} at step {trainer.step} of {trainer.config.steps}")
    else:
        tokenizer.check_model(source.config(), args.base or args.hf)   # before the model is loaded
        model = source.load(placement)
        names = layers.select(model.config, **_selection(args))
        model.train_only(sorted(names))
        print(layers.report(model.config, names)[0].splitlines()[-1].replace("all", "training", 1))
        trainer = Trainer(model, exp.train, _train_config(args), checkpoint=args.out, eval_data=exp.eval)
    print(f"{len(exp.train):,} training rows, {exp.train.counted:,} answer tokens; checkpoint {args.out}")
    tracker = tracking.from_args(args)
    tracked = tracker.start(os.path.splitext(os.path.basename(args.out))[0],
                            {"train": trainer.config.to_dict(), "selection": None if args.resume else _selection(args),
                             "data": args.data}) if tracker else None
    trainer.on_step = tracked.on_step if tracked else None
    t0 = time.perf_counter()
    trainer.fit()
    last = trainer.history[-1] if trainer.history else {"loss": float("nan")}
    held_out = eval_loss(trainer.model, exp.eval, trainer.config.micro) if exp.eval is not None else float("nan")
    if tracked:
        tracked.on_eval({"eval_loss": held_out}, trainer.step)
        tracked.on_end(trainer)
    print(f"done: step {trainer.step}, train loss {last['loss']:.4f}, held-out loss {held_out:.4f} "
          f"({time.perf_counter() - t0:.0f} s); saved {args.out}")
    return 0


def cmd_eval(args) -> int:
    if args.json:
        _check_writable(args.json)
    placement = placement_from_args(args)
    model = load(args.checkpoint, placement=placement)[0]
    tokenizer = _tokenizer(args)
    tokenizer.check_model(model.config, args.checkpoint)
    _, held = _records(args)
    _fit_seq_len(args, model.config)
    exp = ExperimentData.from_records(tokenizer, [], held, seq_len=args.seq_len, style=args.style,
                                      n_prompts=args.n_prompts)
    exp.drop_long(model.config.max_position_embeddings, lambda m: print(m, file=sys.stderr))
    cfg = EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size, temperature=args.temperature,
                     seed=args.gen_seed)
    rate, answers = generated_rate(model, tokenizer, exp.prompts, **cfg.generation(), progress=args.progress)
    loss = eval_loss(model, exp.eval, args.gen_batch_size)
    print(f"ござる-rate {rate.rate:.3f}  95% CI [{rate.low:.3f}, {rate.high:.3f}]  ({rate.k}/{rate.n} answers)")
    print(f"held-out answer loss {loss:.4f} over {exp.eval.counted:,} tokens")
    if args.json:
        write_json_atomic(args.json, {
            "checkpoint": args.checkpoint, "data": args.data, "gozaru_rate": rate.rate, "rate_low": rate.low,
            "rate_high": rate.high, "k": rate.k, "n": rate.n, "eval_loss": loss, "eval_tokens": int(exp.eval.counted),
            "generation": cfg.generation(),
            "answers": [{"prompt": p, "answer": a} for p, a in zip(exp.prompts, answers)]})
        print(f"results: {args.json}")
    for prompt, answer in list(zip(exp.prompts, answers))[: args.show]:
        print(f"\n> {prompt.replace('<NL>', ' / ')}\n  {answer}")
    if args.base:
        base = load(args.base, placement=placement)[0]
        print("\n‖ΔW‖/‖W‖ vs the base (rows: embed, layers, top; columns: tensor kind)")
        print(change_grid(weight_change(base, model)).round(4).to_string(na_rep="·"))
    return 0


def _samples(k: int) -> int:
    if k < 0:
        raise ValueError(f"--samples must be >= 0 (answers sampled per prompt), got {k}")
    return k


def cmd_grid(args) -> int:
    _check_writable(args.out, is_folder=True)
    placement = placement_from_args(args)
    placement.apply_threads()
    with executor_from_args(args) as executor:  # first: a missing Ray or unreachable cluster fails at once
        tokenizer = _tokenizer(args)
        train_records, held, original = _records(args, originals=True)
        # on a cluster the runs read --base where it is (shared storage); the driver never loads it
        source = _source(args)
        _fit_seq_len(args, source.config())
        exp = ExperimentData.from_records(tokenizer, train_records, held, seq_len=args.seq_len, style=args.style,
                                          n_prompts=args.n_prompts)
        if original is not None:   # forgetting = loss increase on the polite originals of the held-out answers
            exp.original = data.sft_arrays(original, tokenizer, args.seq_len, style=args.style)
        grid = load_grid(args.grid) if args.grid else seed_grid(seeds=args.seeds, budgets=args.budgets)
        tokenizer.check_model(source.config(), args.base or args.hf)
        results = run(grid, source, exp, args.out, train=_train_config(args),
                      eval=EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size,
                                      samples=_samples(args.samples)),
                      progress=args.progress, executor=executor, placement=placement,
                      tracker=tracking.from_args(args))
    print()
    print(format_table(results))
    if args.plots:
        print("plots: " + ", ".join(plots.save_all(results, args.out)))
    print(f"results: {os.path.join(args.out, 'results.csv')}")
    return 0


def cmd_study(args) -> int:
    if args.action == "report":   # re-render from the folder's files, no training
        if not args.folder:
            raise SystemExit("gozaru study report: give the study folder (gozaru study report DIR [OTHER ...])")
        for folder in args.folder:
            if not os.path.exists(os.path.join(folder, "study.json")):
                raise SystemExit(f"gozaru study report: {folder} holds no study (no study.json)")
        print(f"report: {study_runner.render(args.folder[0])}")
        if len(args.folder) > 1:   # other studies (e.g. a larger base): position comparisons side by side
            from .study.report import write_sizes
            print(f"side by side: {write_sizes(args.folder, os.path.join(args.folder[0], 'sizes.md'))}")
        return 0
    if args.action is not None:
        raise SystemExit(f"gozaru study: unknown action {args.action!r} (only 'report DIR')")
    placement = placement_from_args(args)
    placement.apply_threads()
    if args.out is None:
        suffix = "" if args.arch == "gpt_neox" else f"-{args.arch}"
        args.out = f"runs/study{suffix}-quick" if args.quick else f"runs/study{suffix}"
    user = bool(args.base or args.hf)
    if user and not (args.data and args.tokenizer):
        raise SystemExit("gozaru study: --base/--hf need --data and --tokenizer (without them the demo base is used)")
    if args.preset == "reference":
        if not user:
            run_demo(args.out, quick=args.quick, progress=args.progress, placement=placement, arch=args.arch)
            return 0
        return cmd_grid(_with(args, grid=None, seeds=[0, 1, 2], budgets=[0.05, 0.10], plots=True, gozaru=True))
    spec = _study_spec(args)
    with executor_from_args(args) as executor:  # first: a missing Ray or unreachable cluster fails at once
        if not user:
            settings = dataclasses.replace(study_demo.demo_settings(args.quick, args.large_base), arch=args.arch)
            study_demo.demo_study(args.out, spec, settings, progress=args.progress, executor=executor,
                                  placement=placement, tracker=tracking.from_args(args))
            return 0
        return _user_study(args, spec, executor, placement)


def _user_study(args, spec, executor, placement) -> int:
    tokenizer = _tokenizer(args)
    loaded = list(data.load_dolly(hub.resolve(args.data, "dataset"), on_error="skip" if args.skip_bad else "raise"))
    fraction = min(args.eval_size, len(loaded) // 2) / max(len(loaded), 1)
    train_records, held = data.train_eval_split(loaded, eval_fraction=fraction, seed=args.split_seed)
    base = _source(args).load(placement)
    tokenizer.check_model(base.config, args.base or args.hf)
    spec.check(base.config)   # a bad definition fails before the data are encoded
    exp, goz_train = study_inputs.study_data(tokenizer, train_records, held, seq_len=args.seq_len, style=args.style,
                                      max_positions=base.config.max_position_embeddings, n_prompts=args.n_prompts,
                                      log=lambda m: print(m, file=sys.stderr))
    sizes = (f"{args.hf or args.base}; {args.data}: {len(exp.train):,} training rows, {len(exp.prompts)} prompts; "
             f"{args.steps} steps × {args.batch_size} per run.")
    study_runner.run_study(spec, base, exp, args.out, train=_train_config(args), examples=goz_train, sizes=sizes,
                    eval=EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size),
                    progress=args.progress, executor=executor, tracker=tracking.from_args(args),
                    data_key={k: getattr(args, k) for k in (
                        "data", "tokenizer", "gozaru", "style", "seq_len", "eval_size", "split_seed", "n_prompts")})
    return 0


def _study_spec(args) -> "study_spec.StudySpec":
    """Preset (quick / demo), then the JSON file, then single flags."""
    spec = study_spec.PRESETS["quick" if args.quick else "demo" if not (args.base or args.hf) else "default"]
    d = spec.to_dict()
    if args.spec:   # fields the file leaves out keep the preset's values
        d.update(study_spec.load_spec_fields(args.spec))
    if args.shares:
        d["shares"] = [_share_level(x) for x in args.shares]
    for name, field in (("positions", "positions"), ("types", "types"), ("margin", "margin"),
                        ("lr_factors", "sweep_factors"), ("sweep_steps", "sweep_steps")):
        if getattr(args, name) is not None:
            d[field] = getattr(args, name)
    if args.seeds is not None:
        d["seeds"] = list(range(args.seeds))
    return study_spec.StudySpec.from_dict(d).check()


def _share_level(text: str):
    if text in ("head", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"share level {text!r}: use head, all, a layer count or a fraction") from None


def _with(args, **changes):
    return argparse.Namespace(**{**vars(args), **changes})


def cmd_import_hf(args) -> int:
    _check_writable(args.out)
    model = Model.from_hf(hub.resolve(args.folder, "model"), placement=placement_from_args(args))
    model.save(args.out)
    print(f"{args.folder} -> {args.out}: {model.num_params:,} parameters")
    return 0


def cmd_export_hf(args) -> int:
    _check_writable(args.folder, is_folder=True)
    model = load(args.checkpoint, placement=placement_from_args(args))[0]
    tokenizer = None if args.no_tokenizer else load_tokenizer(_export_tokenizer_path(args))
    written = export_hf(model, args.folder, tokenizer=tokenizer, dtype=args.dtype,
                        max_shard_size=args.max_shard_size, merge_lora=args.merge_lora)
    print(f"{args.checkpoint} -> {args.folder}: {', '.join(sorted(written))} (load with "
          f"transformers.AutoModelForCausalLM / AutoTokenizer.from_pretrained)")
    if args.push_to_hub:
        print(f"pushed to {args.push_to_hub}: {push_to_hub(args.folder, args.push_to_hub, private=args.private)}")
    return 0


def _export_tokenizer_path(args) -> str:
    """--tokenizer, else a tokenizer beside the checkpoint or in ../base/ (the demo's layout)."""
    if args.tokenizer:
        return hub.resolve(args.tokenizer, "model")
    here = os.path.dirname(os.path.abspath(args.checkpoint))
    for folder in (here, os.path.join(here, "base"), os.path.join(os.path.dirname(here), "base")):
        for name in ("spiece.model", "tokenizer.json"):
            if os.path.isfile(os.path.join(folder, name)):
                print(f"tokenizer: {os.path.join(folder, name)}", file=sys.stderr)
                return os.path.join(folder, name)
    raise ValueError(f"no tokenizer found beside {args.checkpoint}: pass --tokenizer PATH (the one trained with), "
                     "or --no-tokenizer for the model files only")


def cmd_info(args) -> int:
    if args.system:
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
    """The run record a Trainer or experiment wrote into the checkpoint, in one to four lines."""
    try:
        record = RunRecord.from_payload(_core.read_checkpoint_meta(path)["extra"], path)
    except ValueError:
        return ""
    if record is None:
        return ""
    try:
        return _summary_lines(record)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:  # a record of odd shape
        return f"  training   run record unreadable ({type(e).__name__}: {e})"


def _summary_lines(record: RunRecord) -> str:
    lines = []
    if record.condition:
        lines.append(f"  condition  {record.condition.get('name')}: {record.condition.get('selection')}")
    cfg = record.train_config
    lines.append(f"  training   {cfg.get('steps')} steps × {cfg.get('batch_size')} rows, lr {cfg.get('lr')}, "
                 f"data seed {record.data_seed}, data cursor {record.cursor}")
    if record.placement:
        p = record.placement
        lines.append(f"  placement  {p.get('backend')}, {p.get('precision')}, {p.get('threads')} thread(s)")
    if record.history:
        lines.append(f"  loss       first {record.history[0]['loss']:.4f}, last {record.history[-1]['loss']:.4f} "
                     f"({len(record.history)} steps recorded)")
    return "\n".join(lines)


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "eval": cmd_eval, "grid": cmd_grid, "study": cmd_study,
            "import-hf": cmd_import_hf,
            "export-hf": cmd_export_hf, "info": cmd_info}


# What continues an interrupted command (printed after "interrupted"); commands not named have nothing to continue.
INTERRUPT_ADVICE = {
    "train": lambda a: f" (continue with the same command plus --resume {a.out}; rerunning it without --resume "
                       "is refused, --force starts over)",
    "grid": lambda a: " (rerun the same command to continue: finished runs are skipped)",
    "study": lambda a: " (rerun the same command to continue: finished runs are skipped)",
    "demo": lambda a: " (rerun the same command to continue)",
}


def main(argv=None) -> int:
    parser = build_parser(COMMANDS, __version__)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo" and args.out is None:
        suffix = "" if args.arch == "gpt_neox" else f"-{args.arch}"
        args.out = f"runs/demo{suffix}-quick" if args.quick else f"runs/demo{suffix}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted{INTERRUPT_ADVICE.get(args.command, lambda a: '')(args)}", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError, ArithmeticError, MemoryError, ImportError) as e:
        # Expected failures (bad files and arguments, a missing backend, divergence, NaN) as one line.
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"gozaru {args.command}: error: {message}", file=sys.stderr)
        return 1
