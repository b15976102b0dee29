"""Writers never lose data: a record that cannot be stored leaves the old file, re-saved files keep their
mode, no temporary file stays behind; loaders name file, line and field for text that is not text."""
import json
import os
import stat

import numpy as np
import pytest

import gozaru as gz
from gozaru import data

CFG = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=48, max_position_embeddings=16)
REC = {"instruction": "質問", "input": "", "output": "答え", "index": "0", "category": "open_qa"}


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "tmp" in p.name)


def test_save_jsonl_keeps_old_file_on_unencodable_record(tmp_path):
    path = tmp_path / "r.jsonl"
    data.save_jsonl([REC], path)
    old = path.read_bytes()
    bad = dict(REC, output="ok\ud800")
    with pytest.raises(data.DataError, match=r"r.jsonl, record 1, field 'output'.*surrogate"):
        data.save_jsonl([REC, bad], path)
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []


def test_jsonl_loader_rejects_lone_surrogate_and_deep_nesting(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(REC) + "\n" + json.dumps(dict(REC, instruction="x\ud800")) + "\n")
    with pytest.raises(data.DataError, match=r"a.jsonl, line 2, field 'instruction'.*surrogate"):
        data.load_dolly(p)
    deep = '{"instruction": ' + "[" * 100_000 + "]" * 100_000 + ', "output": "x"}'
    p.write_text(json.dumps(REC) + "\n" + deep + "\n")
    with pytest.raises(data.DataError, match=r"a.jsonl, line 2.*nested too deeply"):
        data.load_dolly(p)
    q = tmp_path / "b.json"
    q.write_text("[" + json.dumps(REC) + ", " + deep + "]")
    with pytest.raises(data.DataError, match=r"b.json.*nested too deeply"):
        data.load_dolly(q)


def test_checkpoint_resave_keeps_mode(tmp_path):
    m = gz.Model(CFG, seed=0)
    path = tmp_path / "c.h5"
    m.save(path)
    os.chmod(path, 0o600)
    m.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_hf_export_keeps_mode_and_old_files_on_failure(tmp_path):
    m = gz.Model(CFG, seed=0)
    m.to_hf(tmp_path)
    for name in ("model.safetensors", "config.json"):
        os.chmod(tmp_path / name, 0o600)
    m.to_hf(tmp_path)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    old = (tmp_path / "model.safetensors").read_bytes()

    tensors = [(n, m.params[n]) for n in m.names]
    tensors[-1] = (tensors[-1][0], object())  # fails mid-write, after earlier tensors were written
    with pytest.raises(Exception):
        gz.hf.write_folder(tmp_path, m.config, tensors)
    assert (tmp_path / "model.safetensors").read_bytes() == old
    assert leftovers(tmp_path) == []


def test_no_python_writer_bypasses_fileio():
    """Every Python-side file write goes through gozaru.fileio (exclusive temp, fsync, rename, mode kept)."""
    import re
    root = os.path.dirname(gz.__file__)
    bad = []
    pattern = re.compile(r"""open\([^)]*["'][wax]b?["']|\.tmp-|write_text\(|write_bytes\(""")
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py") and f != "fileio.py":
                text = open(os.path.join(folder, f), encoding="utf-8").read()
                bad += [f"{f}: {m.group(0)}" for m in pattern.finditer(text)]
    assert bad == []
