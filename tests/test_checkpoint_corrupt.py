"""Bad checkpoints and bad HF folders give exceptions naming the file and the tensor or field, leave the
model unchanged, and fuzzed files never crash the interpreter."""
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gozaru as gz
from gozaru import _core
from gozaru import hf as gz_hf

import h5py

CFG = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, rotary_pct=0.25, max_position_embeddings=32)
NAME = "gpt_neox.layers.1.attention.dense.weight"


@pytest.fixture
def ckpt(tmp_path):
    m = gz.Model(CFG, seed=0)
    m.train_all()
    opt = gz.AdamW(m, lr=1e-3)
    tokens = np.arange(20, dtype=np.int32).reshape(2, 10)
    m.loss(tokens)
    m.backward()
    opt.step()
    path = tmp_path / "ckpt.h5"
    m.save(path, optimizer=opt, step=1)
    return path


def load_into_fresh(path, config=CFG):
    """Loads into a model with known contents and checks a failed load changed nothing."""
    m = gz.Model(config, seed=7)
    before = m.core.flat_params().copy()
    try:
        m.core.load_checkpoint(os.fspath(path))
    except Exception:
        assert np.array_equal(before, m.core.flat_params()), "a failed load changed the model"
        raise
    return m


def test_truncated_hdf5(ckpt):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(gz.CheckpointError, match="ckpt.h5.*(truncated|corrupt)"):
        load_into_fresh(ckpt)
    with pytest.raises(gz.CheckpointError, match="ckpt.h5"):
        gz.load(ckpt)


def test_not_hdf5(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("hello")
    with pytest.raises(gz.CheckpointError, match="notes.h5"):
        _core.read_checkpoint_meta(str(p))


def put_tensor(path, name, data):
    """Stores data as the checkpoint's tensor ``name``: a saved tensor is replaced (still trainable), a new name
    added; None deletes the tensor."""
    with h5py.File(path, "r+") as f:
        params = f["params"]
        saved = name in params
        if saved:
            del params[name]
        if data is not None:
            added = params.create_dataset(name, data=data)
            if saved:
                added.attrs["trainable"] = 1


@pytest.mark.parametrize("name,data,match", [
    (NAME, np.zeros((32, 31), np.float32), rf"{NAME}.*\[32, 31\].*\[32, 32\]"),
    (NAME, np.zeros((32, 32), np.float64), rf"{NAME}.*not float32"),
    (NAME, None, rf"missing.*{NAME}"),
    ("gpt_neox.layers.9.mlp.extra", np.zeros(3, np.float32), r"unknown.*gpt_neox.layers.9.mlp.extra"),
], ids=["wrong_shape", "wrong_dtype", "missing", "unknown"])
def test_a_bad_tensor_is_named(ckpt, name, data, match):
    put_tensor(ckpt, name, data)
    with pytest.raises(gz.CheckpointError, match=rf"ckpt.h5.*{match}"):
        load_into_fresh(ckpt)


def test_wrong_format_attribute(ckpt):
    with h5py.File(ckpt, "r+") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(gz.CheckpointError, match="ckpt.h5.*format.*something-else"):
        _core.read_checkpoint_meta(str(ckpt))
    with pytest.raises(gz.CheckpointError, match="ckpt.h5.*format"):
        load_into_fresh(ckpt)


def test_newer_version(ckpt):
    with h5py.File(ckpt, "r+") as f:
        f.attrs["version"] = 99
    with pytest.raises(gz.CheckpointError, match="ckpt.h5.*version 99"):
        gz.load(ckpt)


def test_config_mismatch(ckpt):
    with pytest.raises(gz.CheckpointError, match="ckpt.h5.*config mismatch.*rotary_pct"):
        load_into_fresh(ckpt, CFG.replace(rotary_pct=0.5))
    with pytest.raises(gz.CheckpointError, match="ckpt.h5.*(shape|config mismatch)"):
        load_into_fresh(ckpt, CFG.replace(intermediate_size=64))


def test_flipped_tensor_bytes_fail_the_checksum(ckpt):
    with h5py.File(ckpt, "r") as f:
        offset = f["params"][NAME].id.get_chunk_info(0).byte_offset
    data = bytearray(ckpt.read_bytes())
    data[offset + 100] ^= 0x10
    ckpt.write_bytes(bytes(data))
    with pytest.raises(gz.CheckpointError, match=rf"ckpt.h5.*{NAME}"):
        load_into_fresh(ckpt)


# ---------------------------------------------------------------- HF folders

def hf_folder(path, dtypes=None):
    """A folder with config.json and a model.safetensors of random weights (F32, or BF16 where asked)."""
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(CFG.to_hf_dict()))
    rng = np.random.default_rng(0)
    tensors = {n: rng.standard_normal(s).astype(np.float32) for n, s in CFG.tensor_shapes().items()}
    write_safetensors(path / "model.safetensors", tensors, dtypes or {})
    return tensors


def write_safetensors(path, tensors, dtypes):
    """A safetensors file by hand, so BF16 needs no torch (safetensors itself validates it on read)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors.items():
        if dtypes.get(name) == "BF16":
            raw = (a.view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": dtypes.get(name, "F32"), "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_bf16_safetensors_are_widened_exactly(tmp_path):
    tensors = hf_folder(tmp_path / "m", {NAME: "BF16"})
    m = gz.Model.from_hf(tmp_path / "m")
    expect = (tensors[NAME].view(np.uint32) & 0xFFFF0000).view(np.float32)
    assert np.array_equal(m.params[NAME], expect)
    assert np.array_equal(m.params["embed_out.weight"], tensors["embed_out.weight"])


def test_truncated_safetensors(tmp_path):
    hf_folder(tmp_path / "m")
    st = tmp_path / "m" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-1000])
    with pytest.raises(gz.CheckpointError, match="model.safetensors"):
        gz.Model.from_hf(tmp_path / "m")


def test_config_json_missing_a_field(tmp_path):
    hf_folder(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["hidden_size"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json.*hidden_size"):
        gz.Model.from_hf(tmp_path / "m")


def test_missing_and_misshapen_hf_tensors(tmp_path):
    tensors = hf_folder(tmp_path / "m")
    del tensors[NAME]
    write_safetensors(tmp_path / "m" / "model.safetensors", tensors, {})
    with pytest.raises(gz.CheckpointError, match=f"missing.*{NAME}"):
        gz.Model.from_hf(tmp_path / "m")
    tensors[NAME] = np.zeros((3, 32), np.float32)
    write_safetensors(tmp_path / "m" / "model.safetensors", tensors, {})
    with pytest.raises(gz.CheckpointError, match=rf"model.safetensors.*{NAME}.*\[3, 32\]"):
        gz.Model.from_hf(tmp_path / "m")


def test_bin_weights_without_torch(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_hf_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match="pytorch_model.bin.*needs torch"):
        gz.Model.from_hf(tmp_path)


def test_no_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_hf_dict()))
    with pytest.raises(FileNotFoundError, match="no weights"):
        gz.Model.from_hf(tmp_path)


# ---------------------------------------------------------------- fuzz (in a subprocess: a crash is a failure)

FUZZ_WORKER = textwrap.dedent('''
    import os, shutil, sys
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    import gozaru as gz
    from gozaru import _core, hf

    kind, src, work, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    data = open(src, "rb").read()
    target = os.path.join(work, "model.safetensors" if kind == "safetensors" else "ckpt.h5")
    cfg = gz.GPTNeoXConfig.from_json(open(os.path.join(work, "config.gz.json")).read())
    reference = gz.Model(cfg, seed=None)
    if kind == "hdf5":
        reference.core.load_checkpoint(src)
    outcomes = {"error": 0, "loaded": 0}

    positions = st.one_of(st.integers(0, len(data) - 1), st.integers(0, min(len(data) - 1, 4095)))

    # Deterministic by default; GOZARU_FUZZ_EXAMPLES=N explores N new random cases instead.
    @settings(max_examples=n, deadline=None, database=None, derandomize="GOZARU_FUZZ_EXAMPLES" not in os.environ,
              suppress_health_check=list(HealthCheck))
    @given(flips=st.lists(st.tuples(positions, st.integers(1, 255)), max_size=6),
           cut=st.one_of(st.none(), st.integers(0, len(data) - 1)))
    def case(flips, cut):
        buf = bytearray(data)
        for pos, x in flips:
            buf[pos] ^= x
        if cut is not None:
            del buf[cut:]
        with open(target, "wb") as f:
            f.write(buf)
        try:
            if kind == "hdf5":
                m = gz.Model(cfg, seed=None)
                m.core.load_checkpoint(target)
                # Everything but free space is checksummed: a file that loads holds the saved values.
                assert np.array_equal(m.core.flat_params(), reference.core.flat_params()), (flips, cut)
            else:
                gz.Model.from_hf(work)  # safetensors has no checksums: any values may load
            outcomes["loaded"] += 1
        except gz.CheckpointError:
            outcomes["error"] += 1

    case()
    print("outcomes", outcomes["error"], outcomes["loaded"])
''')


def run_fuzz(kind, src, work, n=int(os.environ.get("GOZARU_FUZZ_EXAMPLES", 200))):
    root = os.path.dirname(os.path.dirname(os.path.abspath(gz.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    (work / "config.gz.json").write_text(CFG.to_json())
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", FUZZ_WORKER, kind, str(src), str(work), str(n)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=work)  # cwd: no stray gozaru/
    assert r.returncode == 0, f"fuzz worker died (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    errors, loaded = map(int, r.stdout.split("outcomes")[1].split())
    assert errors + loaded >= n and errors > n // 4, (errors, loaded)


def test_fuzz_checkpoint(ckpt, tmp_path):
    src = tmp_path / "valid.h5"
    os.replace(ckpt, src)
    work = tmp_path / "work"
    work.mkdir()
    run_fuzz("hdf5", src, work)


def test_fuzz_safetensors(tmp_path):
    hf_folder(tmp_path / "m", {NAME: "BF16", "gpt_neox.embed_in.weight": "BF16"})
    src = tmp_path / "valid.safetensors"
    os.replace(tmp_path / "m" / "model.safetensors", src)
    run_fuzz("safetensors", src, tmp_path / "m")
