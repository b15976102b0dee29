"""The study on the offline demo: the synthetic corpus, the demo's tiny base (built once, cached in
``OUT/base``) and its polite pairs rewritten to ござる — what ``gozaru study`` runs without ``--base``/``--hf``."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

from ..engine.placement import Placement
from . import demo
from .evaluate import EvalConfig
from .study import StudySpec, run_study, study_data
from .train import TrainConfig


def demo_settings(quick: bool):
    """The demo's model and data sizes; the full study trains and measures less per run than the demo does,
    to fit 114 runs in its time."""
    if quick:   # the quick demo's model, pretrained and fine-tuned less; fewer and shorter answers
        return dataclasses.replace(demo.SETTINGS["quick"], pretrain_steps=150, finetune_steps=20, n_eval=32,
                                   n_prompts=24, n_plain=32, n_facts=8, max_new_tokens=16)
    return dataclasses.replace(demo.SETTINGS["default"], finetune_steps=30, n_eval=96, n_prompts=48, n_plain=64,
                               n_facts=16, max_new_tokens=24)


def demo_study(out: str, spec: StudySpec, settings, *, placement: Placement | None = None, progress: bool = False,
               log: Callable[[str], None] = print, executor=None, tracker=None):
    """The study on the offline demo: synthetic corpus, the demo's tiny base (built once, cached in
    ``out/base``, placed as ``placement`` says), polite pairs rewritten to ござる."""
    spec.check(demo.model_config(settings, settings.vocab_size))   # before the base is built
    tokenizer, base = demo.build_base(settings, os.path.join(out, "base"), progress=progress, log=log,
                                      placement=placement)
    c = demo.corpus(settings)
    held = c.instructions(max(settings.n_eval, settings.n_prompts), seed=3)
    data, goz_train = study_data(tokenizer, c.instructions(settings.n_finetune_pairs, seed=2), held,
                                 seq_len=settings.seq_len, max_positions=base.config.max_position_embeddings,
                                 plain_texts=c.pretrain_texts(settings.n_plain, seed=9),
                                 facts=c.train_questions(seed=0)[: settings.n_facts], n_prompts=settings.n_prompts,
                                 log=log)
    train = TrainConfig(steps=settings.finetune_steps, batch_size=settings.finetune_batch, lr=settings.finetune_lr,
                        warmup_steps=max(1, settings.finetune_steps // 10), min_lr_ratio=0.1, max_grad_norm=1.0,
                        checkpoint_every=max(10, settings.finetune_steps // 2), progress=progress)
    cfg = base.config
    sizes = (f"Offline demo: synthetic Japanese corpus; base GPT-NeoX with {base.num_params:,} parameters "
             f"({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}) pretrained "
             f"{settings.pretrain_steps} steps on prose and polite pairs; every run fine-tunes "
             f"{settings.finetune_steps} steps × {settings.finetune_batch} of {len(data.train):,} ござる pairs "
             f"(training lr {settings.finetune_lr:g} before the sweep); ござる-rate on {len(data.prompts)} held-out "
             f"prompts (greedy, ≤ {settings.max_new_tokens} new tokens); style score on {len(data.style)} held-out "
             f"answers; eval and forgetting losses on {len(data.eval)} held-out pairs, plain loss on "
             f"{settings.n_plain} prose texts; fact recall on {len(data.facts)} questions.")
    return run_study(spec, base, data, out, train=train,
                     eval=EvalConfig(max_new_tokens=settings.max_new_tokens, batch_size=32), examples=goz_train,
                     sizes=sizes, progress=progress, data_key=settings.to_dict(), log=log, executor=executor,
                     tracker=tracker)
