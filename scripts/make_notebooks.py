"""Writes notebooks/*.ipynb from the cell sources below (edit here, then run: python scripts/make_notebooks.py).

Keeping the sources in one Python file makes the notebooks reviewable as plain text; the .ipynb files are
generated without outputs. Every notebook reads GOZARU_QUICK=1 for the small settings the test suite uses.
"""
from __future__ import annotations

import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


QUICKSTART = [
    md("""
# gozaru quickstart: data → train → generate → ござる-rate

A tiny GPT-NeoX model learns to answer Japanese instructions in samurai speech (answers ending in 「ござる」).
Everything runs offline on the CPU in a minute or two: a synthetic instruction corpus, a SentencePiece tokenizer
trained on it, a model in gozaru's C engine, the `Trainer`, generation and the ござる-rate with its 95 % interval.

Set `GOZARU_QUICK=1` for an even smaller run (that is what the test suite does).
"""),
    code("""
import os
import gozaru as gz
from gozaru import data, layers
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab.train import Trainer, TrainConfig
from gozaru.lab.generate import generate_text
from gozaru.lab.evaluate import eval_loss

QUICK = os.environ.get("GOZARU_QUICK") == "1"
N_PAIRS, STEPS = (600, 60) if QUICK else (3000, 300)
OUT = os.environ.get("GOZARU_OUT", "runs/quickstart")
"""),
    md("""
## 1. Data

`SyntheticCorpus` makes dolly-like instruction/answer pairs with polite endings (です/ます); `to_gozaru` rewrites
sentence-final polite endings into ござる speech. With your own data, `data.load_dolly("dolly-ja.jsonl")` gives the
same records.
"""),
    code("""
corpus = data.SyntheticCorpus(seed=0)
pairs = corpus.instructions(N_PAIRS, seed=1)
for r in pairs[:3]:
    print(r.instruction, "|", r.input[:30], "\\n  polite:", r.output, "\\n  gozaru:", data.to_gozaru(r.output))
gozaru_pairs = data.to_gozaru_dataset(pairs, drop_unchanged=True)
train_records, eval_records = data.train_eval_split(gozaru_pairs, eval_fraction=0.1, seed=0)
len(train_records), len(eval_records)
"""),
    md("""
## 2. Tokenizer and training rows

A small unigram SentencePiece model with rinna's conventions (`</s>` = 3, newlines written as `<NL>`). The rows use
rinna's chat format `ユーザー: …<NL>システム: …` and count the loss on the answer only.
"""),
    code("""
tok = Tokenizer.train([f"{r.instruction}\\n{r.input}\\n{r.output}" for r in gozaru_pairs], vocab_size=1000, seed=0)
train_rows = data.sft_arrays(train_records, tok, seq_len=64)
eval_rows = data.sft_arrays(eval_records, tok, seq_len=64)
print(tok)
print(data.format_prompt(eval_records[0]))
print(train_rows.tokens.shape, train_rows.n_target_tokens, "answer tokens")
"""),
    md("""
## 3. A tiny model

`gz.Model` lives in the C engine; parameters are NumPy views named as in Hugging Face. A new model trains nothing
until told: `layers.select` picks tensor groups (`full`, `mlp`, `last` with a budget, …).
"""),
    code("""
config = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                          intermediate_size=256, max_position_embeddings=128)
model = gz.Model(config, seed=0)
model.train_only(layers.select(config, "full"))
print(model)
print(layers.report(config, model.trainable_names())[0])
"""),
    md("""
## 4. Train

Warmup + cosine schedule, clipping, a checkpoint at the end (and on Ctrl-C: rerun with `resume=` to continue
exactly where it stopped).
"""),
    code("""
trainer = Trainer(model, train_rows, TrainConfig(steps=STEPS, batch_size=16, lr=3e-3, warmup_steps=10,
                                                 eval_every=max(1, STEPS // 4)),
                  eval_data=eval_rows, checkpoint=os.path.join(OUT, "model.h5"))
trainer.fit()
history = trainer.history_frame()
ax = history.plot(x="step", y="loss", title="training loss")
history[["step", "loss", "lr", "tokens_per_s"]].tail()
"""),
    md("## 5. Generate and measure the ござる-rate"),
    code("""
prompts = [data.format_prompt(r) for r in eval_records[:48]]
answers = generate_text(model, tok, prompts, max_new_tokens=32)
for p, a in list(zip(prompts, answers))[:5]:
    print(p.replace("<NL>", " / "), "\\n   →", a)
rate = data.gozaru_rate(answers)
print(rate)
print("held-out answer loss:", round(eval_loss(model, eval_rows), 3))
"""),
    md("""
Next: `02_seed_grid.ipynb` trains a base on polite text and compares which layers must be fine-tuned for the
ござる style to appear; `03_real_model.ipynb` runs the same grid on rinna-3.6b.
"""),
]


SEED_GRID = [
    md("""
# The seed grid: which layers must be trained to learn ござる?

The reference experiment: fine-tune the same base 13 ways — full; MLP + head; everything but the MLP + head; the
first / last layers at two budgets; random layers at two budgets × 3 seeds — and compare the ござる-rate of their
answers to held-out prompts (with Wilson 95 % intervals), the held-out loss, forgetting on plain text and how far
each tensor moved.

This is `gozaru demo` step by step. The base (a tiny GPT-NeoX pretrained on polite Japanese) is cached in
`OUT/base`; `experiment.run` skips finished runs, so interrupting and rerunning this notebook loses nothing.
"""),
    code("""
import os
import gozaru as gz
from gozaru import demo, experiment, layers, plots
from gozaru.lab.evaluate import EvalConfig
from gozaru.lab.train import TrainConfig

QUICK = os.environ.get("GOZARU_QUICK") == "1"
settings = demo.SETTINGS["quick" if QUICK else "default"]
OUT = os.environ.get("GOZARU_OUT", "runs/notebook-grid-quick" if QUICK else "runs/notebook-grid")
settings
"""),
    md("## 1. The base model (pretrained once, then reused)"),
    code("""
tokenizer, base = demo.build_base(settings, os.path.join(OUT, "base"))
exp = demo.experiment_data(settings, tokenizer)
print(base)
print(len(exp.train), "ござる training rows;", len(exp.prompts), "held-out prompts;", len(exp.facts), "fact questions")
"""),
    md("""
## 2. The grid

On rinna-3.6b the reference budgets 5 % / 10 % mean 1 and 3 layers + head. On this tiny model one layer is a much
larger share, so the demo uses the budgets that select 1 and 2 layers + head (`demo.demo_budgets`); a grid of your
own is a list of `experiment.Condition`s.
"""),
    code("""
grid = demo.demo_grid(base.config, settings)
for c in grid:
    names = c.select(base.config)
    print(f"{c.name:<18} {str(c.selection):<42} {100 * layers.share(base.config, names):5.1f} %  "
          f"layers {layers.trained_layers(base.config, names)}")
"""),
    md("## 3. Run it (resumable)"),
    code("""
train = TrainConfig(steps=settings.finetune_steps, batch_size=settings.finetune_batch, lr=settings.finetune_lr,
                    warmup_steps=max(1, settings.finetune_steps // 10), checkpoint_every=10)
results = experiment.run(grid, base, exp, OUT, train=train,
                         eval=EvalConfig(max_new_tokens=settings.max_new_tokens))
results[["name", "trainable_pct", "gozaru_rate", "rate_low", "rate_high", "eval_loss", "forgetting", "fact_recall"]]
"""),
    md("## 4. Plots"),
    code("""
plots.rate_by_condition(results, by="group");
"""),
    code("""
plots.rate_by_condition(results, by="position");
"""),
    code("""
plots.loss_curves(OUT);
"""),
    code("""
plots.weight_change_heatmaps(results);
"""),
    md("""
Each run's answers, loss history, gradient norms and per-tensor weight change are in `OUT/runs/<run>.json`
(`experiment.load_record(OUT, name)`); the models are `OUT/runs/<run>.h5` (`gz.load`).
"""),
    code("""
record = experiment.load_record(OUT, "full")
for answer in record["answers"][:5]:
    print(answer)
"""),
]


REAL_MODEL = [
    md("""
# The grid on rinna-3.6b

Set `GOZARU_RINNA_DIR` to a local copy of `rinna/japanese-gpt-neox-3.6b` (config.json, weights, spiece.model) and,
optionally, `GOZARU_DOLLY` to a dolly-ja file (`.json`, `.jsonl` or `.parquet`). On a machine with a CUDA build
the model runs on the GPU.

Without `GOZARU_RINNA_DIR` the same code runs on a randomly initialised model of rinna's shape scaled down
(36 layers, hidden 2816/32, 22 heads, a vocabulary as large relative to the hidden size as rinna's), so the 5 % /
10 % budgets select the same numbers of layers as on the real model. Its ござる-rates mean nothing: it checks the
pipeline.
"""),
    code("""
import os
import gozaru as gz
from gozaru import data, demo, experiment, layers, plots
from gozaru.lab.evaluate import EvalConfig
from gozaru.lab.experiment import ExperimentData
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab.train import TrainConfig

QUICK = os.environ.get("GOZARU_QUICK") == "1"
RINNA = os.environ.get("GOZARU_RINNA_DIR")
DOLLY = os.environ.get("GOZARU_DOLLY")
OUT = os.environ.get("GOZARU_OUT", "runs/notebook-rinna" + ("-quick" if QUICK else ""))
from gozaru import _core
BACKEND = "cuda" if _core.backend_available("cuda") else "cpu"
print("model:", RINNA or "random rinna-shaped", "| data:", DOLLY or "synthetic", "| backend:", BACKEND)
"""),
    md("## 1. Model and tokenizer"),
    code("""
if RINNA:
    tokenizer = Tokenizer.load(RINNA)
    base = gz.Model.from_hf(RINNA, backend=BACKEND)
    SEQ_LEN = 256
else:
    tokenizer = demo.build_tokenizer(demo.SETTINGS["default"], os.path.join(OUT, "tokenizer"))
    rinna = gz.preset("rinna-3.6b")
    config = rinna.replace(vocab_size=tokenizer.vocab_size, hidden_size=rinna.hidden_size // 32,
                           intermediate_size=rinna.intermediate_size // 32, max_position_embeddings=256)
    base = gz.Model(config, seed=0, backend=BACKEND)
    SEQ_LEN = 64
print(base)
for budget in (0.05, 0.10):
    names = layers.select(base.config, "last", budget=budget)
    print(f"budget {budget:.0%}: layers {layers.trained_layers(base.config, names)} + head = "
          f"{100 * layers.share(base.config, names):.2f} % of the weights")
"""),
    md("## 2. Data: dolly-ja (or the synthetic corpus) rewritten to ござる"),
    code("""
corpus = data.SyntheticCorpus(seed=0)
records = data.load_dolly(DOLLY) if DOLLY else corpus.instructions(400 if QUICK else 5000, seed=2)
gozaru_records = data.to_gozaru_dataset(records, drop_unchanged=True)
train_records, held = data.train_eval_split(gozaru_records, eval_fraction=0.05, seed=0)
N_PROMPTS, N_EVAL = (8, 12) if QUICK else (100, 200)
exp = ExperimentData.from_records(tokenizer, train_records, held[:N_EVAL], seq_len=SEQ_LEN,
                                  plain_texts=corpus.pretrain_texts(6 if QUICK else 200, seed=9),
                                  facts=corpus.train_questions()[:8 if QUICK else 50], n_prompts=N_PROMPTS)
print(len(gozaru_records), "ござる records;", len(exp.train), "training rows;", len(exp.prompts), "prompts")
"""),
    md("""
## 3. The reference grid (13 runs)

Hyper-parameters for the real model follow common LoRA-free SFT settings for a 3.6B model; change them freely
(`seed_grid(lr=...)` sets per-condition overrides).
"""),
    code("""
grid = experiment.seed_grid(seeds=(0, 1, 2))
if RINNA:
    train = TrainConfig(steps=300, batch_size=16, micro_batch_size=4, lr=1e-5, warmup_steps=20, checkpoint_every=50)
    evaluation = EvalConfig(max_new_tokens=64, batch_size=16)
else:
    train = TrainConfig(steps=2 if QUICK else 20, batch_size=4 if QUICK else 16, lr=1e-3, warmup_steps=1)
    evaluation = EvalConfig(max_new_tokens=8 if QUICK else 32, batch_size=8)
PART = 4   # runs per cell: the grid is resumable, so each cell trains the next few and stays short
results = experiment.run(grid[:PART], base, exp, OUT, train=train, eval=evaluation)
"""),
    code("""
results = experiment.run(grid[:2 * PART], base, exp, OUT, train=train, eval=evaluation)   # the next 4 runs
"""),
    code("""
results = experiment.run(grid[:3 * PART], base, exp, OUT, train=train, eval=evaluation)   # the next 4 runs
"""),
    code("""
results = experiment.run(grid, base, exp, OUT, train=train, eval=evaluation)   # the rest: the whole grid
results[["name", "trainable_pct", "gozaru_rate", "rate_low", "rate_high", "eval_loss", "forgetting"]]
"""),
    code("""
plots.rate_by_condition(results, by="group");
"""),
    code("""
plots.weight_change_heatmaps(results);
"""),
]


NOTEBOOKS = {"01_quickstart.ipynb": QUICKSTART, "02_seed_grid.ipynb": SEED_GRID, "03_real_model.ipynb": REAL_MODEL}


def build(name: str):
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(folder: str | None = None) -> list[str]:
    folder = folder or os.path.join(ROOT, "notebooks")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in NOTEBOOKS:
        path = os.path.join(folder, name)
        nb = build(name)
        nbformat.validate(nb)
        # Cell ids are random by default: fix them so regenerating gives the same files.
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i:02d}"
        with open(path, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in main(sys.argv[1] if len(sys.argv) > 1 else None):
        print(p)
