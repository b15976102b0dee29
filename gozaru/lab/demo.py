"""``gozaru demo``: the reference experiment end to end, offline, on a tiny model built here.

1. a synthetic Japanese corpus (``gozaru.data.SyntheticCorpus``) and a small SentencePiece tokenizer trained on it;
2. a tiny *base* — GPT-NeoX, or with ``arch="llama"`` / ``"qwen2"`` a Llama / Qwen2-shaped one (RMSNorm,
   SwiGLU, grouped-query attention with half as many kv heads) — pretrained on plain prose plus polite (です/ます)
   instruction pairs, cached in ``<out>/base`` so a second run reuses it;
3. the 13-run grid (``gozaru.experiment.seed_grid``) fine-tuned on the ござる-rewritten pairs, each run from the
   same base, evaluated on held-out prompts; results table, plots, checkpoints and CSV in ``<out>``.

Budgets: on rinna-3.6b one layer is 2.6 % of the weights and the head 2.5 %, so the reference's 5 % / 10 %
mean "1 layer + head" / "3 layers + head". A tiny model's head and layers are far bigger shares (one layer of
this 8-layer model is ~9 %), so 5 % / 10 % would select the head alone. The demo therefore sets its two budget
levels to the shares of ``layer_counts`` whole layers + head (1 and 2 by default) and names the conditions by
the share they really train.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Callable

import numpy as np

from .. import data
from ..data.rows import Rows
from ..data.tokenizer import Tokenizer
from ..engine import layers
from ..engine.checkpoint import load
from ..engine.config import MODEL_TYPES, ModelConfig
from ..engine.model import Model
from ..engine.placement import Placement
from ..fileio import write_json_atomic
from . import plots as plotting
from .evaluate import EvalConfig
from .experiment import Condition, ExperimentData, fmt, run, seed_grid
from .train import TrainConfig, Trainer


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    # model and tokenizer
    arch: str = "gpt_neox"          # the base's family: a model_type of gozaru.engine.config.MODEL_TYPES
    vocab_size: int = 1024          # upper bound for the tokenizer (the model uses the size it reaches)
    hidden_size: int = 64
    num_layers: int = 8
    num_heads: int = 4
    intermediate_size: int = 256
    seq_len: int = 64
    # base pretraining: prose (plain LM) + polite instruction pairs (answers only)
    n_prose: int = 4000
    n_pretrain_pairs: int = 6000
    pretrain_steps: int = 500
    pretrain_batch: int = 32
    pretrain_lr: float = 3e-3
    # fine-tuning (every grid run)
    n_finetune_pairs: int = 1500
    finetune_steps: int = 40
    finetune_batch: int = 16
    finetune_lr: float = 2e-3
    # evaluation
    n_eval: int = 200               # held-out ござる pairs for eval loss
    n_prompts: int = 100            # held-out prompts whose generated answers give the ござる-rate
    n_plain: int = 200              # plain prose texts for forgetting
    n_facts: int = 50               # fact questions for recall
    max_new_tokens: int = 32
    # grid
    layer_counts: tuple[int, int] = (1, 2)  # whole layers (+ head) of the two budget levels
    seeds: tuple[int, ...] = (0, 1, 2)
    corpus_seed: int = 0

    def base_key(self) -> dict:
        """The settings the cached base depends on."""
        keys = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "seq_len", "n_prose",
                "n_pretrain_pairs", "pretrain_steps", "pretrain_batch", "pretrain_lr", "corpus_seed")
        return {**{k: getattr(self, k) for k in keys}, **self._family()}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("arch")
        d["layer_counts"], d["seeds"] = list(self.layer_counts), list(self.seeds)
        return {**d, **self._family()}

    def _family(self) -> dict:
        """{"arch": ...} for a Llama / Qwen2 base; nothing for GPT-NeoX, so bases and demo folders made before
        the families existed still match their settings."""
        return {} if self.arch == "gpt_neox" else {"arch": self.arch}


SETTINGS = {
    "default": DemoSettings(),
    "quick": DemoSettings(vocab_size=768, hidden_size=48, num_layers=4, num_heads=4, intermediate_size=192,
                          seq_len=64, n_prose=1000, n_pretrain_pairs=1500, pretrain_steps=200, pretrain_batch=24,
                          pretrain_lr=4e-3, n_finetune_pairs=400, finetune_steps=20, finetune_batch=16,
                          finetune_lr=4e-3, n_eval=48, n_prompts=32, n_plain=48, n_facts=16, max_new_tokens=24),
}


# --------------------------------------------------------------------------- the pieces
def corpus(settings: DemoSettings):
    return data.SyntheticCorpus(settings.corpus_seed)


def model_config(settings: DemoSettings, vocab_size: int):
    if settings.arch not in MODEL_TYPES:
        raise ValueError(f"demo arch {settings.arch!r} is unknown; choose one of {', '.join(MODEL_TYPES)}")
    family = {} if settings.arch == "gpt_neox" else {"num_key_value_heads": max(1, settings.num_heads // 2)}
    return ModelConfig(model_type=settings.arch, vocab_size=vocab_size, hidden_size=settings.hidden_size,
                       num_hidden_layers=settings.num_layers, num_attention_heads=settings.num_heads,
                       intermediate_size=settings.intermediate_size,
                       max_position_embeddings=max(128, 2 * settings.seq_len), **family)


def build_tokenizer(settings: DemoSettings, folder: str, texts=None):
    """The demo tokenizer (``<folder>/spiece.model``), trained on the corpus on first use."""
    path = os.path.join(folder, "spiece.model")
    if os.path.exists(path):
        return Tokenizer.load(path)
    if texts is None:
        c = corpus(settings)
        pairs = c.instructions(settings.n_pretrain_pairs, seed=1)
        texts = c.pretrain_texts(settings.n_prose) + [f"{r.instruction}\n{r.input}\n{r.output}" for r in pairs]
        texts += [data.to_gozaru(r.output) for r in pairs[:500]]  # so ござる forms get their own pieces
    os.makedirs(folder, exist_ok=True)
    tok = Tokenizer.train(texts, vocab_size=settings.vocab_size, seed=settings.corpus_seed)
    tok.save(path)  # atomic
    return tok


def pretrain_rows(settings: DemoSettings, tokenizer) -> Rows:
    """Plain prose as a language-model stream plus polite instruction pairs (answers only), one row set."""
    c = corpus(settings)
    prose = data.lm_arrays(c.pretrain_texts(settings.n_prose), tokenizer, settings.seq_len)
    pairs = data.sft_arrays(c.instructions(settings.n_pretrain_pairs, seed=1), tokenizer, settings.seq_len)
    return Rows(np.concatenate([prose.tokens, pairs.tokens]), np.concatenate([prose.targets, pairs.targets]))


def build_base(settings: DemoSettings, folder: str, *, progress: bool = True, log: Callable[[str], None] = print,
               placement: Placement | None = None):
    """(tokenizer, base model placed as ``placement`` says): loaded from ``folder`` when it holds a base built with
    the same settings, otherwise trained there (resumable: an interrupted pretraining continues from its
    checkpoint)."""
    placement = placement or Placement()
    key_path, base_path = os.path.join(folder, "settings.json"), os.path.join(folder, "base.h5")
    key = settings.base_key()
    if os.path.exists(key_path):
        with open(key_path, encoding="utf-8") as f:
            if json.load(f) != key:
                log(f"{folder} holds a base built with other settings: rebuilding it")
                shutil.rmtree(folder)
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(key_path):
        write_json_atomic(key_path, key)
    tokenizer = build_tokenizer(settings, folder)
    if os.path.exists(base_path):
        log(f"base model: reusing {base_path}")
        return tokenizer, load(base_path, placement=placement)[0]
    rows = pretrain_rows(settings, tokenizer)
    cfg = model_config(settings, tokenizer.vocab_size)
    partial = os.path.join(folder, "pretrain.partial.h5")
    config = TrainConfig(steps=settings.pretrain_steps, batch_size=settings.pretrain_batch, lr=settings.pretrain_lr,
                         warmup_steps=max(1, settings.pretrain_steps // 20), min_lr_ratio=0.1, max_grad_norm=1.0,
                         checkpoint_every=100, progress=progress)
    if os.path.exists(partial):
        log(f"base model: continuing the interrupted pretraining in {partial}")
        trainer = Trainer(None, rows, config, checkpoint=partial, resume=partial, save_at_end=False,
                          placement=placement)
    else:
        model = Model(cfg, seed=settings.corpus_seed, placement=placement)
        model.train_all()
        log(f"base model: pretraining {model.num_params:,} parameters ({cfg.num_hidden_layers} layers, hidden "
            f"{cfg.hidden_size}, vocab {cfg.vocab_size}) for {settings.pretrain_steps} steps on "
            f"{len(rows):,} rows of prose and polite instruction pairs")
        trainer = Trainer(model, rows, config, checkpoint=partial, save_at_end=False)
    t0 = time.perf_counter()
    trainer.fit()
    model = trainer.model
    model.freeze_all()  # a base trains nothing until a condition says what
    model.save(base_path, step=trainer.step, tokens_seen=trainer.tokens_seen,
               extra={"kind": "gozaru.demo.base", "history": trainer.history, "settings": key})
    if os.path.exists(partial):  # a pretraining shorter than checkpoint_every never wrote one
        os.remove(partial)
    log(f"base model: final loss {trainer.history[-1]['loss']:.3f} after {trainer.tokens_seen:,} tokens "
        f"({time.perf_counter() - t0:.0f} s); saved to {base_path}")
    return tokenizer, model


def experiment_data(settings: DemoSettings, tokenizer) -> ExperimentData:
    """ござる-rewritten fine-tuning pairs, held-out ござる pairs and prompts, plain prose and fact questions."""
    c = corpus(settings)
    train = data.to_gozaru_dataset(c.instructions(settings.n_finetune_pairs, seed=2), drop_unchanged=True)
    polite = [r for r in c.instructions(max(settings.n_eval, settings.n_prompts), seed=3)
              if data.to_gozaru(r.output) != r.output]
    held_out = data.to_gozaru_dataset(polite)
    facts = c.train_questions(seed=0)[: settings.n_facts]
    exp = ExperimentData.from_records(tokenizer, train, held_out[: settings.n_eval], seq_len=settings.seq_len,
                                      plain_texts=c.pretrain_texts(settings.n_plain, seed=9), facts=facts,
                                      n_prompts=settings.n_prompts)
    # forgetting: the loss increase on the same held-out answers in their original polite form
    exp.original = data.sft_arrays(polite[: settings.n_eval], tokenizer, settings.seq_len)
    return exp


def demo_budgets(config, layer_counts=(1, 2)) -> list[float]:
    """Budgets (rounded to 0.5 %) at which ``first``/``last``/``random`` select ``layer_counts`` whole layers
    plus the head on a model of ``config``."""
    counts = layers.param_counts(config)
    total = sum(counts.values())
    per_layer = sum(counts[n] for n in layers.layer_names(config, 0))
    budgets = []
    for k in layer_counts:
        b = round((counts[layers.head_name(config)] + k * per_layer) / total * 200) / 200
        if layers.layers_for_budget(config, b) != k:
            raise ValueError(f"no budget selects exactly {k} layers on this model")
        budgets.append(b)
    return budgets


def demo_grid(config, settings: DemoSettings) -> list[Condition]:
    """The reference grid at the demo's budgets, plus a rank-8 LoRA on the first budget's last layers: full
    weights or an adapter on the same layers, side by side."""
    budgets = demo_budgets(config, settings.layer_counts)
    lora = Condition(f"last {budgets[0] * 100:g}% lora8", {"kind": "last", "budget": budgets[0], "lora": {"r": 8}},
                     group="lora", position="last")
    return seed_grid(seeds=settings.seeds, budgets=budgets) + [lora]


# --------------------------------------------------------------------------- the whole demo
def run_demo(out: str = "runs/demo", *, quick: bool = False, settings: DemoSettings | None = None,
             placement: Placement | None = None, progress: bool = True, plots: bool = True, fresh: bool = False,
             arch: str | None = None, log: Callable[[str], None] = print):
    """Runs the demo into ``out`` and returns the results table (pandas DataFrame); every model is placed as
    ``placement`` says (backend, precision, threads; default: the CPU in fp32, the current threads). ``arch``
    (a model_type) replaces the settings' family."""
    t0 = time.perf_counter()
    settings = settings or SETTINGS["quick" if quick else "default"]
    if arch is not None:
        settings = dataclasses.replace(settings, arch=arch)
    _check_folder(out, settings, fresh, log)
    tokenizer, base = build_base(settings, os.path.join(out, "base"), progress=progress, log=log,
                                 placement=placement)
    data = experiment_data(settings, tokenizer)
    grid = demo_grid(base.config, settings)
    budgets = demo_budgets(base.config, settings.layer_counts)
    log(f"budgets: {' and '.join(f'{b:.1%}' for b in budgets)} of the weights = "
        f"{' and '.join(map(str, settings.layer_counts))} whole layers + head on this model (the reference's "
        f"5 % / 10 % would select the head alone here; see docs/lab.md)")
    log(f"grid: {len(grid)} conditions, each fine-tuned for {settings.finetune_steps} steps × "
        f"{settings.finetune_batch} pairs on {len(data.train):,} ござる pairs; ござる-rate on {len(data.prompts)} "
        f"held-out prompts (greedy answers)")
    train = TrainConfig(steps=settings.finetune_steps, batch_size=settings.finetune_batch, lr=settings.finetune_lr,
                        warmup_steps=max(1, settings.finetune_steps // 10), min_lr_ratio=0.1, max_grad_norm=1.0,
                        checkpoint_every=max(10, settings.finetune_steps // 2), progress=progress)
    results = run(grid, base, data, out, train=train,
                  eval=EvalConfig(max_new_tokens=settings.max_new_tokens, batch_size=32),
                  progress=progress, log=log)
    log("")
    log(format_table(results))
    if plots:
        paths = plotting.save_all(results, out)
        log("\nplots: " + ", ".join(paths))
    log(f"results: {os.path.join(out, 'results.csv')}; models and per-run records: {os.path.join(out, 'runs')}")
    log(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return results


def format_table(results) -> str:
    """The results table as printed by the demo: one line per run, base first."""
    import pandas as pd
    frame = pd.DataFrame(results)
    lines = [f"{'condition':<18} {'trained':>8} {'ござる-rate [95% CI]':>22} {'eval loss':>9} "
             f"{'forgetting':>10} {'facts':>6} {'train s':>7}"]
    for _, r in frame.iterrows():
        ci = f"{r['gozaru_rate']:.2f} [{r['rate_low']:.2f}, {r['rate_high']:.2f}]"
        lines.append(f"{r['name']:<18} {r['trainable_pct']:>7.1f}% {ci:>24} {r['eval_loss']:>9.3f} "
                     f"{fmt(r['forgetting'], '+.3f'):>10} {fmt(r['fact_recall'], '.2f'):>6} "
                     f"{r['train_seconds']:>7.1f}")
    return "\n".join(lines)


def _check_folder(out: str, settings: DemoSettings, fresh: bool, log):
    """One folder holds one demo: other settings need --fresh (or another --out)."""
    path = os.path.join(out, "demo.json")
    if fresh:
        for name in ("runs", "plots", "results.csv", "demo.json"):
            p = os.path.join(out, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved != settings.to_dict():
            raise ValueError(f"{out} holds a demo run with other settings; use --fresh to start it over "
                             f"or --out to pick another folder")
        log(f"continuing the demo in {out} (finished runs are skipped)")
        return
    os.makedirs(out, exist_ok=True)
    write_json_atomic(path, settings.to_dict())
