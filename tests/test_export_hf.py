"""`gozaru export-hf` end to end: a LoRA run exported merged, in bf16, sharded, with tokenizer files, loads in
transformers (AutoModelForCausalLM + AutoTokenizer) and generates the same tokens as gozaru; the tokenizer files
encode 200 Japanese sentences exactly like the SentencePiece model trained with."""
import json

import numpy as np
import pytest

import torch
import transformers

import gozaru as gz
from gozaru.data import SyntheticCorpus
from gozaru.data.tokenizer import Tokenizer
from gozaru.engine.hf_export import to_bfloat16_bits
from gozaru.lab.cli import main

TOL = 1e-4  # max |a - b| / max |b| over fp32 logits (as tests/test_hf.py)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    tok = Tokenizer.train(SyntheticCorpus(seed=0).pretrain_texts(300), vocab_size=600, model_prefix_or_dir=folder)
    return tok, folder


def japanese_sentences(n=200):
    """Synthetic Japanese prose plus hand-written lines with newlines, spaces, digits, Latin, rare kanji and
    emoji (byte fallback), full-width forms, leading/trailing/double spaces."""
    texts = SyntheticCorpus(seed=3).pretrain_texts(n - 8, seed=11)
    extra = ["今日は\n晴れでござる。", "  二つの空白  と末尾 ", "𠮷野家で1,234円を払った😀", "ＡＢＣ１２３？！",
             "改行\r\nCRLF", "英語 mixed with 日本語 and 42 numbers", "鬱蒼とした森の奥に", "タブ\tと「括弧」"]
    return (texts + extra)[:n]


def test_tokenizer_files_round_trip_200_japanese_sentences(tokenizer, tmp_path):
    tok, folder = tokenizer
    from gozaru.data.tokenizer_files import write_tokenizer_files
    write_tokenizer_files(tok, tmp_path / "hf", model_max_length=64)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    sentences = japanese_sentences()
    assert len(sentences) == 200
    for s in sentences:
        ids = tok.encode(s)
        assert auto.encode(s, add_special_tokens=False) == ids, s
        assert auto.decode(ids) == tok.decode(ids), s
    assert (auto.eos_token_id, auto.pad_token_id, auto.bos_token_id) == (tok.eos_id, tok.pad_id, tok.bos_id)
    # the file gozaru itself reads back encodes the same way
    again = gz.data.load_tokenizer(tmp_path / "hf" / "tokenizer.json")
    assert [again.encode(s) for s in sentences[:20]] == [tok.encode(s) for s in sentences[:20]]


def _checkpoint(tok, tmp_path, lora=False):
    cfg = gz.GPTNeoXConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=64, rotary_pct=0.25, max_position_embeddings=64, initializer_range=0.3)
    model = gz.Model(cfg, seed=4)
    if lora:
        model = gz.lora.attach(model, r=4, alpha=8, seed=1)
        rng = np.random.default_rng(2)
        for s in model.lora:  # PEFT's init has B = 0: give the adapters a visible effect
            b = model.lora_names(s)[1]
            model.params[b][...] = rng.normal(0, 0.2, model.params[b].shape)
        model.params_changed()
    path = str(tmp_path / ("lora.h5" if lora else "full.h5"))
    model.save(path)
    return path


def test_lora_merged_bf16_sharded_export_generates_like_gozaru(tokenizer, tmp_path):
    tok, tok_folder = tokenizer
    ckpt = _checkpoint(tok, tmp_path, lora=True)
    out = tmp_path / "export"
    assert main(["export-hf", ckpt, str(out), "--tokenizer", str(tok_folder), "--merge-lora", "--dtype", "bf16",
                 "--max-shard-size", "20KB"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / f).is_file() for f in shards)
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tok.eos_id
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"

    lora_model = gz.load(ckpt)[0]
    merged = gz.lora.merge(lora_model)
    # the files hold the merged weights rounded to bf16 (nearest even, as torch rounds)
    back = gz.Model.from_hf(out)
    for name in merged.names:
        want = torch.from_numpy(merged.params[name]).to(torch.bfloat16).float().numpy()
        assert np.array_equal(back.params[name], want), name

    auto = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert auto.dtype == torch.bfloat16
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    prompts = ["ユーザー: 富士山について教えて\nシステム: ", "ユーザー: 猫はなぜ眠るのか\nシステム: "]
    ours = back.generate([tok.encode(p) for p in prompts], max_new_tokens=16, eos_token_id=-1)
    for p, mine in zip(prompts, ours):
        ids = hf_tok(p, add_special_tokens=False, return_tensors="pt").input_ids
        assert ids[0].tolist() == tok.encode(p)
        ref = hf.generate(ids, do_sample=False, max_new_tokens=16, min_new_tokens=16, pad_token_id=tok.pad_id)
        assert ref[0, ids.shape[1]:].tolist() == mine


def test_merged_export_logits_equal_base_plus_adapter(tokenizer, tmp_path):
    tok, tok_folder = tokenizer
    ckpt = _checkpoint(tok, tmp_path, lora=True)
    out = tmp_path / "export"
    assert main(["export-hf", ckpt, str(out), "--tokenizer", str(tok_folder), "--merge-lora"]) == 0
    lora_model = gz.load(ckpt)[0]
    tokens = np.random.default_rng(0).integers(0, tok.vocab_size, size=(2, 12), dtype=np.int32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    with torch.no_grad():
        ref = hf(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
    ours = lora_model.logits(tokens)   # base + adapters, unmerged
    assert np.abs(ours - ref).max() / np.abs(ref).max() < TOL
    merged = gz.lora.merge(lora_model)   # the adapters matter: the merge moved every adapted weight
    for s in lora_model.lora:
        moved = np.abs(merged.params[s.target] - lora_model.params[s.target]).max()
        assert moved > 100 * TOL * np.abs(lora_model.params[s.target]).max(), s.target


def test_lora_export_without_merge_is_refused(tokenizer, tmp_path, capsys):
    tok, tok_folder = tokenizer
    ckpt = _checkpoint(tok, tmp_path, lora=True)
    assert main(["export-hf", ckpt, str(tmp_path / "x"), "--tokenizer", str(tok_folder)]) == 1
    assert "--merge-lora" in capsys.readouterr().err


def test_export_without_a_tokenizer_says_how(tokenizer, tmp_path, capsys):
    tok, _ = tokenizer
    ckpt = _checkpoint(tok, tmp_path)
    assert main(["export-hf", ckpt, str(tmp_path / "x")]) == 1
    assert "--tokenizer" in capsys.readouterr().err


def test_fp16_and_bad_shard_size(tokenizer, tmp_path, capsys):
    tok, tok_folder = tokenizer
    ckpt = _checkpoint(tok, tmp_path)
    assert main(["export-hf", ckpt, str(tmp_path / "h"), "--tokenizer", str(tok_folder), "--dtype", "fp16"]) == 0
    back = gz.Model.from_hf(tmp_path / "h")
    full = gz.load(ckpt)[0]
    for name in full.names:
        assert np.array_equal(back.params[name], full.params[name].astype(np.float16).astype(np.float32)), name
    assert main(["export-hf", ckpt, str(tmp_path / "b"), "--no-tokenizer", "--max-shard-size", "lots"]) == 1
    assert "max shard size" in capsys.readouterr().err


def test_bfloat16_rounding_matches_torch():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(0, 1, 10_000), [0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-40, np.nan]])
    a = a.astype(np.float32)
    want = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = to_bfloat16_bits(a)
    finite = ~np.isnan(a)
    assert np.array_equal(got[finite], want[finite])
    assert np.isnan((got[~finite].astype(np.uint32) << 16).view(np.float32)).all()


def test_push_to_hub_uploads_the_folder_to_a_local_hub(tokenizer, tmp_path, monkeypatch):
    """Against a local mock of the Hub's HTTP API (tests/hub_mock.py): no network."""
    import importlib

    import huggingface_hub
    from hub_mock import HubMock

    tok, tok_folder = tokenizer
    ckpt = _checkpoint(tok, tmp_path)
    with HubMock() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        importlib.reload(huggingface_hub.constants)   # the endpoint is read at import
        try:
            assert main(["export-hf", ckpt, str(tmp_path / "out"), "--tokenizer", str(tok_folder),
                         "--push-to-hub", "me/gozaru-test"]) == 0
        finally:
            monkeypatch.undo()
            importlib.reload(huggingface_hub.constants)
    assert ("POST", "/api/repos/create") in hub.requests
    local = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert hub.files == local
