"""The study's statistics on synthetic data with known answers (nested bootstrap, comparisons, thresholds, the
rank-deficient guard), its measures on hand-made cases, and its design (random draws)."""
import math

import numpy as np
import pandas as pd
import pytest

import gozaru as gz
from gozaru.lab.study import design, measures, stats
from gozaru.lab.study.spec import StudySpec


# --------------------------------------------------------------------------- nested bootstrap
def test_nested_bootstrap_spread_matches_the_two_stage_variance():
    """Rows constant (only seeds vary): SD = σ_seeds / √S. Rows identical (only prompts vary): the prompts are
    drawn anew within every seed, so SD = σ_prompts / √(S·P). Tolerance: the bootstrap SD's own sampling error,
    about 1/√(2B) relative, times 5."""
    rng = np.random.default_rng(0)
    draws = 4000
    seeds = rng.normal(size=5)
    by_seed = np.repeat(seeds[:, None], 40, axis=1)
    sd = stats.nested_bootstrap(by_seed, draws, np.random.default_rng(1)).std()
    assert sd == pytest.approx(seeds.std() / math.sqrt(5), rel=5 / math.sqrt(2 * draws))
    prompts = rng.normal(size=40)
    by_prompt = np.repeat(prompts[None, :], 5, axis=0)
    sd = stats.nested_bootstrap(by_prompt, draws, np.random.default_rng(2)).std()
    assert sd == pytest.approx(prompts.std() / math.sqrt(5 * 40), rel=5 / math.sqrt(2 * draws))


# --------------------------------------------------------------------------- comparisons
def fake_study(effect: float, noise: float = 0.02, seeds=range(5), n_prompts=30, seed=0):
    """Runs frame + per-prompt arrays of two cells (first, last) at two policies; ``effect`` = first − last."""
    rng = np.random.default_rng(seed)
    rows, arrays = [], {}
    for policy in ("tuned", "lr=0.002"):
        for position in ("first", "last"):
            for s in seeds:
                name = f"{position} {policy} s{s}"
                p = 0.5 + (effect if position == "first" else 0.0) + rng.normal(0, noise)
                a = np.clip(p + rng.normal(0, noise, n_prompts), 0, 1)
                arrays[name] = {"greedy": (rng.random(n_prompts) < p).astype(float), "sampled_rate": a,
                                "adoption": a, "suppression": -a, "curve": []}
                rows.append({"name": name, "cell": f"1L layers {position}", "level": "1L", "type": "layers",
                             "position": position, "head": "trained", "seed": s, "policy": policy})
    return pd.DataFrame(rows), arrays


def test_a_planted_difference_is_found_and_no_difference_is_equivalent():
    spec = StudySpec(bootstrap=1000, margin=0.05)
    found = stats.compare(*fake_study(effect=0.3), spec)
    adoption = [c for c in found if c["measure"] == "adoption"]
    assert len(adoption) == 2 and all(c["verdict"] == "differ" for c in adoption)
    assert all(c["factor"] == "position" and c["a"] == "first" and c["level"] == 1 for c in adoption)
    assert all(25 < c["diff"] < 35 and c["ci"][0] < c["diff"] < c["ci"][1] for c in adoption)
    none = stats.compare(*fake_study(effect=0.0, noise=0.005), spec)
    assert all(c["verdict"] == "equivalent" for c in none if c["measure"] == "adoption")
    keys = {"factor", "a", "b", "level", "policy", "measure", "diff", "ci", "p", "p_tost", "verdict"}
    assert keys <= set(found[0]) and {c["policy"] for c in found} == {"tuned", "lr=0.002"}


def test_holm_makes_p_values_no_smaller():
    for c in stats.compare(*fake_study(effect=0.02, noise=0.05), StudySpec(bootstrap=200)):
        assert c["p"] >= c["p_raw"] - 1e-12 and c["p_tost"] >= c["p_tost_raw"] - 1e-12


# --------------------------------------------------------------------------- thresholds
@pytest.mark.parametrize("points, target, kind", [
    ([(0.1, 0.6), (0.2, 0.8), (1.0, 1.0)], 0.5, "at most"),         # reached at the smallest share: a bound
    ([(0.1, 0.2), (0.2, 0.8), (1.0, 1.0)], 0.5, "estimate"),        # a doubling apart: interpolated
    ([(0.1, 0.2), (0.37, 0.4), (1.0, 1.0)], 0.9, "between"),        # 37 % → 100 %: never interpolated
    ([(0.1, 0.2), (0.2, 0.3), (1.0, 0.4)], 0.9, "not reached"),
])
def test_thresholds_are_estimates_only_between_close_levels(points, target, kind):
    got = stats._crossing(points, target)
    assert got["kind"] == kind
    if kind == "estimate":
        assert 0.1 < got["share"] < 0.2 and (got["low"], got["high"]) == (0.1, 0.2)


# --------------------------------------------------------------------------- interactions
def test_a_rank_deficient_design_is_not_estimable_not_a_crash():
    """type and level fully confounded (only 2 of the 4 combinations exist), huge values: the old guard let
    such fits through and the report crashed with a math range error."""
    rows = [{"type": t, "level": lv, "position": "first", "head": "trained", "adoption": v + 1e3 * i}
            for i, (t, lv) in enumerate([("layers", "1L"), ("mlp", "2L")]) for v in (0.1, 0.2, 0.3)]
    got = stats.interaction_test(pd.DataFrame(rows), "type", "level", covariates=("position",))
    assert not got["ok"] and got["note"].startswith("not estimable") and "rank" in got["note"]


def test_an_interaction_is_found_when_planted():
    rng = np.random.default_rng(0)
    rows = [{"type": t, "level": lv, "adoption": (0.5 if (t, lv) == ("mlp", "2L") else 0.0) + rng.normal(0, 0.05)}
            for t in ("layers", "mlp") for lv in ("1L", "2L") for _ in range(5)]
    got = stats.interaction_test(pd.DataFrame(rows), "type", "level")
    assert got["ok"] and got["p"] < 1e-6
    flat = stats.interaction_test(pd.DataFrame(rows).assign(adoption=rng.normal(0, 0.05, 20)), "type", "level")
    assert flat["ok"] and flat["p"] > 1e-3


# --------------------------------------------------------------------------- random layer draws
def test_random_draws_differ_from_fixed_positions_and_each_other():
    draws, note = design.random_draws(8, 2, range(5))
    fixed = {tuple(design.layer_choice(8, 2, p, 0)) for p in ("first", "middle", "last")}
    picks = [tuple(v) for v in draws.values()]
    assert note == "" and len(set(picks)) == 5 and not set(picks) & fixed
    assert design.random_draws(8, 2, range(5))[0] == draws            # reproducible
    _, note = design.random_draws(3, 2, range(5))                     # 3 subsets, all first/middle/last
    assert "may repeat" in note


# --------------------------------------------------------------------------- the measures
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
    items = measures.style_items(tok, [rec, {"instruction": "x", "input": "", "output": "ペン。"}])
    assert len(items) == 1 and items.dropped == 1     # the second has no polite ending
    prompt = gz.data.format_prompt(rec)
    assert items.prefixes[0] == tok.encode(prompt + "これはペンで")
    assert items.gozaru[0] == tok.encode("ござる。") and items.plain[0] == tok.encode("す。")


def test_continuation_logprobs_match_a_direct_sum():
    model = BigramModel()
    prefixes, conts = [[5, 6, 7], [9]], [[8, 10], [11, 12, 13]]
    got = measures.continuation_logprobs(model, prefixes, conts, batch_size=1)
    for p, c, value in zip(prefixes, conts, got):
        seq, expected = p + c, 0.0
        for t in range(len(p), len(seq)):
            z = model.W[seq[t - 1]]
            expected += z[seq[t]] - math.log(np.exp(z).sum())
        assert value == pytest.approx(expected, rel=1e-12)
    assert np.allclose(measures.continuation_logprobs(model, prefixes, conts, batch_size=8), got)


def test_style_score_sign_follows_the_preference():
    tok = CharTokenizer()
    items = measures.style_items(tok, [{"instruction": "q", "input": "", "output": "それは本です。"}])
    model = BigramModel()
    for c in "ござる":
        model.W[:, tok.ids[c]] += 20.0       # this model expects ござる everywhere
    assert measures.style_scores(model, items)[0] > 10
    model.W[:, tok.ids["す"]] += 100.0
    assert measures.style_scores(model, items)[0] < 0

def test_adoption_is_the_normalised_probability_and_suppression_the_polite_log_prob():
    tok = CharTokenizer()
    items = measures.style_items(tok, [{"instruction": "q", "input": "", "output": "それは本です。"}])
    model = BigramModel()
    g, o = measures.ending_logprobs(model, items)
    adoption, suppression = measures.adoption_suppression(model, items)
    assert adoption[0] == pytest.approx(math.exp(g[0]) / (math.exp(g[0]) + math.exp(o[0])), rel=1e-12)
    assert suppression[0] == o[0]
    model.W[:, tok.ids["す"]] -= 50.0        # pushing the polite ending down: adoption saturates at 1
    a2, s2 = measures.adoption_suppression(model, items)
    assert s2[0] < suppression[0] - 40 and a2[0] <= 1.0


@pytest.mark.parametrize("quick", [True, False])
def test_the_second_demo_base_has_about_ten_times_the_parameters(quick):
    from gozaru.lab import demo
    from gozaru.lab.study.demo import demo_settings
    sizes = []
    for large in (False, True):
        s = demo_settings(quick, large)
        sizes.append(gz.Model(demo.model_config(s, s.vocab_size), seed=0).num_params)
    assert 8 <= sizes[1] / sizes[0] <= 12
    assert demo_settings(quick, True).num_layers == demo_settings(quick, False).num_layers   # same depth


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny"])
def test_study_cells_select_the_family_modules(preset):
    """The study's types read core tensor kinds, so they mean the same on GPT-NeoX and on Llama: attention is
    the q/k/v/o projections (fused query_key_value + dense), mlp every MLP matrix (SwiGLU's gate included)."""
    cfg = gz.preset(preset)
    spec = StudySpec(shares=(2,), positions=("last",), types=("layers", "attention", "mlp"), seeds=(0, 1)).check(cfg)
    sel = {}
    for cell in design.cells(spec, cfg):
        names = design.condition(spec, cfg, cell, 0, 1e-3, cell.name).select(cfg)
        assert names <= set(cfg.tensor_shapes())   # every cell selects tensors of this model
        if cell.type in ("layers", "attention", "mlp"):
            sel[cell.type] = names
    head = gz.layers.head_name(cfg)
    attn, mlp = sel["attention"] - {head}, sel["mlp"] - {head}
    kinds = {t.name: t.kind for t in cfg.tensors()}
    assert {kinds[n] for n in attn} == {"qkv", "attn_out"}
    assert {kinds[n] for n in mlp} == ({"mlp_gate", "mlp_up", "mlp_down"} if cfg.is_llama_family else
                                       {"mlp_up", "mlp_down"})
    assert attn | mlp | {n for n in sel["layers"] if kinds[n] == "norm"} | {head} == sel["layers"]
