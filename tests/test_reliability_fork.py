"""fork works: a child made by fork after a multi-threaded forward computes the same loss on one thread
(libgomp's pool is the parent's), and forking while another thread saves a checkpoint neither hangs the
child nor hands it a half-written HDF5 state. Every child is bounded by a timeout."""
import multiprocessing as mp
import threading

import numpy as np
import pytest

import gozaru as gz

CFG = gz.GPTNeoXConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=256, max_position_embeddings=64)
TIMEOUT = 30


@pytest.fixture
def two_threads():
    before = gz.get_num_threads()
    gz.set_num_threads(2)
    yield
    gz.set_num_threads(before)


def _run_child(target, *args):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(q, *args))
    p.start()
    p.join(TIMEOUT)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"forked child hung for {TIMEOUT} s")
    assert p.exitcode == 0
    return q.get(timeout=5)


def _loss_child(q, model, tokens):
    q.put((model.loss(tokens), gz.get_num_threads()))


def test_fork_after_threaded_forward_gives_same_loss(two_threads):
    model = gz.Model(CFG, seed=0)
    tokens = np.random.default_rng(0).integers(0, 256, (4, 64)).astype(np.int32)
    ref = model.loss(tokens)  # starts libgomp's thread pool in the parent
    loss, threads = _run_child(_loss_child, model, tokens)
    assert loss == ref and threads == 1
    assert model.loss(tokens) == ref and gz.get_num_threads() == 2  # the parent keeps its threads


def _save_child(q, path):
    m = gz.Model(CFG, seed=3)
    m.save(path)
    back = gz.load(path)[0]
    q.put(bool(np.array_equal(back.core.flat_params(), m.core.flat_params())))


def test_fork_while_another_thread_saves(tmp_path, two_threads):
    model = gz.Model(gz.GPTNeoXConfig(vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=1024, max_position_embeddings=64), seed=0)
    stop = threading.Event()
    saves = []

    def saver():
        while not stop.is_set():
            model.save(tmp_path / "parent.h5")
            saves.append(1)

    t = threading.Thread(target=saver)
    t.start()
    try:
        for i in range(4):
            assert _run_child(_save_child, str(tmp_path / f"child{i}.h5")) is True
    finally:
        stop.set()
        t.join()
    assert saves
    gz.load(tmp_path / "parent.h5")
