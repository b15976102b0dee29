"""The ``gozaru`` command line's arguments (the commands themselves are in ``gozaru.lab.cli``).

Training defaults come from ``TrainConfig``, the one place they live.
"""
from __future__ import annotations

import argparse
from typing import Callable, NamedTuple

from .. import _core
from ..engine.config import MODEL_TYPES
from ..engine.layers import SELECTION_KINDS
from ..engine.placement import Placement
from .train import TrainConfig

EPILOG_MAIN = """\
Start here:
  gozaru demo                  the whole reference experiment offline on a tiny model (a few minutes)
  gozaru demo --quick          the same, smaller (under a minute)
  gozaru demo --arch llama     the same on a Llama-shaped base

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



FMT = argparse.RawDescriptionHelpFormatter


# --------------------------------------------------------------------------- shared options
def _add_placement(p, backend=True):
    """Where and how the command's models compute: one Placement (``placement_from_args``)."""
    g = p.add_argument_group("placement (where and how the models compute)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the engine (default: the OpenMP default, usually all cores)")
    if backend:
        g.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                       help="where the model runs (cuda needs a CUDA build; default cpu)")
    g.add_argument("--precision", choices=_core.PRECISIONS, default=None,
                   help="how Linear layers compute: fp32 (CPU default), bf16 (needs AVX512-BF16 or AMX-BF16; "
                        "GOZARU_BF16_EMULATE=1 falls back to bf16-emulated), or bf16-emulated (same rounding "
                        "on any CPU, slow). Weights, gradients and optimizer state stay fp32")


def placement_from_args(args) -> Placement:
    """The one Placement of a command, from its --backend, --precision and --threads."""
    return Placement(backend=getattr(args, "backend", None) or "cpu", precision=getattr(args, "precision", None),
                     threads=getattr(args, "threads", None) or None)


def _add_progress(p):
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")


def _add_data(p, needed=True):
    g = p.add_argument_group("data")
    g.add_argument("--data", required=needed, metavar="PATH",
                   help="instruction data in the dolly-ja layout: a .json array, .jsonl, .parquet, a folder of them, "
                   "or a Hugging Face dataset id (from the local hub cache)")
    g.add_argument("--tokenizer", required=needed, metavar="PATH",
                   help="the tokenizer: a SentencePiece spiece.model, an HF tokenizer.json, a folder holding either "
                   "(e.g. the HF model folder) or a Hugging Face model id")
    g.add_argument("--gozaru", action="store_true",
                   help="rewrite the answers into ござる speech first (です→でござる, ます→ござる …)")
    g.add_argument("--style", choices=("rinna", "alpaca", "chat"), default="rinna",
                   help="prompt format: rinna 'ユーザー: …<NL>システム: ' (default), alpaca-ja '### 指示:', or chat: "
                        "the tokenizer's chat template from tokenizer_config.json")
    g.add_argument("--seq-len", type=int, default=256, help="tokens per training row (default 256)")
    g.add_argument("--eval-size", type=int, default=200,
                   help="records held out for evaluation (default 200; the split is seeded by --split-seed)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/eval split (default 0)")
    g.add_argument("--skip-bad", action="store_true", help="skip malformed records (counted and reported)")


def _add_training(p):
    d = TrainConfig()
    steps = d.steps
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"sequences per optimizer step (default {d.batch_size})")
    g.add_argument("--micro-batch-size", type=int, default=d.micro_batch_size,
                   help="sequences per forward/backward; smaller than --batch-size accumulates gradients "
                        "(default: no accumulation)")
    g.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    g.add_argument("--warmup", type=int, default=d.warmup_steps,
                   help=f"linear warmup steps before the cosine decay (default {d.warmup_steps})")
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                   help=f"cosine floor as a share of --lr (default {d.min_lr_ratio:g})")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"AdamW weight decay (default {d.weight_decay:g})")
    g.add_argument("--clip", type=float, default=d.max_grad_norm,
                   help=f"global gradient-norm clipping, 0 = off (default {d.max_grad_norm:g})")
    g.add_argument("--seed", type=int, default=d.seed, help=f"data-order seed (default {d.seed})")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help=f"steps between checkpoints (default {d.checkpoint_every})")
    g.add_argument("--pack", action="store_true", default=d.pack,
                   help="pack several training examples into each row, each attending only to itself with "
                        "positions from 0 (same loss and gradients, less padding); --batch-size then counts "
                        "packed rows (default: one example per row)")


def _add_generation(p, sampling=False):
    """How held-out prompts are answered (eval, grid, study); eval's answers may also be sampled."""
    p.add_argument("--n-prompts", type=int, default=100, help="held-out prompts per ござる-rate (default 100)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    if sampling:
        p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
        p.add_argument("--gen-seed", type=int, default=0, help="sampling seed when --temperature > 0")
    p.add_argument("--gen-batch-size", type=int, default=16, help="prompts per generation batch (default 16)")


def add_tracking_options(p):
    """Where training metrics go besides the run records (gozaru.lab.tracking; pip install "gozaru[tracking]")."""
    g = p.add_argument_group('tracking (pip install "gozaru[tracking]")')
    g.add_argument("--tensorboard", metavar="DIR",
                   help="write TensorBoard event files into DIR (one subfolder per run): loss, lr, grad norm, "
                        "tokens/s, evaluation")
    g.add_argument("--mlflow", nargs="?", const="", default=None, metavar="TRACKING_URI",
                   help="log to MLflow: no URI uses mlflow's own default (MLFLOW_TRACKING_URI, else its local "
                        "store: mlflow.db here), or e.g. sqlite:///runs.db, http://host:5000")
    g.add_argument("--mlflow-experiment", default="gozaru", metavar="NAME",
                   help="MLflow experiment name (default gozaru)")


def add_export_options(p):
    """export-hf's choices: tokenizer, dtype, shards, LoRA merge, Hub push."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tokenizer", metavar="PATH",
                   help="the tokenizer trained with (spiece.model, tokenizer.json or a folder with either); its "
                        "files are written beside the weights (default: the one beside the checkpoint or in "
                        "../base/, as `gozaru demo` lays them out)")
    g.add_argument("--no-tokenizer", action="store_true", help="write the model files only")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="weight precision in the files (default fp32, the training precision)")
    p.add_argument("--max-shard-size", metavar="SIZE", default=None,
                   help="split the weights into shards of at most SIZE (HF's size strings: 500MB, 5GB) with "
                        "model.safetensors.index.json (default: one file)")
    p.add_argument("--merge-lora", action="store_true",
                   help="a LoRA checkpoint: write the base with the adapters merged in (W + scale·B·A)")
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="upload the folder to this Hub model repository (org/name; created when missing) through "
                        "huggingface_hub (token: HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")


def add_cluster_options(p):
    """Where the runs execute: this process (default) or a Ray cluster. For every command that runs a grid."""
    g = p.add_argument_group("cluster (Ray; pip install \"gozaru[ray]\"; see docs/cluster.md)")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each condition as a Ray task: no ADDRESS starts a Ray instance on this machine, "
                        "'auto' joins the running cluster, host:port joins that one")
    g.add_argument("--cpus-per-run", type=_positive_int, default=1, metavar="N",
                   help="CPUs each run reserves, and its engine threads (default 1)")
    g.add_argument("--gpus-per-run", type=float, default=0, metavar="N",
                   help="GPUs each run reserves (default 0; use 1 with --backend cuda)")
    g.add_argument("--max-retries", type=int, default=3, metavar="N",
                   help="times a run is retried when its worker or node dies (default 3)")
    g.add_argument("--transfer", choices=("storage", "object-store"), default="storage",
                   help="how the base and the data reach the runs: files every node sees (the base where it is, "
                        "the data under OUT/inputs; default) or Ray's object store")


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return n


def _add_model_source(p, required=True, resume=False):
    """--base CKPT | --hf DIR|ID (and, for train, --resume CKPT): one of them names the model to start from."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--base", metavar="CKPT", help="the model to start from: a gozaru .h5 checkpoint")
    g.add_argument("--hf", metavar="DIR|ID",
                   help="the model to start from: an HF GPT-NeoX / Llama / Qwen2 folder or Hub id")
    if resume:
        g.add_argument("--resume", metavar="CKPT",
                       help="continue a checkpoint written by an interrupted `gozaru train`")


def _add_arch(p, help):
    p.add_argument("--arch", choices=MODEL_TYPES, default="gpt_neox", help=help)


def _add_selection(p):
    s = p.add_argument_group("what to train")
    s.add_argument("--select", default="full",
                   choices=SELECTION_KINDS, help="tensor group to train (default full)")
    s.add_argument("--budget", type=float, help="first/last/random: share of all weights, e.g. 0.05")
    s.add_argument("--layers", type=int, nargs="+", help="first/last/random: a layer count; layers: the indices")
    s.add_argument("--pattern", help="pattern: a regex over tensor names")
    s.add_argument("--select-seed", type=int, default=0, help="random: seed of the layer choice")
    s.add_argument("--no-head", action="store_true", help="do not add the LM head to the selection")


def _add_study_design(p):
    """The study's own options: its preset, definition file and single fields."""
    p.add_argument("--out", default=None, help="output folder (default runs/study, or runs/study-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="a tiny study on the quick demo model (a few minutes)")
    p.add_argument("--large-base", action="store_true", help="the demo study on a second base of ~10x the parameters")
    p.add_argument("--preset", choices=("study", "reference"), default="study",
                   help="study (default) or reference: the 13-run grid of the reference experiment")
    p.add_argument("--spec", metavar="JSON", help="the study definition as a JSON file (fields of StudySpec)")
    p.add_argument("--shares", nargs="+", metavar="LEVEL", help="share levels: head, all, layer counts or fractions")
    p.add_argument("--positions", nargs="+", help="first middle last random")
    p.add_argument("--types", nargs="+", help="layers attention mlp")
    p.add_argument("--seeds", type=int, metavar="N", help="seeds per cell (0..N-1)")
    p.add_argument("--margin", type=float, help="equivalence margin in rate units (default 0.05 = ±5 points)")
    p.add_argument("--lr-factors", type=float, nargs="+", help="the sweep's learning rates as multiples of --lr "
                   "(log-spaced, >= 5; spec field sweep_factors)")
    p.add_argument("--sweep-steps", type=int, help="steps per learning-rate candidate")


# --------------------------------------------------------------------------- commands
def _add_running(p, cluster=False, tracking=False):
    """The options every command that computes ends with, in one order: placement, the progress bars, then the
    Ray cluster (the commands that run a grid) and tracking (the commands that train)."""
    _add_placement(p)
    _add_progress(p)
    if cluster:
        add_cluster_options(p)
    if tracking:
        add_tracking_options(p)


def _demo_arguments(p):
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-quick with --quick; "
                   "runs/demo-llama… for another --arch)")
    p.add_argument("--quick", action="store_true", help="a smaller model and shorter runs (under a minute)")
    _add_arch(p, "the base's family: GPT-NeoX, or a Llama / Qwen2-shaped base (RMSNorm, SwiGLU, grouped-query "
              "attention)")
    p.add_argument("--fresh", action="store_true", help="delete earlier results in OUT first (the base is kept)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    _add_running(p)


def _train_arguments(p):
    _add_model_source(p, required=False, resume=True)
    p.add_argument("--force", action="store_true", help="overwrite an existing --out (without it a plain rerun is "
                   "refused: an interrupted run continues with --resume)")
    _add_data(p)
    _add_selection(p)
    _add_training(p)
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write (HDF5)")
    _add_running(p, tracking=True)


def _eval_arguments(p):
    p.add_argument("checkpoint", help="a gozaru .h5 checkpoint")
    _add_data(p)
    p.add_argument("--base", metavar="CKPT", help="the base checkpoint, to show how far each tensor moved")
    _add_generation(p, sampling=True)
    p.add_argument("--show", type=int, default=5, help="sample answers to print (default 5)")
    p.add_argument("--json", metavar="FILE", help="also write the results (rate, interval, loss, answers) as JSON")
    _add_running(p)


def _grid_arguments(p):
    _add_model_source(p)
    _add_data(p)
    p.add_argument("--out", required=True, help="experiment folder")
    p.add_argument("--grid", metavar="JSON", help="your own list of conditions (default: the reference grid)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the random conditions")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.10], help="weight shares of first/last/random")
    _add_generation(p)
    p.add_argument("--samples", type=int, default=4, metavar="K",
                   help="answers sampled at T = 1 per prompt for the sampled ござる-rate, as the study measures it "
                        "(default 4; 0 = greedy rate only)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    _add_training(p)
    _add_running(p, cluster=True, tracking=True)


def _study_arguments(p):
    p.add_argument("action", nargs="?", choices=("report",), help="report DIR: re-render DIR/report.md from its files")
    p.add_argument("folder", nargs="*", help="report's study folder; more folders (e.g. a larger base's study): "
                   "their position comparisons side by side in the first's sizes.md")
    _add_study_design(p)
    _add_arch(p, "the demo base's family when neither --base nor --hf is given")
    _add_model_source(p, required=False)
    _add_data(p, needed=False)
    _add_generation(p)
    _add_training(p)
    _add_running(p, cluster=True, tracking=True)


def _import_hf_arguments(p):
    p.add_argument("folder", help="HF model folder (e.g. a local copy of rinna/japanese-gpt-neox-3.6b) or a Hub id "
                   "(from the local hub cache, else downloaded unless HF_HUB_OFFLINE=1)")
    p.add_argument("out", help="checkpoint to write (.h5)")
    _add_placement(p)


def _export_hf_arguments(p):
    p.add_argument("checkpoint", help="a gozaru .h5 checkpoint")
    p.add_argument("folder", help="folder to write")
    add_export_options(p)
    _add_placement(p)


def _info_arguments(p):
    p.add_argument("checkpoints", nargs="*", help="gozaru .h5 checkpoints")
    p.add_argument("--system", action="store_true",
                   help="describe this machine instead: BLAS and its kernel, threads, OpenMP, CPU features, backends")


class _Command(NamedTuple):
    arguments: Callable[[argparse.ArgumentParser], None]
    help: str                   # its line in `gozaru --help`
    description: str            # above the options in `gozaru COMMAND --help`
    epilog: str | None = None   # below them: examples


# The commands, in the order `gozaru --help` lists them.
_COMMANDS = {
    "demo": _Command(
        _demo_arguments, "run the reference experiment offline on a tiny model",
        "Builds a synthetic Japanese corpus and tokenizer, pretrains a tiny GPT-NeoX (or, with --arch, Llama / "
        "Qwen2) base (cached in OUT/base), fine-tunes it 14 ways (the 13 reference conditions and a rank-8 LoRA) on "
        "ござる-rewritten instructions and prints the ござる-rate of each. Writes results.csv, plots/*.png and one "
        "checkpoint per run into OUT; rerunning continues where it stopped."),
    "train": _Command(
        _train_arguments, "fine-tune chosen tensors of a model on instruction data",
        "Fine-tunes the tensors chosen by --select (see gozaru.layers) on dolly-layout data, answers only. Writes "
        "the checkpoint --out every --checkpoint-every steps, at the end and on Ctrl-C; --resume continues one "
        "exactly.",
        "examples:\n  gozaru train --base base.h5 --tokenizer spiece.model --data d.jsonl --gozaru --select mlp "
        "--out mlp.h5\n  gozaru train --resume mlp.h5 --tokenizer spiece.model --data d.jsonl --gozaru --out mlp.h5"),
    "eval": _Command(
        _eval_arguments, "ござる-rate and held-out loss of a checkpoint",
        "Generates answers to the held-out prompts of --data (the same split as train and grid use) and reports "
        "the ござる-rate with its Wilson 95 % interval and the held-out answer loss; with --base also ‖ΔW‖/‖W‖ per "
        "layer and tensor kind."),
    "grid": _Command(
        _grid_arguments, "run the 13-condition grid (or your own) on your data",
        "Trains every condition from the same base, evaluates it and writes OUT/results.csv, "
        "OUT/runs/<condition>.h5/.json and plots. Interrupt it at any time and rerun the same command: finished "
        "conditions are skipped.",
        'grid file example (JSON):\n  [{"name": "last 2", "selection": {"kind": "last", "layers": 2}},\n   '
        '{"name": "attention", "selection": {"kind": "attention"}, "hparams": {"lr": 3e-4}},\n   '
        '{"name": "lora last 10%", "selection": {"kind": "last", "budget": 0.1, "lora": {"r": 8, "alpha": 16}}}]'),
    "study": _Command(
        _study_arguments, "the dose-response study: share × position × type × seeds",
        "How much, where and what must be trained for ござる style: trains every cell (share level × position × "
        "type) with several seeds, picks a learning rate per share level by a short sweep, and writes tables, "
        "plots, statistics and OUT/report.md. Without --base/--hf it runs on the offline demo base. Rerunning "
        "continues where it stopped.",
        "examples:\n  gozaru study --quick\n  gozaru study --out results/study-demo\n"
        "  gozaru study --hf rinna/japanese-gpt-neox-3.6b --tokenizer rinna/japanese-gpt-neox-3.6b "
        "\\\n      --data kunishou/databricks-dolly-15k-ja --out runs/study-rinna --seeds 3\n"
        'study file (JSON): {"shares": ["head", 1, 2, 4, "all"], "positions": ["first", "last"], '
        '"types": ["layers", "mlp"], "seeds": [0, 1, 2], "margin": 0.05}'),
    "import-hf": _Command(
        _import_hf_arguments, "convert an HF GPT-NeoX / Llama / Qwen2 folder into a gozaru checkpoint",
        "Reads config.json and the weights (safetensors or pytorch .bin, sharded or not) of an HF GPT-NeoX, Llama "
        "or Qwen2 folder and writes a gozaru HDF5 checkpoint.",
        "example:\n  gozaru import-hf ~/models/japanese-gpt-neox-3.6b rinna.h5\n"
        "  (the tokenizer stays in the folder: pass it to train/eval/grid as --tokenizer)"),
    "export-hf": _Command(
        _export_hf_arguments, "write a checkpoint as an HF folder (transformers loads it)",
        "Writes config.json, generation_config.json, the weights (safetensors, sharded with "
        "model.safetensors.index.json past --max-shard-size) and the tokenizer files, so that transformers' "
        "AutoModelForCausalLM and AutoTokenizer load the folder.",
        "examples:\n"
        "  gozaru export-hf runs/demo/runs/full.h5 full-hf --tokenizer runs/demo/base\n"
        "  gozaru export-hf runs/demo/runs/lora.h5 lora-hf --tokenizer runs/demo/base --merge-lora "
        "--dtype bf16 --max-shard-size 200MB\n"
        "  python -c \"import transformers as t; t.AutoModelForCausalLM.from_pretrained('full-hf')\""),
    "info": _Command(
        _info_arguments, "describe checkpoints without loading their weights",
        "Prints model shape, step, tokens seen, optimizer settings and, for checkpoints written by the trainer or "
        "an experiment, the training summary.",
        "example:\n  gozaru info runs/demo/base/base.h5 runs/demo/runs/*.h5"),
}


# --------------------------------------------------------------------------- parser
def build_parser(commands: dict, version: str) -> argparse.ArgumentParser:
    """The parser; ``commands`` maps each command name to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="gozaru", formatter_class=FMT, epilog=EPILOG_MAIN,
        description="Fine-tuning lab for GPT-NeoX models: which layers must be trained for a model to learn a style?")
    parser.add_argument("--version", action="version", version=f"gozaru {version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, c in _COMMANDS.items():
        p = sub.add_parser(name, formatter_class=FMT, help=c.help, description=c.description, epilog=c.epilog)
        c.arguments(p)
        p.set_defaults(func=commands[name])
    return parser
