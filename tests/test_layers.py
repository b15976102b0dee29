"""Layer-group selection and reports, on the rinna-3.6b preset and on random small configs."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gozaru import layers as ly
from gozaru.engine.config import GPTNeoXConfig, preset

RINNA = preset("rinna-3.6b")
TINY = preset("tiny")
SIMPLE_KINDS = ("full", "mlp", "non_mlp", "attention", "norms", "embed", "head")


@st.composite
def configs(draw):
    """Configs the core accepts (an odd head size with full rotary is refused by the core), of every family:
    GPT-NeoX, Llama and Qwen2 with grouped-query attention and tied or untied embeddings."""
    heads = draw(st.integers(1, 4))
    model_type = draw(st.sampled_from(("gpt_neox", "llama", "qwen2")))
    family = {} if model_type == "gpt_neox" else dict(
        num_key_value_heads=draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0])),
        tie_word_embeddings=draw(st.booleans()))
    return GPTNeoXConfig(vocab_size=draw(st.integers(8, 300)), hidden_size=heads * 2 * draw(st.integers(1, 8)),
                         num_hidden_layers=draw(st.integers(1, 12)), num_attention_heads=heads,
                         intermediate_size=draw(st.integers(1, 64)), model_type=model_type, **family)


@settings(max_examples=60, deadline=None)
@given(configs(), st.booleans())
def test_mlp_and_non_mlp_cover_everything(cfg, train_head):
    all_names = set(cfg.tensor_shapes())
    mlp = ly.select(cfg, "mlp", train_head=train_head)
    non_mlp = ly.select(cfg, "non_mlp", train_head=train_head)
    assert mlp | non_mlp == all_names
    head = ly.head_name(cfg)
    assert mlp & non_mlp == ({head} if train_head else set())
    final_norm = [t.name for t in cfg.tensors() if t.layer == cfg.num_hidden_layers]
    assert ly.embed_name(cfg) in non_mlp and set(final_norm) <= non_mlp
    assert all(".mlp." in n for n in mlp - {head})


@settings(max_examples=60, deadline=None)
@given(configs(), st.sampled_from(SIMPLE_KINDS), st.booleans())
def test_every_kind_is_a_subset_and_head_follows_train_head(cfg, kind, train_head):
    names = ly.select(cfg, kind, train_head=train_head)
    assert names <= set(cfg.tensor_shapes()) and names
    head = ly.head_name(cfg)
    if train_head or kind in ("full", "non_mlp", "head") or (kind == "embed" and cfg.tie_word_embeddings):
        assert head in names
    else:
        assert head not in names


@settings(max_examples=80, deadline=None)
@given(configs(), st.floats(0.001, 1.0), st.booleans())
def test_budget_picks_the_closest_whole_layer_count(cfg, budget, train_head):
    k = ly.layers_for_budget(cfg, budget, train_head=train_head)
    counts = ly.param_counts(cfg)
    total = sum(counts.values())
    layer = sum(counts[n] for n in ly.layer_names(cfg, 0))
    head = counts[ly.head_name(cfg)] if train_head else 0
    gaps = [abs((head + j * layer) / total - budget) for j in range(cfg.num_hidden_layers + 1)]
    assert gaps[k] == pytest.approx(min(gaps), abs=1e-12)
    for kind in ("first", "last", "random"):
        names = ly.select(cfg, kind, budget=budget, seed=1, train_head=train_head)
        assert len(ly.trained_layers(cfg, names)) == k
        assert ly.share(cfg, names) == pytest.approx((head + k * layer) / total)


@settings(max_examples=60, deadline=None)
@given(configs(), st.data())
def test_first_and_last_are_contiguous_from_their_end(cfg, data):
    L = cfg.num_hidden_layers
    k = data.draw(st.integers(0, L))
    first = ly.trained_layers(cfg, ly.select(cfg, "first", layers=k))
    last = ly.trained_layers(cfg, ly.select(cfg, "last", layers=k))
    assert first == list(range(k))
    assert last == list(range(L - k, L))
    # whole layers only: no tensor of an untouched layer is selected
    names = ly.select(cfg, "last", layers=k, train_head=False)
    assert {ly.layer_of(cfg, n) for n in names} == set(last)


def test_rinna_budget_counts_as_documented():
    for kind in ("first", "last", "random"):
        five = ly.select(RINNA, kind, budget=0.05, seed=3)
        ten = ly.select(RINNA, kind, budget=0.10, seed=3)
        assert len(ly.trained_layers(RINNA, five)) == 1 and ly.head_name(RINNA) in five
        assert len(ly.trained_layers(RINNA, ten)) == 3 and ly.head_name(RINNA) in ten
        assert ly.share(RINNA, five) == pytest.approx(0.05137, abs=1e-5)
        assert ly.share(RINNA, ten) == pytest.approx(0.10415, abs=1e-5)
    assert ly.layers_for_budget(RINNA, 0.05, train_head=False) == 2
    assert ly.layers_for_budget(RINNA, 0.10, train_head=False) == 4
    assert ly.trained_layers(RINNA, ly.select(RINNA, "last", budget=0.10)) == [33, 34, 35]
    assert ly.trained_layers(RINNA, ly.select(RINNA, "first", budget=0.05)) == [0]


def test_rinna_totals():
    assert RINNA.num_params() == 3_607_245_312
    counts = ly.param_counts(RINNA)
    assert sum(counts[n] for n in ly.layer_names(RINNA, 0)) == 95_194_880
    assert counts[ly.head_name(RINNA)] == counts[ly.embed_name(RINNA)] == 90_112_000


def test_random_is_reproducible_per_seed_and_differs_across_seeds():
    picks = {seed: tuple(ly.trained_layers(RINNA, ly.select(RINNA, "random", budget=0.10, seed=seed)))
             for seed in range(6)}
    assert picks[0] == tuple(ly.trained_layers(RINNA, ly.select(RINNA, "random", budget=0.10, seed=0)))
    assert len(set(picks.values())) >= 5
    assert all(len(p) == 3 for p in picks.values())


def test_explicit_layers_and_patterns():
    names = ly.select(TINY, "layers", layers=[0, -1], train_head=False)
    assert ly.trained_layers(TINY, names) == [0, 7]
    qkv = ly.select(TINY, "pattern", pattern=r"query_key_value\.weight$", train_head=False)
    assert len(qkv) == TINY.num_hidden_layers
    assert ly.select(TINY, "pattern", pattern=r"\.layers\.3\.mlp\.") == {
        "gpt_neox.layers.3.mlp.dense_h_to_4h.weight", "gpt_neox.layers.3.mlp.dense_h_to_4h.bias",
        "gpt_neox.layers.3.mlp.dense_4h_to_h.weight", "gpt_neox.layers.3.mlp.dense_4h_to_h.bias", "embed_out.weight"}
    assert ly.select(TINY, "attention", train_head=False) == {
        n for n in TINY.tensor_shapes() if ".attention." in n}
    assert len(ly.select(TINY, "norms", train_head=False)) == 4 * TINY.num_hidden_layers + 2
    assert ly.select(TINY, "embed") == {"gpt_neox.embed_in.weight", "embed_out.weight"}


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind="everything"), "unknown kind"),
    (dict(kind="first"), "exactly one of"),
    (dict(kind="first", budget=0.1, layers=2), "exactly one of"),
    (dict(kind="last", budget=1.5), "budget"),
    (dict(kind="last", budget=0.0), "budget"),
    (dict(kind="random", layers=99), "count"),
    (dict(kind="layers"), "needs layers"),
    (dict(kind="layers", layers=3), "list of layer indices"),
    (dict(kind="layers", layers=[8]), "out of range"),
    (dict(kind="pattern"), "needs pattern"),
    (dict(kind="pattern", pattern="("), "bad pattern"),
    (dict(kind="pattern", pattern="nothing_like_this"), "matches no tensor"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ly.select(TINY, **kwargs)


def test_report_table_and_dict():
    names = ly.select(RINNA, "last", budget=0.10)
    table, info = ly.report(RINNA, names)
    assert info["total"] == RINNA.num_params()
    assert info["trainable"] == 3 * 95_194_880 + 90_112_000
    assert info["percent"] == pytest.approx(10.415, abs=1e-3)
    assert info["layers_trained"] == [33, 34, 35] and info["tensors"] == 3 * 12 + 1
    groups = info["groups"]
    assert list(groups)[:2] == ["embed", "layer.0"] and list(groups)[-2:] == ["final_norm", "head"]
    assert len(groups) == 36 + 3
    assert groups["layer.35"]["percent"] == 100.0 and groups["layer.0"]["percent"] == 0.0
    assert groups["head"]["trainable"] == 90_112_000 and groups["embed"]["trainable"] == 0
    assert sum(g["total"] for g in groups.values()) == info["total"]
    assert "layer.35" in table and "10.42%" in table.splitlines()[-1]
    full_info = ly.report(RINNA, ly.select(RINNA, "full"))[1]
    assert full_info["percent"] == 100.0
    with pytest.raises(ValueError, match="unknown tensor"):
        ly.report(RINNA, {"gpt_neox.layers.36.mlp.dense_h_to_4h.weight"})


def test_ordered_follows_core_order():
    names = ly.select(TINY, "layers", layers=[2, 1])
    assert ly.ordered(TINY, names) == [n for n in TINY.tensor_shapes() if n in names]


def test_llama_groups_name_the_hf_modules():
    cfg = preset("llama-tiny")
    attn = ly.select(cfg, "attention", train_head=False)
    mlp = ly.select(cfg, "mlp", train_head=False)
    assert {n.split(".")[-2] for n in attn} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert {n.split(".")[-2] for n in mlp} == {"gate_proj", "up_proj", "down_proj"}
    assert len(attn) == 4 * cfg.num_hidden_layers and len(mlp) == 3 * cfg.num_hidden_layers
    assert ly.select(cfg, "head", train_head=False) == {"lm_head.weight"}
    tied = cfg.replace(tie_word_embeddings=True)
    assert ly.select(tied, "head", train_head=False) == {"model.embed_tokens.weight"}
    # budgets count whole layers as for GPT-NeoX: the last 2 of 8 layers + the head
    names = ly.select(cfg, "last", layers=2)
    assert ly.trained_layers(cfg, names) == [6, 7] and "lm_head.weight" in names
