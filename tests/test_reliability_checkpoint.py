"""Untrusted checkpoints stay inside themselves (no external storage, links or virtual datasets; only the
layout the writer makes), small files cannot make the reader allocate gigabytes, and a save that fails on a
full disk (or a file size limit) raises one clear OSError, keeps the old file and lets the process exit."""
import itertools
import os
import resource
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import gozaru as gz

CFG = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, rotary_pct=0.25, max_position_embeddings=32)
PARAM = "params/gpt_neox.layers.1.attention.dense.weight"
MOMENT = "optim/v/gpt_neox.layers.1.attention.dense.weight"


def make_ckpt(path, seed):
    m = gz.Model(CFG, seed=seed)
    m.train_all()
    opt = gz.AdamW(m, lr=1e-3)
    m.loss(np.arange(20, dtype=np.int32).reshape(2, 10))
    m.backward()
    opt.step()
    m.save(path, optimizer=opt, step=1, rng=b"r" * 300, extra={"note": "x" * 300})
    return m


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("layouts")
    good, other = d / "good.h5", d / "other.h5"
    ref = make_ckpt(good, 0)
    make_ckpt(other, 1)  # "another file": its bytes must never become weights
    return d, good, other, ref.core.flat_params().copy()


def rewrite(path, target, kind, other):
    """Replaces dataset (or group) `target` of checkpoint `path` by one stored as `kind`."""
    with h5py.File(path, "r+") as f:
        obj = f[target]
        is_group = isinstance(obj, h5py.Group)
        data = None if is_group else obj[()]
        attrs = dict(obj.attrs)
        del f[target]
        if kind == "external_link":
            f[target] = h5py.ExternalLink(os.fspath(other), "/" + target)
            return
        if kind == "soft_link":
            with h5py.File(other, "r") as o:
                o.copy(o[target], f, target + "_copy")
            f[target] = h5py.SoftLink("/" + target + "_copy")
            return
        if is_group:
            raise ValueError("only links replace a group")
        if kind == "external_storage":
            with h5py.File(other, "r") as o:
                raw = np.ascontiguousarray(o[target][()])
            blob = os.path.join(os.path.dirname(path), "raw.bin")
            raw.tofile(blob)
            ds = f.create_dataset(target, shape=data.shape, dtype=data.dtype, external=[(blob, 0, raw.nbytes)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(os.fspath(other), "/" + target, shape=data.shape)
            ds = f.create_virtual_dataset(target, layout)
        elif kind == "contiguous":
            ds = f.create_dataset(target, data=data)
        elif kind == "compact":
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.COMPACT)
            space = h5py.h5s.create_simple(data.shape)
            dsid = h5py.h5d.create(f.id, target.encode(), h5py.h5t.py_create(data.dtype), space, dcpl=dcpl)
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
            ds = f[target]
        elif kind == "chunked_no_checksum":
            ds = f.create_dataset(target, data=data, chunks=True)
        elif kind == "gzip_checksum":
            ds = f.create_dataset(target, data=data, compression="gzip", fletcher32=True)
        elif kind == "shuffle_checksum":
            ds = f.create_dataset(target, data=data, shuffle=True, fletcher32=True)
        elif kind == "unwritten_checksum":  # extent declared, no chunk ever written
            ds = f.create_dataset(target, shape=data.shape, dtype=data.dtype, fletcher32=True, chunks=True)
        elif kind == "writer_layout":  # what gozaru itself writes: must still load
            ds = f.create_dataset(target, data=data, fletcher32=True, chunks=data.shape)
        else:
            raise AssertionError(kind)
        for k, v in attrs.items():
            ds.attrs[k] = v


KINDS = ["external_link", "soft_link", "external_storage", "virtual", "contiguous", "compact",
         "chunked_no_checksum", "gzip_checksum", "shuffle_checksum", "unwritten_checksum", "writer_layout"]
TARGETS = [PARAM, MOMENT, "params", "optim", "data"]


@pytest.mark.parametrize("target,kind", [(t, k) for t, k in itertools.product(TARGETS, KINDS)
                                         if k in ("external_link", "soft_link") or t not in ("params", "optim")])
def test_layout_fuzz(files, tmp_path, target, kind):
    """Every storage kind, link kind and filter on every kind of object: the file loads the values it holds
    with the writer's layout and is refused otherwise; another file's bytes never load."""
    _, good, other, ref = files
    path = tmp_path / "ckpt.h5"
    path.write_bytes(good.read_bytes())
    rewrite(path, target, kind, other)
    try:
        model, _, info = gz.load(path)
        _core_read = gz.checkpoint.read_info(path)
    except gz.CheckpointError as e:
        assert kind != "writer_layout", e
        assert "ckpt.h5" in str(e) and "\n" not in str(e)
        return
    assert kind == "writer_layout", f"{kind} at {target} loaded"
    assert np.array_equal(model.core.flat_params(), ref)
    assert _core_read["step"] == 1


@pytest.mark.parametrize("kind,match", [("external_storage", "another file"), ("virtual", "virtual"),
                                        ("external_link", "external link")])
def test_other_files_are_refused_by_name(files, tmp_path, kind, match):
    _, good, other, _ = files
    path = tmp_path / "ckpt.h5"
    path.write_bytes(good.read_bytes())
    rewrite(path, PARAM, kind, other)
    with pytest.raises(gz.CheckpointError, match=match):
        gz.load(path)


def test_small_file_declaring_huge_blob(files, tmp_path):
    """A 100 KB file whose /data declares 8 GiB: refused before allocating (info and load)."""
    _, good, _, _ = files
    path = tmp_path / "ckpt.h5"
    path.write_bytes(good.read_bytes())
    with h5py.File(path, "r+") as f:
        del f["data"]
        f.create_dataset("data", shape=(8 << 30,), dtype=np.uint8, chunks=(1 << 20,), fletcher32=True)
    assert path.stat().st_size < 1 << 20
    for fn in (gz.checkpoint.read_info, gz.load):
        with pytest.raises(gz.CheckpointError, match="declares 8589934592 elements"):
            fn(path)


def test_small_file_declaring_huge_model(files, tmp_path):
    """A stored config implying billions of parameters in a 100 KB file: refused before building the model."""
    _, good, _, _ = files
    path = tmp_path / "ckpt.h5"
    path.write_bytes(good.read_bytes())
    big = CFG.replace(vocab_size=50_000, hidden_size=4096, intermediate_size=16384, num_hidden_layers=32,
                      num_attention_heads=32)
    with h5py.File(path, "r+") as f:
        f.attrs["config"] = np.bytes_(big.to_json().encode())
    with pytest.raises(gz.CheckpointError, match=r"parameters.*bytes"):
        gz.load(path)


# ---------------------------------------------------------------- full disk (a file size limit, no root)

FULL_DISK_CHILD = textwrap.dedent('''
    import sys
    import numpy as np
    import gozaru as gz
    cfg = gz.GPTNeoXConfig.from_json(sys.argv[2])
    m = gz.Model(cfg, seed=1)
    opt = gz.AdamW(m, lr=1e-3)
    m.train_all()
    try:
        m.save(sys.argv[1], optimizer=opt)
        print("SAVED")
    except OSError as e:
        print("ERROR", type(e).__name__, repr(str(e)))
''')


def _limit(n):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return apply


def test_save_past_file_size_limit_exits_cleanly(files, tmp_path):
    _, good, _, _ = files
    target = tmp_path / "ckpt.h5"
    target.write_bytes(good.read_bytes())
    old = target.read_bytes()
    root = os.path.dirname(os.path.dirname(os.path.abspath(gz.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    size = len(old)
    outcomes = set()
    for limit in (size + 10, 0, 2_000, 9_000, 30_000, size // 2, size - 2_000):
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", FULL_DISK_CHILD, str(target), CFG.to_json()],
                           preexec_fn=_limit(limit), capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=60)
        assert r.returncode == 0, f"limit {limit}: rc {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
        out = r.stdout.strip()
        outcomes.add(out.split()[0])
        if out.startswith("ERROR"):
            assert "File too large" in out and "ckpt.h5" in out and "\\n" not in out and "0x" not in out, out
            assert target.read_bytes() == old, f"limit {limit}: the old checkpoint changed"
        else:
            assert out == "SAVED", out
            gz.load(target)  # the new one is whole
            target.write_bytes(old)
        assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    assert "ERROR" in outcomes


def test_hf_config_declaring_huge_model(tmp_path):
    """An HF folder whose config.json declares a model far larger than its weights: refused at once."""
    import json
    import time
    import tracemalloc
    m = gz.Model(CFG, seed=0)
    m.to_hf(tmp_path)
    big = CFG.replace(num_hidden_layers=4096, hidden_size=2048, num_attention_heads=16, intermediate_size=8192)
    (tmp_path / "config.json").write_text(json.dumps(big.to_hf_dict()))
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(gz.CheckpointError, match="declares .* parameters"):
        gz.Model.from_hf(tmp_path)
    assert time.perf_counter() - t < 1.0
    assert tracemalloc.get_traced_memory()[1] < 50 << 20
    tracemalloc.stop()
    absurd = dict(big.to_hf_dict(), num_hidden_layers=10 ** 12)
    t = time.perf_counter()
    with pytest.raises(ValueError, match="num_hidden_layers"):
        gz.GPTNeoXConfig.from_dict(absurd)
    assert time.perf_counter() - t < 1.0
