"""HF tokenizer.json tokenizers (byte-level BPE as Llama 3 / Qwen use) beside SentencePiece: the same ids and
texts as transformers' AutoTokenizer, chat templates rendered like transformers' apply_chat_template, the chat
SFT style, and the check against a model's config. The tokenizer is built here, offline."""
import json

import numpy as np
import pytest

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import gozaru as gz
from gozaru.data import HFTokenizer, SyntheticCorpus, load_tokenizer
from gozaru.data.sft import encode_example, format_prompt, sft_arrays

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nあなたは親切なアシスタントです。<|im_end|>\\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}"
          "{{ raise_exception('unknown role') }}{% endif %}"
          "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
          "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]


def sentences(n=200):
    texts = SyntheticCorpus(seed=5).pretrain_texts(n - 4, seed=2)
    return texts + ["改行\nと  空白 ", "😀𠮷 mixed English 123", "タブ\tです", " 先頭の空白"]


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(SyntheticCorpus(seed=0).pretrain_texts(300), trainer)
    tk.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "bos_token": None, "chat_template": CHATML}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    return folder


def test_encode_decode_equal_transformers_on_200_sentences(bpe_folder):
    tok = load_tokenizer(bpe_folder)
    assert isinstance(tok, HFTokenizer)
    auto = transformers.AutoTokenizer.from_pretrained(bpe_folder)
    assert tok.vocab_size == len(auto)
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (auto.eos_token_id, auto.pad_token_id, -1)
    for s in sentences():
        ids = tok.encode(s)
        assert ids == auto.encode(s, add_special_tokens=False), s
        assert tok.decode(ids) == s == auto.decode(ids)
    assert tok.encode_answer("はい")[-1] == tok.eos_id
    assert tok.decode_answer(tok.encode_answer("はい") + tok.encode("続き")) == "はい"


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_chat_template_renders_like_transformers(bpe_folder, tmp_path, template):
    folder = tmp_path / template
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((bpe_folder / "tokenizer.json").read_bytes())
    special = {"eos_token": "<|eot_id|>", "bos_token": "<|begin_of_text|>"} if template == "llama3" else \
        {"eos_token": "<|im_end|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              **special}))
    # transformers 5 keeps the template in its own file: read from there too
    (folder / "chat_template.jinja").write_text(LLAMA3 if template == "llama3" else CHATML)
    tok = load_tokenizer(folder)
    auto = transformers.AutoTokenizer.from_pretrained(folder)
    conversations = [
        [{"role": "user", "content": "富士山の高さは？"}],
        [{"role": "system", "content": "短く答えて"}, {"role": "user", "content": "猫とは\n何か"},
         {"role": "assistant", "content": "動物でござる。"}, {"role": "user", "content": " もう一度 "}],
    ]
    for messages in conversations:
        for gen in (False, True):
            text = tok.apply_chat_template(messages, add_generation_prompt=gen)
            assert text == auto.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            want = auto.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True)
            want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
            assert tok.encode(text) == list(want)
    if template == "llama3":
        with pytest.raises(Exception, match="unknown role"):
            tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_chat_sft_style_uses_the_template(bpe_folder):
    tok = load_tokenizer(bpe_folder)
    auto = transformers.AutoTokenizer.from_pretrained(bpe_folder)
    rec = {"instruction": "日本の首都は？", "input": "一語で", "output": "東京でござる。"}
    messages = [{"role": "user", "content": "日本の首都は？\n\n一語で"}]
    assert format_prompt(rec, "chat", tok) == auto.apply_chat_template(messages, add_generation_prompt=True,
                                                                       tokenize=False)
    ex = encode_example(rec, tok, "chat")
    full = auto.apply_chat_template(messages + [{"role": "assistant", "content": rec["output"]}], tokenize=False)
    assert list(ex.prompt_ids) + list(ex.answer_ids) == auto.encode(full.rstrip(), add_special_tokens=False)
    assert ex.answer_ids[-1] == tok.eos_id          # the template's <|im_end|> closes the answer
    rows = sft_arrays([rec], tok, seq_len=64, style="chat")
    assert (rows.targets != -100).sum() == len(ex.answer_ids)
    with pytest.raises(ValueError, match="chat template"):
        format_prompt(rec, "chat", gz.data.Tokenizer.train(SyntheticCorpus(0).pretrain_texts(30), vocab_size=800))


def test_check_against_the_model(bpe_folder):
    tok = load_tokenizer(bpe_folder)
    ok = gz.GPTNeoXConfig(vocab_size=tok.vocab_size + 28, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64, eos_token_id=tok.eos_id)
    tok.check_model(ok)   # a padded model vocabulary is fine
    with pytest.raises(ValueError, match="vocab_size"):
        tok.check_model(gz.GPTNeoXConfig(vocab_size=tok.vocab_size - 1, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match="eos_token_id"):
        tok.check_model(gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64, eos_token_id=3))


def test_export_writes_an_hf_tokenizer_back(bpe_folder, tmp_path):
    tok = load_tokenizer(bpe_folder)
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, eos_token_id=tok.eos_id, bos_token_id=0)
    from gozaru.lab.export import export_hf
    export_hf(gz.Model(cfg, seed=0), tmp_path, tokenizer=tok)
    again = load_tokenizer(tmp_path)
    assert again.chat_template == CHATML and again.eos_id == tok.eos_id
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert [auto.encode(s, add_special_tokens=False) for s in sentences(20)] == [tok.encode(s) for s in sentences(20)]
    assert np.isfinite(gz.Model.from_hf(tmp_path).params["embed_out.weight"]).all()


def test_bad_files_are_named(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_cli_refuses_a_tokenizer_that_does_not_fit_the_model(bpe_folder, tmp_path, capsys):
    from gozaru.lab import cli
    jsonl = gz.data.save_jsonl(SyntheticCorpus(0).instructions(20, seed=1), tmp_path / "d.jsonl")
    small = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)
    gz.Model(small, seed=0).save(str(tmp_path / "base.h5"))
    assert cli.main(["train", "--base", str(tmp_path / "base.h5"), "--tokenizer", str(bpe_folder), "--data",
                     str(jsonl), "--style", "chat", "--eval-size", "4", "--steps", "1", "--out",
                     str(tmp_path / "o.h5"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "vocab_size is 64" in err and len(err.strip().splitlines()) == 1
