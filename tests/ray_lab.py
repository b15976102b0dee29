"""Shared pieces of the Ray tests: a tiny experiment on disk (tokenizer, base checkpoint) that a test, a driver
subprocess and the Ray workers all rebuild the same way, and the grid they run."""
import os

import gozaru as gz
from gozaru import _core, data
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab.evaluate import EvalConfig
from gozaru.lab.executor import LocalExecutor
from gozaru.lab.experiment import Condition, ExperimentData, run

EVAL = EvalConfig(max_new_tokens=8, batch_size=8)


def grid():
    return [Condition("full", {"kind": "full"}), Condition("last 1", {"kind": "last", "layers": 1}),
            Condition("mlp", {"kind": "mlp"}), Condition("random 1 seed3", {"kind": "random", "layers": 1}, seed=3)]


def make(folder) -> tuple[str, str]:
    """Writes ``spiece.model`` and ``base.h5`` into ``folder``; returns their paths."""
    corpus = data.SyntheticCorpus(0)
    texts = [f"{r.instruction}\n{r.input}\n{data.to_gozaru(r.output)}" for r in corpus.instructions(300, seed=1)]
    tok_path = Tokenizer.train(texts, vocab_size=800, seed=0).save(os.path.join(folder, "spiece.model"))
    tok = Tokenizer.load(tok_path)
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=96)
    base_path = os.path.join(folder, "base.h5")
    gz.Model(cfg, seed=0).save(base_path)
    return tok_path, base_path


def experiment(tok_path) -> ExperimentData:
    tok = Tokenizer.load(tok_path)
    corpus = data.SyntheticCorpus(0)
    train = data.to_gozaru_dataset(corpus.instructions(120, seed=2), drop_unchanged=True)
    held = data.to_gozaru_dataset(corpus.instructions(24, seed=3), drop_unchanged=True)
    return ExperimentData.from_records(tok, train, held, seq_len=48, plain_texts=corpus.pretrain_texts(12),
                                       facts=corpus.train_questions()[:6], n_prompts=8)


def local_reference(folder, train: dict):
    """Builds the experiment in ``folder`` and runs the grid with the local executor on one thread (the
    reference Ray runs must equal); returns (folder, tokenizer path, base path, data, the local results folder)."""
    tok, base = make(str(folder))
    exp = experiment(tok)
    threads = _core.get_num_threads()
    try:
        run(grid(), base, exp, os.path.join(str(folder), "local"), train=train, eval=EVAL, progress=False,
            log=None, executor=LocalExecutor(threads=1))
    finally:
        _core.set_num_threads(threads)
    return folder, tok, base, exp, os.path.join(str(folder), "local")


def ray_task_pids(title: str = "ray::run_task") -> list[int]:
    """Worker processes running a task now (Ray sets a worker's process title to ray::<task>)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(title):
                pids.append(int(entry))
    return pids
