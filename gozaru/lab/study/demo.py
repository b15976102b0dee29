"""The study on the offline demo: the synthetic corpus, the demo's tiny base (built once, cached in
``OUT/base``) and its polite pairs rewritten to ござる — what ``gozaru study`` runs without ``--base``/``--hf``.
``large=True`` uses a second base of about 10× the parameters (hidden 224 instead of 64), built the same way."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

from ...engine.config import FAMILY_NAMES
from ...engine.placement import Placement
from .. import demo
from ..evaluate import EvalConfig
from ..train import TrainConfig
from .inputs import study_data
from .runner import run_study
from .spec import StudySpec


def demo_settings(quick: bool, large: bool = False):
    """The demo's model and data sizes: the demo's own 40 steps × 16 per run; fewer held-out prompts and
    shorter answers than the demo grid, to fit the runs in the study's time. ``large``: hidden 224 (≈ 10× the
    parameters; the quick one 176)."""
    if quick:   # the quick demo's model, pretrained and fine-tuned less; fewer and shorter answers
        s = dataclasses.replace(demo.SETTINGS["quick"], pretrain_steps=150, finetune_steps=10, n_eval=24,
                                n_prompts=16, n_plain=16, n_facts=4, max_new_tokens=12)
        return dataclasses.replace(s, hidden_size=176, intermediate_size=704) if large else s
    s = dataclasses.replace(demo.SETTINGS["default"], n_eval=64, n_prompts=32, n_plain=32, n_facts=8,
                            max_new_tokens=16)
    return dataclasses.replace(s, hidden_size=224, intermediate_size=896) if large else s


def demo_study(out: str, spec: StudySpec, settings, *, placement: Placement | None = None, progress: bool = False,
               log: Callable[[str], None] = print, executor=None, tracker=None):
    """The study on the offline demo: synthetic corpus, the demo's tiny base (built once, cached in
    ``out/base``, placed as ``placement`` says), polite pairs rewritten to ござる."""
    spec.check(demo.model_config(settings, settings.vocab_size))   # before the base is built
    # the base caches per size, so a small and a large study can share a parent folder's layout
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
                        checkpoint_every=0, progress=progress)
    cfg = base.config
    kv = (f", {cfg.num_key_value_heads} kv heads of {cfg.num_attention_heads}"
          if cfg.num_key_value_heads not in (None, cfg.num_attention_heads) else "")
    sizes = (f"Offline demo: synthetic Japanese corpus; base {FAMILY_NAMES[cfg.model_type]} with "
             f"{base.num_params:,} parameters ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}{kv}, "
             f"vocab {cfg.vocab_size}) pretrained "
             f"{settings.pretrain_steps} steps on prose and polite pairs; every run fine-tunes "
             f"{settings.finetune_steps} steps × {settings.finetune_batch} of {len(data.train):,} ござる pairs "
             f"(training lr {settings.finetune_lr:g} before the sweep); ござる-rate on {len(data.prompts)} held-out "
             f"prompts (greedy and {spec.samples} samples at T = 1, ≤ {settings.max_new_tokens} new tokens); "
             f"adoption and suppression on {len(data.style)} held-out answers; forgetting on {len(data.original)} "
             f"held-out original answers.")
    return run_study(spec, base, data, out, train=train,
                     eval=EvalConfig(max_new_tokens=settings.max_new_tokens, batch_size=64), examples=goz_train,
                     sizes=sizes, progress=progress, data_key=settings.to_dict(), log=log, executor=executor,
                     tracker=tracker)
