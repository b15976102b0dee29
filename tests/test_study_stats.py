"""Study statistics on synthetic outcomes with known answers, the style score on hand-made cases, and
refusal of bad study definitions before any run."""
import json
import math

import numpy as np
import pandas as pd
import pytest

import gozaru as gz
from gozaru.lab import stats, study, style


# --------------------------------------------------------------------------- TOST and paired tests
def synthetic_runs(position_effect: float, noise: float, seeds=range(6), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for level, base in (("1L", 0.5), ("2L", 0.7)):
        for type_ in ("layers", "mlp"):
            for position in ("first", "middle", "last"):
                for s in seeds:
                    rate = base + (position_effect if position == "first" else 0.0) + rng.normal(0, noise)
                    rows.append({"level": level, "type": type_, "position": position, "seed": s,
                                 "gozaru_rate": rate})
    return pd.DataFrame(rows)


def test_planted_position_effect_is_found():
    runs = synthetic_runs(position_effect=0.15, noise=0.03)
    t = stats.tost_factor(runs, "position", ["level", "type", "seed"], margin=0.05, alpha=0.05,
                          order=["first", "middle", "last"])
    assert t["verdict"] == "differs"
    p = t["pairs"].set_index(["a", "b"])
    assert abs(p.loc[("first", "last"), "diff"] - 0.15) < 0.03
    assert p.loc[("middle", "last"), "p_diff"] > 0.01   # the unplanted pair is not flagged


def test_null_effect_is_declared_equivalent():
    runs = synthetic_runs(position_effect=0.0, noise=0.02)
    t = stats.tost_factor(runs, "position", ["level", "type", "seed"], margin=0.05, alpha=0.05)
    assert t["verdict"] == "equivalent", t["pairs"]
    assert (t["pairs"]["p_tost"] < 0.05).all()
    # the same null with a margin smaller than the noise can resolve is not called equivalent
    assert stats.tost_factor(runs, "position", ["level", "type", "seed"], margin=0.001, alpha=0.05)["verdict"] \
        == "inconclusive"


def test_type_factor_and_constant_differences():
    runs = synthetic_runs(0.0, 0.0)   # every difference exactly 0: sd 0 must not give NaN
    t = stats.tost_factor(runs, "type", ["level", "position", "seed"], margin=0.05, alpha=0.05)
    assert t["verdict"] == "equivalent" and (t["pairs"]["diff"] == 0).all()


# --------------------------------------------------------------------------- thresholds and bootstrap
def test_crossing_interpolates_in_log_share():
    x = np.log([0.1, 0.2, 1.0])
    y = np.array([0.2, 0.6, 1.0])
    assert stats._crossing(x, y, 0.5) == pytest.approx(0.1 * 2 ** 0.75)
    assert stats._crossing(x, y, 0.1) == pytest.approx(0.1)
    assert math.isinf(stats._crossing(x, y, 1.5))


def test_share_thresholds_on_exact_outcomes():
    n = 40   # every run of a level answers the same share of prompts correctly: the estimate is exact
    levels = [("head", "head", 0.1, 0.2), ("1L", "layers", 0.2, 0.6), ("all", "full", 1.0, 1.0)]
    rows, outcomes = [], {}
    for level, type_, share, rate in levels:
        for s in range(3):
            name = f"{level} s{s}"
            rows.append({"name": name, "level": level, "type": type_, "position": "first", "seed": s,
                         "share": share})
            outcomes[name] = (np.arange(n) < round(rate * n)).astype(float)
    t = stats.share_thresholds(pd.DataFrame(rows), outcomes, ["layers"], draws=200)
    half = t[t["fraction"] == 0.5].iloc[0]
    assert half["share"] == pytest.approx(0.1 * 2 ** 0.75)
    assert half["low"] <= half["share"] <= half["high"]


def test_bootstrap_covers_the_mean():
    rng = np.random.default_rng(0)
    m = (rng.random((5, 60)) < 0.3).astype(float)
    draws = stats.bootstrap_means(m, 500, rng)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    assert lo < m.mean() < hi and hi - lo < 0.3


def test_logistic_model_recovers_a_planted_slope():
    rng = np.random.default_rng(1)
    rows, outcomes = [], {}
    for k, share in ((1, 0.05), (2, 0.1), (4, 0.2)):
        for position in ("first", "last"):
            for s in range(4):
                name = f"{k} {position} {s}"
                logit = 1.0 + 1.5 * math.log(share / 0.1) + (0.8 if position == "last" else 0.0)
                outcomes[name] = (rng.random(200) < 1 / (1 + math.exp(-logit))).astype(float)
                rows.append({"name": name, "share": share, "position": position, "type": "layers"})
    fit = stats.logistic_model(pd.DataFrame(rows), outcomes, ["first", "last"], ["layers"])
    assert fit["ok"], fit["note"]
    t = fit["table"].set_index("term")
    assert t.loc["log(share)", "low"] < 1.5 < t.loc["log(share)", "high"]
    assert t.loc["position = last", "p"] < 0.05


# --------------------------------------------------------------------------- the style score
class CharTokenizer:
    """One id per character, assigned on first sight."""

    def __init__(self):
        self.ids = {}

    def encode(self, text):
        return [self.ids.setdefault(c, len(self.ids) + 4) for c in text]

    encode_prompt = encode


class BigramModel:
    """Logits of the next token depend on the current token only: ``W[token]``."""

    def __init__(self, vocab=200, seed=0):
        self.W = np.random.default_rng(seed).normal(size=(vocab, vocab))

    def logits(self, tokens):
        return self.W[np.asarray(tokens)]


def test_style_items_on_a_hand_made_answer():
    tok = CharTokenizer()
    rec = {"instruction": "質問", "input": "", "output": "これはペンです。次です。"}
    items = style.style_items(tok, [rec, {"instruction": "x", "input": "", "output": "ペン。"}])
    assert len(items) == 1 and items.dropped == 1     # the second has no polite ending
    prompt = gz.data.format_prompt(rec)
    assert items.prefixes[0] == tok.encode(prompt + "これはペンで")
    assert items.gozaru[0] == tok.encode("ござる。") and items.plain[0] == tok.encode("す。")


def test_continuation_logprobs_match_a_direct_sum():
    model = BigramModel()
    prefixes, conts = [[5, 6, 7], [9]], [[8, 10], [11, 12, 13]]
    got = style.continuation_logprobs(model, prefixes, conts, batch_size=1)
    for p, c, value in zip(prefixes, conts, got):
        seq, expected = p + c, 0.0
        for t in range(len(p), len(seq)):
            z = model.W[seq[t - 1]]
            expected += z[seq[t]] - math.log(np.exp(z).sum())
        assert value == pytest.approx(expected, rel=1e-12)
    assert np.allclose(style.continuation_logprobs(model, prefixes, conts, batch_size=8), got)


def test_style_score_sign_follows_the_preference():
    tok = CharTokenizer()
    items = style.style_items(tok, [{"instruction": "q", "input": "", "output": "それは本です。"}])
    model = BigramModel()
    for c in "ござる":
        model.W[:, tok.ids[c]] += 20.0       # this model expects ござる everywhere
    assert style.style_scores(model, items)[0] > 10
    model.W[:, tok.ids["す"]] += 100.0
    assert style.style_scores(model, items)[0] < 0


# --------------------------------------------------------------------------- bad study definitions
CFG = gz.GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=32)


@pytest.mark.parametrize("fields, message", [
    ({"types": ["layers", "conv"]}, "unknown type"),
    ({"positions": ["centre"]}, "unknown position"),
    ({"shares": [9]}, "4 layers"),
    ({"shares": [0.001]}, "no whole-layer choice"),
    ({"shares": ["most"]}, "unknown share level"),
    ({"margin": 0}, "margin"),
    ({"margin": -0.05}, "margin"),
    ({"seeds": [0]}, "at least 2"),
    ({"shares": [1, 0.25, "all"]}, "repeat"),
])
def test_bad_definitions_fail_before_any_run(fields, message):
    with pytest.raises(ValueError, match=message):
        study.StudySpec.from_dict(fields).check(CFG)


def test_bad_study_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"shares": ["head", 1], "kinds": ["mlp"]}))
    with pytest.raises(ValueError, match="unknown study field.*kinds"):
        study.StudySpec.load(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        study.StudySpec.load(str(path))


def test_plan_cells_and_selections():
    spec = study.StudySpec(shares=("head", 1, 2, "all"), seeds=(0, 1)).check(CFG)
    planned = study.plan(spec, CFG, {"head": 1e-2, "1L": 3e-3, "2L": 3e-3, "all": 1e-3})
    assert len(planned) == 2 + 2 * (4 * 3) * 2 + 2
    metas = {m["name"]: (c, m) for c, m in planned}
    c, m = metas["2L attention middle s0"]
    names = c.select(CFG)
    assert gz.layers.trained_layers(CFG, names) == [] and m["share"] < metas["2L layers middle s0"][1]["share"]
    kinds = {t.kind for t in CFG.tensors() if t.name in names}
    assert kinds == {"qkv", "attn_out", "head"}
    assert metas["1L layers middle s0"][0].selection["layers"] == [1]
    assert metas["2L mlp last s1"][0].hparams == {"seed": 1, "lr": 3e-3}
    draws = {tuple(metas[f"1L layers random s{s}"][0].selection["layers"]) for s in (0, 1)}
    assert all(len(d) == 1 for d in draws)


def test_parts_narrow_a_layer_choice_by_core_kind():
    mlp = gz.layers.select(CFG, "last", layers=2, parts=("mlp_up", "mlp_down"), train_head=False)
    expected = {t.name for t in CFG.tensors() if t.layer in (2, 3) and t.kind in ("mlp_up", "mlp_down")}
    assert mlp == expected and len(mlp) == 8   # weight + bias of two MLP matrices in two layers
    with pytest.raises(ValueError, match="chooses no layers"):
        gz.layers.select(CFG, "full", parts=("qkv",))
    with pytest.raises(ValueError, match="unknown tensor kind"):
        gz.layers.select(CFG, "first", layers=1, parts=("mlp",))


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_study_cells_select_the_family_modules(preset):
    """The study's types read core tensor kinds, so they mean the same on GPT-NeoX and on Llama: attention is
    the q/k/v/o projections (fused query_key_value + dense), mlp every MLP matrix (SwiGLU's gate included)."""
    cfg = gz.preset(preset)
    spec = study.PRESETS["demo"]
    plan = study.plan(spec, cfg)
    assert plan
    for cond, _ in plan:  # every cell selects tensors of this model
        assert cond.select(cfg) <= set(cfg.tensor_shapes())
    sel = lambda t: gz.lab.experiment.Condition("c", study.cell_selection(cfg, 2, "last", t, 0)).select(cfg)
    head = gz.layers.head_name(cfg)
    attn, mlp = sel("attention") - {head}, sel("mlp") - {head}
    kinds = {t.name: t.kind for t in cfg.tensors()}
    assert {kinds[n] for n in attn} == {"qkv", "attn_out"}
    assert {kinds[n] for n in mlp} == ({"mlp_gate", "mlp_up", "mlp_down"} if cfg.is_llama_family else
                                       {"mlp_up", "mlp_down"})
    assert attn | mlp | {n for n in sel("layers") if kinds[n] == "norm"} | {head} == sel("layers")
