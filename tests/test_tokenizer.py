"""Tokenizer: rinna conventions, exact round trips, batches, training determinism, save/load."""
import hashlib
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import sentencepiece as spm

from gozaru.data.synthetic import SyntheticCorpus
from gozaru.data.tokenizer import NEWLINE_PIECE, Tokenizer

MIXED = [
    "日本で一番高い山は富士山です。標高は3776メートルです。",
    "カタカナとひらがな、漢字が混ざった文章でござる！",
    "Pythonの`print()`関数で Hello, World! と表示します。",
    "２０２４年１２月３１日、気温は-3.5℃でした。",
    "絵文字も大丈夫です😊🍣🗻 ✨",
    "一行目\n二行目\n\n四行目",
    "  前後に空白  と\tタブ ",
    "ﾊﾝｶｸｶﾅ と 全角ＡＢＣ と 𠮷野家",
]


@pytest.fixture(scope="module")
def texts():
    corpus = SyntheticCorpus(0)
    return corpus.pretrain_texts(1500) + [f"{r.instruction}\n{r.input}\n{r.output}"
                                          for r in corpus.instructions(1500)]


@pytest.fixture(scope="module")
def tok(texts):
    return Tokenizer.train(texts, 1000, seed=0)


def test_trained_model_has_rinna_special_ids(tok):
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.newline_id) == (0, 1, 2, 3, 4)
    assert [tok.id_to_piece(i) for i in range(5)] == ["[PAD]", "<unk>", "<s>", "</s>", NEWLINE_PIECE]
    assert tok.vocab_size == len(tok) <= 1000


@pytest.mark.parametrize("text", MIXED)
def test_round_trip_mixed_scripts(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.unk_id not in ids  # byte fallback covers unseen characters
    assert tok.decode(ids) == text


def test_newlines_are_the_nl_piece(tok):
    ids = tok.encode("山\n川")
    assert ids.count(tok.newline_id) == 1
    assert tok.encode("山<NL>川") == ids
    assert tok.decode(ids) == "山\n川"
    assert tok.decode(ids, newlines=False) == "山<NL>川"
    assert tok.encode("a\r\nb") == tok.encode("a\nb")


def test_special_tokens_only_when_asked(tok):
    ids = tok.encode("こんにちは")
    assert tok.bos_id not in ids and tok.eos_id not in ids
    assert tok.encode("こんにちは", add_bos=True, add_eos=True) == [tok.bos_id] + ids + [tok.eos_id]
    answer = tok.encode_answer("はい、そうでござる。")
    assert answer[-1] == tok.eos_id and tok.decode(answer) == "はい、そうでござる。"


def test_decode_skips_specials_and_generation_filler(tok):
    ids = tok.encode("山です")
    assert tok.decode([tok.bos_id] + ids + [tok.eos_id, tok.pad_id, -1, -1]) == "山です"
    assert tok.decode_answer(ids + [tok.eos_id] + tok.encode("続き")) == "山です"
    assert tok.decode_answer(ids + [-1, -1]) == "山です"
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])


def test_batches_are_padded_int32(tok):
    texts = ["山", "日本で一番高い山は富士山です。", ""]
    ids, lens = tok.encode_batch(texts)
    assert ids.dtype == np.int32 and lens.dtype == np.int32 and ids.flags["C_CONTIGUOUS"]
    assert ids.shape == (3, int(lens.max())) and lens[2] == 0
    for row, n, t in zip(ids, lens, texts):
        assert list(row[:n]) == tok.encode(t) and np.all(row[n:] == tok.pad_id)
    assert tok.decode_batch(ids, lens) == texts
    assert tok.decode_batch(ids) == texts  # padding is dropped anyway
    cut, cut_lens = tok.encode_batch(texts, max_len=3, add_eos=True)
    assert cut.shape == (3, 3) and list(cut_lens) == [2, 3, 1]
    assert list(cut[0][:2]) == tok.encode("山", add_eos=True)


def test_training_is_deterministic(texts, tok):
    again = Tokenizer.train(texts, 1000, seed=0)
    assert again.model_proto() == tok.model_proto()


_TRAIN_IN_SUBPROCESS = """
import hashlib, sys
from gozaru.data.synthetic import SyntheticCorpus
from gozaru.data.tokenizer import Tokenizer
texts = SyntheticCorpus(0).pretrain_texts(1500)
tok = Tokenizer.train(texts, 1000, seed=int(sys.argv[1]), input_sentence_size=1000)
print(hashlib.sha256(tok.model_proto()).hexdigest())
"""


def _model_hash_in_fresh_process(seed):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _TRAIN_IN_SUBPROCESS, str(seed)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_sampled_training_is_deterministic_across_processes():
    """More lines than input_sentence_size: the seeded sample decides the model, in any process."""
    texts = SyntheticCorpus(0).pretrain_texts(1500)
    here = hashlib.sha256(Tokenizer.train(texts, 1000, seed=1, input_sentence_size=1000).model_proto()).hexdigest()
    assert _model_hash_in_fresh_process(1) == here
    assert _model_hash_in_fresh_process(1) == here
    other = Tokenizer.train(texts, 1000, seed=2, input_sentence_size=1000).model_proto()
    assert hashlib.sha256(other).hexdigest() != here


def test_save_and_load_as_prefix_folder_and_file(tmp_path, texts, tok):
    folder = tmp_path / "tok"
    folder.mkdir()
    trained = Tokenizer.train(texts[:300], 1000, folder, seed=0)
    assert (folder / "spiece.model").is_file()
    assert Tokenizer.load(folder).model_proto() == trained.model_proto()
    Tokenizer.train(texts[:300], 1000, tmp_path / "sub" / "gozaru", seed=0)
    assert (tmp_path / "sub" / "gozaru.model").is_file()
    path = tok.save(tmp_path / "copy.model")
    loaded = Tokenizer.load(path)
    assert loaded.encode(MIXED[0]) == tok.encode(MIXED[0])
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "sub")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        Tokenizer.load(tmp_path / "junk.model")
    with pytest.raises(ValueError, match="no non-empty text"):
        Tokenizer.train(["", "\n"], 100)


def test_special_ids_come_from_the_model(texts):
    """A model laid out differently (here unk=0, bos=1, eos=2, <pad>=3) keeps its own ids."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts[:300]), model_writer=out, vocab_size=400,
                                   hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
                                   pad_piece="<pad>", user_defined_symbols=[NEWLINE_PIECE], minloglevel=2)
    tok = Tokenizer.from_bytes(out.getvalue())
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id, tok.newline_id) == (0, 1, 2, 3, 4)
    assert tok.encode_answer("山")[-1] == 2


@pytest.mark.slow
def test_training_on_the_demo_corpus_is_fast():
    corpus = SyntheticCorpus(0)
    texts = corpus.pretrain_texts(20000) + [f"{r.instruction}\n{r.input}\n{r.output}"
                                            for r in corpus.instructions(20000)]
    start = time.perf_counter()
    tok = Tokenizer.train(texts, 4000, seed=0)
    seconds = time.perf_counter() - start
    print(f"trained a {tok.vocab_size}-piece tokenizer on {len(texts)} texts in {seconds:.1f} s")
    # About 7 s on 2 idle cores; the bound leaves room for a busy machine.
    assert seconds < 60
    assert tok.vocab_size == 4000


def test_too_small_vocab_is_a_value_error(texts):
    with pytest.raises(ValueError, match="Tokenizer.train"):
        Tokenizer.train(texts[:300], 50)
