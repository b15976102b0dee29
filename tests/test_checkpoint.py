"""HDF5 checkpoints: exact round trip, plain-h5py readability, metadata, bit-exact resume."""
import os

import numpy as np
import pytest

from gozaru import _core

CFG = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
           rotary_pct=0.25, rotary_emb_base=10000.0, max_position_embeddings=32, layer_norm_eps=1e-5,
           use_parallel_residual=False, tie_word_embeddings=False)
FROZEN = ("gpt_neox.embed_in.weight", "gpt_neox.layers.0.attention.dense.bias")


def make_model(seed=0):
    m = _core.Model(CFG, seed=seed)
    for n in m.names:
        m.set_trainable(n, n not in FROZEN)
    return m


def batch(step, B=2, T=12):
    rng = np.random.default_rng(1000 + step)
    toks = rng.integers(0, CFG["vocab_size"], size=(B, T + 1)).astype(np.int32)
    return np.ascontiguousarray(toks[:, :-1]), np.ascontiguousarray(toks[:, 1:])


def train(m, opt, steps, start=0):
    for s in range(start, start + steps):
        tokens, targets = batch(s)
        m.zero_grad()
        m.forward(tokens, targets)
        m.backward()
        opt.step(1e-2 * (1 + s % 3), max_grad_norm=1.0)


def assert_same_state(m1, o1, m2, o2):
    for n in m1.names:
        assert m1.param(n).tobytes() == m2.param(n).tobytes(), n
        assert m1.is_trainable(n) == m2.is_trainable(n), n
        assert o1.has_state(n) == o2.has_state(n), n
        if o1.has_state(n):
            (a_m, a_v, a_s), (b_m, b_v, b_s) = o1.get_state(n), o2.get_state(n)
            assert a_m.tobytes() == b_m.tobytes() and a_v.tobytes() == b_v.tobytes() and a_s == b_s, n


@pytest.fixture
def trained():
    _core.set_num_threads(1)
    m = make_model()
    opt = _core.AdamW(m, weight_decay=0.1)
    train(m, opt, 3)
    # A tensor trained earlier and frozen now keeps its state: it must survive the round trip too.
    m.set_trainable("gpt_neox.layers.1.mlp.dense_4h_to_h.bias", False)
    return m, opt


def test_round_trip_is_exact(tmp_path, trained):
    m, opt = trained
    path = str(tmp_path / "ckpt.h5")
    m.save_checkpoint(path, optimizer=opt, lr=3e-4, config_json='{"a": 1}', step=3, tokens_seen=72,
                      rng=b"\x00rng\xff", extra=b'{"cursor": 5}')
    m2 = _core.Model(CFG)
    opt2 = _core.AdamW(m2, weight_decay=0.1)
    m2.load_checkpoint(path, optimizer=opt2)
    assert_same_state(m, opt, m2, opt2)
    meta = _core.read_checkpoint_meta(path)
    assert meta["format"] == "gozaru" and meta["version"] == 1
    assert (meta["config_json"], meta["step"], meta["tokens_seen"]) == ('{"a": 1}', 3, 72)
    assert (meta["rng"], meta["extra"]) == (b"\x00rng\xff", b'{"cursor": 5}')
    assert meta["has_optimizer"] and meta["lr"] == pytest.approx(3e-4)
    assert meta["adamw"]["weight_decay"] == pytest.approx(0.1) and meta["adamw"]["decay_all"] is False
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_without_optimizer_and_empty_blobs(tmp_path, trained):
    m, _ = trained
    path = str(tmp_path / "w.h5")
    m.save_checkpoint(path)
    meta = _core.read_checkpoint_meta(path)
    assert not meta["has_optimizer"] and meta["rng"] == b"" and meta["extra"] == b"" and meta["config_json"] == ""
    m2 = _core.Model(CFG)
    opt2 = _core.AdamW(m2)
    m2.load_checkpoint(path, optimizer=opt2)  # nothing to restore, nothing to conflict with
    for n in m.names:
        assert np.array_equal(m.param(n), m2.param(n)) and not opt2.has_state(n)


def test_h5py_alone_reads_every_parameter(tmp_path, trained):
    import h5py
    m, opt = trained
    path = str(tmp_path / "ckpt.h5")
    m.save_checkpoint(path, optimizer=opt, config_json="{}", step=7)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"].decode() == "gozaru" and int(f.attrs["step"]) == 7
        assert set(f["params"]) == set(m.names)
        for n in m.names:
            ds = f["params"][n]
            assert ds.dtype == np.float32 and ds.shape == m.param(n).shape
            assert np.array_equal(ds[()], m.param(n)), n
            assert bool(ds.attrs["trainable"]) == m.is_trainable(n)
        for n in m.names:
            assert (n in f["optim/m"]) == opt.has_state(n)
        name = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"
        mom, vel, step = opt.get_state(name)
        assert np.array_equal(f["optim/m"][name][()], mom) and np.array_equal(f["optim/v"][name][()], vel)
        assert int(f["optim/m"][name].attrs["step"]) == step


def test_overwrite_keeps_latest(tmp_path, trained):
    m, _ = trained
    path = str(tmp_path / "ckpt.h5")
    for step in range(3):
        m.save_checkpoint(path, step=step)
    assert _core.read_checkpoint_meta(path)["step"] == 2
    assert os.listdir(tmp_path) == ["ckpt.h5"]


def test_missing_file_and_folder_are_os_errors(tmp_path, trained):
    m, _ = trained
    with pytest.raises(OSError, match="nope.h5"):
        _core.read_checkpoint_meta(str(tmp_path / "nope.h5"))
    with pytest.raises(OSError, match="no_such_folder"):
        m.save_checkpoint(str(tmp_path / "no_such_folder" / "c.h5"))


def test_optimizer_with_state_the_file_lacks_is_refused(tmp_path, trained):
    m, opt = trained
    path = str(tmp_path / "w.h5")
    m.save_checkpoint(path)  # no optimizer state in the file
    before = {n: m.param(n).copy() for n in m.names}
    with pytest.raises(RuntimeError, match="fresh optimizer"):
        m.load_checkpoint(path, optimizer=opt)
    for n in m.names:  # nothing changed
        assert np.array_equal(before[n], m.param(n))


def test_resume_is_bit_exact(tmp_path):
    _core.set_num_threads(2)
    try:
        N, k = 6, 3
        m_ref = make_model(seed=3)
        o_ref = _core.AdamW(m_ref, weight_decay=0.05)
        train(m_ref, o_ref, N)

        m1 = make_model(seed=3)
        o1 = _core.AdamW(m1, weight_decay=0.05)
        train(m1, o1, k)
        path = str(tmp_path / "mid.h5")
        m1.save_checkpoint(path, optimizer=o1, step=k)
        del m1, o1

        meta = _core.read_checkpoint_meta(path)
        m2 = _core.Model(CFG)
        o2 = _core.AdamW(m2, **{k_: meta["adamw"][k_] for k_ in ("beta1", "beta2", "eps", "weight_decay",
                                                                 "decay_all")})
        m2.load_checkpoint(path, optimizer=o2)
        train(m2, o2, N - meta["step"], start=meta["step"])
        assert_same_state(m_ref, o_ref, m2, o2)
    finally:
        _core.set_num_threads(1)


def test_public_api_round_trip(tmp_path):
    import gozaru as gz
    from gozaru import checkpoint

    cfg = gz.GPTNeoXConfig(**CFG, bos_token_id=1, eos_token_id=2)
    m = gz.Model(cfg, seed=4)
    m.train_only(["embed_out.weight", "gpt_neox.layers.0.attention.query_key_value.weight"])
    opt = gz.AdamW(m, lr=2e-3, betas=(0.8, 0.95), weight_decay=0.01)
    tokens, targets = batch(0)
    m.loss(tokens, targets)
    m.backward()
    opt.step()
    path = tmp_path / "run.h5"
    m.save(path, optimizer=opt, step=1, tokens_seen=24, rng=b"\x01\x02", extra={"cursor": 3})
    m2, opt2, info = gz.load(path)
    assert m2.config == cfg and m2.trainable_names() == m.trainable_names()
    assert info == {"step": 1, "tokens_seen": 24, "rng": b"\x01\x02", "extra": b'{"cursor": 3}'}
    assert opt2.lr == pytest.approx(2e-3)
    assert_same_state(m.core, opt.core, m2.core, opt2.core)

    summary = checkpoint.read_info(path)
    assert summary["config"] == cfg and summary["step"] == 1 and summary["has_optimizer"]
    assert summary["adamw"]["beta2"] == pytest.approx(0.95) and summary["num_params"] == m.num_params
    text = checkpoint.describe(path)
    assert "step 1" in text and "AdamW" in text and str(path) in text
    other = gz.Model(cfg.replace(rotary_pct=1.0), seed=None)  # the core owns the "same config" check
    with pytest.raises(gz.CheckpointError, match="rotary_pct"):
        other.core.load_checkpoint(str(path))


def test_concurrent_saves_and_loads(tmp_path):
    import threading

    models = [make_model(seed=s) for s in range(3)]
    errors = []

    def work(i):
        try:
            path = str(tmp_path / f"m{i}.h5")
            for step in range(8):
                models[i].save_checkpoint(path, step=step)
                other = _core.Model(CFG)
                other.load_checkpoint(path)
                assert np.array_equal(other.flat_params(), models[i].flat_params())
        except Exception as e:  # reported below: assertion errors in threads do not fail the test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_ctrl_c_during_save_keeps_the_previous_file(tmp_path, sigint_raises):
    import signal
    import threading
    import time

    m = _core.Model(dict(CFG, vocab_size=16384, hidden_size=128, num_attention_heads=4), seed=0)
    path = str(tmp_path / "big.h5")
    t0 = time.perf_counter()
    m.save_checkpoint(path, step=1)
    save_time = time.perf_counter() - t0
    interrupted_mid_save, previous = False, 1
    # The signal may come after a fast save (a loaded machine makes save times vary); then retry at other
    # points of the save.
    for fraction in (0.2, 0.1, 0.3, 0.05, 0.4, 0.15, 0.5, 0.25):
        timer = threading.Timer(fraction * save_time, os.kill, (os.getpid(), signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):
            timer.start()
            m.save_checkpoint(path, step=previous + 1)
            time.sleep(2 + 2 * save_time)  # a late signal lands here
        timer.join()
        assert os.listdir(tmp_path) == ["big.h5"]  # the temporary file was removed
        step = _core.read_checkpoint_meta(path)["step"]
        assert step in (previous, previous + 1)
        if step == previous:
            interrupted_mid_save = True
            break
        previous = step
    assert interrupted_mid_save
