"""Loaders, ござる-rate, dataset rewriting, splits, and the SFT prompt / mask / packing / batch pipeline."""
import json
import math
import os
import warnings

import numpy as np
import pytest

from gozaru.data import (IGNORE_INDEX, DataError, Record, SyntheticCorpus, format_prompt, generation_set,
                         gozaru_rate, iterate_batches, lm_arrays, load_dolly, num_batches, save_jsonl,
                         sft_arrays, to_gozaru_dataset, train_eval_split, wilson_interval)
from gozaru.data.sft import encode_example, truncate_example
from gozaru.data.tokenizer import Tokenizer

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "dolly_ja")


def fx(name):
    return os.path.join(FIX, name)


with open(fx("good.jsonl"), encoding="utf-8") as _f:
    EXPECTED = [Record(**json.loads(line)) for line in _f]


# -- loaders ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["good.json", "good.jsonl", "good.parquet", "folder"])
def test_good_files_load_in_every_format(name):
    recs = load_dolly(fx(name))
    assert list(recs) == EXPECTED
    assert recs.skipped == []
    assert all(isinstance(r, Record) for r in recs)


def test_folder_reads_data_files_in_name_order_and_ignores_others():
    recs = load_dolly(fx("folder"))
    assert [os.path.basename(f) for f in recs.files] == ["part-000.jsonl", "part-001.jsonl"]


def test_bom_and_loose_types_are_accepted():
    assert list(load_dolly(fx("bom.jsonl"))) == EXPECTED[:2]
    (rec,) = load_dolly(fx("loose.parquet"))
    assert rec.index == "7" and rec.input == "" and rec.output == EXPECTED[0].output


@pytest.mark.parametrize("name,where,field,message", [
    ("bad_syntax.jsonl", "line 3", None, "invalid JSON"),
    ("bad_fields.jsonl", "line 2", "output", "expected a string, got int"),
    ("bad_records.json", "record 2 (line 16)", "output", "missing"),
    ("truncated.json", "line ", None, "invalid JSON"),
    ("not_array.json", None, None, "expected a JSON array"),
    ("bad_utf8.jsonl", "line 2", None, "not UTF-8"),
    ("missing_column.parquet", None, "output", "missing column"),
    ("corrupt.parquet", None, None, "not a readable parquet file"),
])
def test_bad_files_name_file_location_and_field(name, where, field, message):
    with pytest.raises(DataError) as info:
        load_dolly(fx(name))
    err = info.value
    text = str(err)
    assert name in text and message in text
    assert err.file.endswith(name)
    if where:
        assert err.where.startswith(where) and where in text
    if field:
        assert err.field == field and f"field {field!r}" in text


@pytest.mark.parametrize("name,n_good,skipped", [
    ("bad_syntax.jsonl", 3, [("line 3", None)]),
    ("bad_fields.jsonl", 2, [("line 2", "output"), ("line 4", "instruction"), ("line 5", "output")]),
    ("bad_records.json", 2, [("record 2", "output"), ("record 3", None)]),
    ("bad_utf8.jsonl", 2, [("line 2", None)]),
    ("truncated.json", 0, [("line", None)]),
    ("corrupt.parquet", 0, [(None, None)]),
])
def test_skip_mode_counts_and_reports(name, n_good, skipped):
    with pytest.warns(UserWarning, match=f"skipped {len(skipped)}"):
        recs = load_dolly(fx(name), on_error="skip")
    assert len(recs) == n_good
    assert len(recs.skipped) == len(skipped)
    for s, (where, field) in zip(recs.skipped, skipped):
        assert s.file.endswith(name)
        assert (s.where is None) if where is None else s.where.startswith(where)
        assert s.field == field
    report = recs.report()
    assert f"loaded {n_good} record(s)" in report and f"skipped {len(skipped)}" in report


def test_skip_mode_is_silent_on_clean_files():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dolly(fx("good.jsonl"), on_error="skip")) == 5


def test_path_and_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dolly(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="folder has no"):
        load_dolly(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        load_dolly(fx("good.jsonl"), on_error="ignore")


def test_save_jsonl_round_trip(tmp_path):
    path = save_jsonl(EXPECTED, tmp_path / "out.jsonl")
    assert list(load_dolly(path)) == EXPECTED
    assert "富士山" in open(path, encoding="utf-8").read()  # Japanese stays readable


# -- ござる style on datasets ---------------------------------------------------------------------

def test_to_gozaru_dataset_rewrites_outputs_only():
    out = to_gozaru_dataset(EXPECTED)
    assert [r.instruction for r in out] == [r.instruction for r in EXPECTED]
    assert [r.input for r in out] == [r.input for r in EXPECTED]
    assert out[0].output == "日本で一番高い山は富士山でござる。標高は3776メートルでござる。"
    assert out[3].output == ("公園を散歩したり、図書館で本を読んだりするのがおすすめでござる。\n"
                             "友人と料理をするのも楽しいでござるよ。")
    assert out[4].output == "`reversed()` を使うか、`lst[::-1]` と書くでござる。"


def test_to_gozaru_dataset_can_drop_unchanged_and_takes_dicts():
    recs = [{"instruction": "a", "output": "はい。"}, {"instruction": "b", "output": "はいです。"}]
    out = to_gozaru_dataset(recs, drop_unchanged=True)
    assert [r.instruction for r in out] == ["b"] and out[0].output == "はいでござる。"


def test_gozaru_rate_on_hand_made_lists():
    r = gozaru_rate(["拙者は侍でござる。", "そうでござるか？", "はい。", "昔はそうでござった。"])
    assert (r.n, r.k, r.rate) == (4, 2, 0.5)
    assert r.ending_k == 3 and r.ending_rate == 0.75  # でござった ends in a ござ-form but has no ござる
    assert r.low == pytest.approx(0.1500, abs=1e-4) and r.high == pytest.approx(0.8500, abs=1e-4)
    r = gozaru_rate(["ござるの話をしましょう。"])  # anywhere counts for the rate, not for the ending
    assert (r.k, r.ending_k) == (1, 0)
    assert gozaru_rate(["でござる"] * 10).low == pytest.approx(0.7225, abs=1e-4)
    assert "50.0%" in str(gozaru_rate(["ござる", "いいえ"]))


def test_gozaru_rate_empty_and_wilson_edges():
    r = gozaru_rate([])
    assert r.n == 0 and math.isnan(r.rate) and (r.low, r.high) == (0.0, 1.0)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)


# -- splits ---------------------------------------------------------------------------------------

def test_train_eval_split_is_deterministic_disjoint_and_ordered():
    items = list(range(1000))
    train, evals = train_eval_split(items, 0.1, seed=3)
    assert (train, evals) == train_eval_split(items, 0.1, seed=3)
    assert len(evals) == 100 and sorted(train + evals) == items
    assert train == sorted(train) and evals == sorted(evals)
    assert evals != train_eval_split(items, 0.1, seed=4)[1]
    assert len(train_eval_split(items[:5], 0.01)[1]) == 1
    assert train_eval_split(items, 0.0) == (items, [])
    with pytest.raises(ValueError):
        train_eval_split(items, 1.0)


# -- SFT pipeline ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus():
    return SyntheticCorpus(0)


@pytest.fixture(scope="module")
def tok(corpus):
    texts = corpus.pretrain_texts(1500) + [f"{r.instruction}\n{r.input}\n{r.output}"
                                           for r in corpus.instructions(1500)]
    texts.append("ユーザー: システム: ### 指示: ### 入力: ### 回答: 以下は、タスクを説明する指示です。ござる")
    return Tokenizer.train(texts, 1000, seed=0)


@pytest.fixture(scope="module")
def records(corpus):
    return corpus.instructions(64, seed=1)


def test_rinna_and_alpaca_prompt_formats():
    with_input = Record("要約してください。", "長い\n文章", "短い文です。")
    no_input = Record("日本の首都は？", "", "東京です。")
    assert format_prompt(with_input) == "ユーザー: 要約してください。<NL>長い<NL>文章<NL>システム: "
    assert format_prompt(no_input) == "ユーザー: 日本の首都は？<NL>システム: "
    alpaca = format_prompt(with_input, "alpaca")
    assert "### 指示:\n要約してください。\n\n### 入力:\n長い\n文章\n\n### 回答:\n" in alpaca
    assert alpaca.endswith("### 回答:\n")
    assert "### 入力:" not in format_prompt(no_input, "alpaca")
    assert format_prompt({"instruction": "日本の首都は？"}) == format_prompt(no_input)  # prompt-only dict
    with pytest.raises(DataError, match="instruction"):
        format_prompt({"input": "x"})
    with pytest.raises(ValueError, match="unknown prompt style"):
        format_prompt(no_input, "chatml")


@pytest.mark.parametrize("style", ["rinna", "alpaca"])
def test_unmasked_targets_decode_to_answer_plus_eos(tok, records, style):
    data = sft_arrays(records, tok, seq_len=256, style=style)
    assert data.tokens.dtype == np.int32 and data.targets.dtype == np.int32
    assert data.tokens.flags["C_CONTIGUOUS"] and data.targets.flags["C_CONTIGUOUS"]
    assert data.tokens.shape == data.targets.shape == (len(records), 256)
    assert data.n_truncated == 0
    for b, rec in enumerate(records):
        tgt = data.targets[b]
        kept = tgt[tgt != IGNORE_INDEX]
        assert kept[-1] == tok.eos_id and tok.eos_id not in kept[:-1]
        assert tok.decode(kept) == rec.output
        assert list(kept) == tok.encode_answer(rec.output)
        # next-token shift: the target at t is the input at t+1
        pos = np.nonzero(tgt != IGNORE_INDEX)[0]
        inner = pos[pos + 1 < data.tokens.shape[1]]
        assert np.array_equal(data.tokens[b, inner + 1], tgt[inner])
        # the prompt is never a target; the prompt tokens come first
        prompt = tok.encode(format_prompt(rec, style))
        assert list(data.tokens[b, : len(prompt)]) == prompt
        assert pos[0] == len(prompt) - 1
        # padding: pad tokens, ignored targets
        end = len(prompt) + len(kept)
        assert np.all(data.tokens[b, end:] == tok.pad_id) and np.all(tgt[end - 1:] == IGNORE_INDEX)


def test_packing_keeps_every_answer_and_fills_rows(tok, records):
    plain = sft_arrays(records, tok, seq_len=256)
    packed = sft_arrays(records, tok, seq_len=256, pack=True, seed=5)
    assert len(packed) < len(plain) // 2
    assert packed.n_target_tokens == plain.n_target_tokens
    answers = []
    for row in packed.targets:
        run = []
        for t in list(row) + [IGNORE_INDEX]:
            if t != IGNORE_INDEX:
                run.append(int(t))
            elif run:
                answers.append(tok.decode(run))
                run = []
    assert sorted(answers) == sorted(r.output for r in records)
    again = sft_arrays(records, tok, seq_len=256, pack=True, seed=5)
    assert np.array_equal(again.tokens, packed.tokens)
    other = sft_arrays(records, tok, seq_len=256, pack=True, seed=6)
    assert not np.array_equal(other.tokens, packed.tokens)


def test_truncation_keeps_the_start_of_the_answer(tok):
    long_input = Record("次の文章を要約してください。", "町の名産品はりんごです。" * 40, "りんごが有名な町です。")
    ex = encode_example(long_input, tok)
    cut = truncate_example(ex, 33)
    assert len(cut) == 33
    assert cut.answer_ids == ex.answer_ids  # the short answer fits whole
    assert cut.prompt_ids == ex.prompt_ids[-len(cut.prompt_ids):]
    assert tok.decode(cut.prompt_ids).endswith("\nシステム: ")
    long_answer = Record("話してください。", "", "山でござる。" * 60)
    ex = encode_example(long_answer, tok)
    assert len(ex.prompt_ids) < 30
    cut = truncate_example(ex, 60)
    assert cut.prompt_ids == ex.prompt_ids  # a prompt shorter than half the window stays whole
    assert cut.answer_ids == ex.answer_ids[:len(cut.answer_ids)]
    assert len(cut) == 60 and tok.eos_id not in cut.answer_ids
    both = encode_example(Record("要約してください。", "長い文章です。" * 50, "山でござる。" * 60), tok)
    cut = truncate_example(both, 40, min_prompt_tokens=10)
    assert len(cut.prompt_ids) == 10 and cut.prompt_ids == both.prompt_ids[-10:]
    assert cut.answer_ids == both.answer_ids[:30]
    data = sft_arrays([long_input, long_answer], tok, seq_len=32)
    assert data.n_truncated == 2 and data.tokens.shape == (2, 32)
    kept = data.targets[0][data.targets[0] != IGNORE_INDEX]
    assert tok.decode(kept) == long_input.output and kept[-1] == tok.eos_id


def test_batches_are_fixed_shape_seeded_and_cover_each_epoch(tok, records):
    data = sft_arrays(records, tok, seq_len=128)
    batches = list(iterate_batches(data, 10, seed=1))
    assert len(batches) == num_batches(len(records), 10) == 7
    for tokens, targets in batches:
        assert tokens.shape == targets.shape == (10, 128) and tokens.dtype == targets.dtype == np.int32
        assert tokens.flags["C_CONTIGUOUS"] and targets.flags["C_CONTIGUOUS"]
    seen = np.concatenate([t for t, _ in batches])[: len(records)]
    assert sorted(map(bytes, seen)) == sorted(map(bytes, data.tokens))
    assert np.all(batches[-1][1][4:] == IGNORE_INDEX)  # 64 = 6*10 + 4: six filler rows
    same = list(iterate_batches(data, 10, seed=1))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, same))
    assert not np.array_equal(next(iterate_batches(data, 10, seed=2))[0], batches[0][0])
    assert len(list(iterate_batches(data, 10, drop_last=True, epochs=2))) == 12
    stream = iterate_batches(data, 10, epochs=None)
    assert len([next(stream) for _ in range(20)]) == 20


def test_lm_arrays_target_every_id_once(tok, corpus):
    texts = corpus.pretrain_texts(20, seed=2)
    data = lm_arrays(texts, tok, seq_len=64)
    stream = [i for t in texts for i in tok.encode(t, add_eos=True)]
    kept = data.targets[data.targets != IGNORE_INDEX]
    assert list(kept) == stream[1:]
    assert list(data.tokens[0]) == stream[:64]


def test_generation_set_prompts_and_references(tok, records):
    gen = generation_set(records[:8], tok)
    assert len(gen) == 8 and gen.references == [r.output for r in records[:8]]
    for ids, rec in zip(gen.prompts, gen.records):
        assert ids == tok.encode(format_prompt(rec))
        assert tok.decode(ids).endswith("\nシステム: ")
    short = generation_set(records[:8], tok, max_prompt_tokens=6)
    assert all(len(p) <= 6 and p == full[-len(p):] for p, full in zip(short.prompts, gen.prompts))


def test_unpacked_rows_give_each_examples_own_loss():
    """The default (no packing): the batch loss is the token-weighted mean of each example's loss computed
    alone, so no example sees another (fp32 sums: relative error ~1e-6)."""
    import gozaru as gz
    records = SyntheticCorpus(0).instructions(6, seed=1)
    tok = Tokenizer.train([f"{r.instruction}\n{r.output}" for r in SyntheticCorpus(0).instructions(200, seed=2)],
                          vocab_size=1000, seed=0)
    rows = sft_arrays(records, tok, seq_len=96)
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=128)
    model = gz.Model(cfg, seed=0)
    batch = model.loss(rows.tokens, rows.targets)
    counts = (rows.targets != -100).sum(axis=1)
    ends = [int(np.flatnonzero(t != -100).max()) + 1 for t in rows.targets]   # each row cut after its answer
    alone = [model.loss(rows.tokens[i:i + 1, :e], rows.targets[i:i + 1, :e]) for i, e in enumerate(ends)]
    assert abs(batch - float(np.dot(alone, counts) / counts.sum())) < 1e-5 * abs(batch)
