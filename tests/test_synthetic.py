"""The offline synthetic corpus: deterministic, large, varied, polite, and rewritable into ござる."""
import collections

import pytest

from gozaru.data import gozaru_rate, to_gozaru, to_gozaru_dataset
from gozaru.data.synthetic import _FACT_TEMPLATES, CATEGORIES, SyntheticCorpus


@pytest.fixture(scope="module")
def corpus():
    return SyntheticCorpus(0)


@pytest.fixture(scope="module")
def big(corpus):
    return corpus.instructions(20_000, seed=0)


def test_deterministic_per_seed(corpus):
    again = SyntheticCorpus(0)
    assert again.facts == corpus.facts
    assert again.instructions(300, seed=4) == corpus.instructions(300, seed=4)
    assert again.pretrain_texts(50, seed=4) == corpus.pretrain_texts(50, seed=4)
    assert again.heldout_questions() == corpus.heldout_questions()
    assert corpus.instructions(300, seed=5) != corpus.instructions(300, seed=4)
    assert corpus.pretrain_texts(50, seed=5) != corpus.pretrain_texts(50, seed=4)
    assert SyntheticCorpus(1).facts != corpus.facts


def test_large_and_varied(big):
    assert len(big) == 20_000
    assert len({(r.instruction, r.input, r.output) for r in big}) == 20_000
    per_category = collections.Counter(r.category for r in big)
    distinct = {
        "instructions": len({r.instruction for r in big}),
        "prompts": len({(r.instruction, r.input) for r in big}),
        "outputs": len({r.output for r in big}),
    }
    print("per category:", dict(per_category), "distinct:", distinct)
    assert set(per_category) == set(CATEGORIES)
    assert min(per_category.values()) > 1000
    assert distinct["prompts"] > 15_000 and distinct["outputs"] > 10_000 and distinct["instructions"] > 3_000


def test_answers_are_short_polite_and_rewrite_to_gozaru(big):
    assert max(len(r.output) for r in big) <= 60
    assert gozaru_rate(r.output for r in big).k == 0
    rewritten = to_gozaru_dataset(big)
    assert all(new.output != old.output for new, old in zip(rewritten, big))
    rate = gozaru_rate(r.output for r in rewritten)
    assert rate.rate == 1.0 and rate.ending_rate == 1.0


def test_categories_can_be_restricted_and_capacity_is_reported(corpus):
    only = corpus.instructions(200, seed=1, categories=["classification", "creative_writing"])
    assert {r.category for r in only} == {"classification", "creative_writing"}
    with pytest.raises(ValueError, match="unknown categories"):
        corpus.instructions(10, categories=["poetry"])
    with pytest.raises(ValueError, match="distinct records"):
        corpus.instructions(3000, categories=["open_qa"])


def test_heldout_facts_are_never_asked_in_instructions(corpus, big):
    held = corpus.heldout_questions()
    assert len(held) == round(0.2 * len(corpus.facts)) == len(corpus.heldout_facts)
    possible = {q.format(e=f.entity) for f in corpus.heldout_facts for q in _FACT_TEMPLATES[f.attribute][0]}
    asked = {r.instruction for r in big}
    assert not possible & asked
    train_possible = {q.format(e=f.entity) for f in corpus.train_facts for q in _FACT_TEMPLATES[f.attribute][0]}
    assert len(train_possible & asked) > 0.9 * len(train_possible)
    q = held[0]
    assert q.is_correct(q.reference) and not q.is_correct("わからぬでござる。")
    rec = q.record()
    assert rec.instruction == q.question and rec.output == q.reference and rec.category == "open_qa"


def test_prose_states_every_fact_and_has_no_gozaru(corpus):
    prose = corpus.pretrain_texts(400, seed=0)
    text = "".join(prose)
    for f in corpus.facts:
        _, _, polite, plain = _FACT_TEMPLATES[f.attribute]
        assert polite.format(e=f.entity, v=f.value) in text or plain.format(e=f.entity, v=f.value) in text
    assert "ござ" not in text
    assert len(set(prose)) == len(prose)
    assert gozaru_rate([to_gozaru(p) for p in prose]).rate > 0.5  # polite prose exists to rewrite
