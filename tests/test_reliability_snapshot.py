"""Snapshots are never torn: state_dict(), clone() and to_hf() taken while another thread trains hold the
weights of one step (all tensors from the same optimizer step)."""
import threading
import time

import numpy as np
import pytest

import gozaru as gz

CFG = gz.GPTNeoXConfig(vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=512, max_position_embeddings=32)


@pytest.fixture
def training():
    """A model trained in a background thread with plain AdamW steps; yields (model, finish), where finish()
    stops the thread and returns the digests of every state it went through."""
    model = gz.Model(CFG, seed=0)
    model.train_all()
    opt = gz.AdamW(model, lr=1e-3)
    tokens = np.random.default_rng(0).integers(0, 512, (2, 16)).astype(np.int32)
    model.loss(tokens)
    model.backward()
    states = {model.core.flat_params().tobytes().__hash__()}
    stop = threading.Event()
    errors = []

    def train():
        try:
            while not stop.is_set():
                opt.step()  # the same gradients each time: only the optimizer writes the weights
                states.add(model.core.flat_params().tobytes().__hash__())
        except Exception as e:  # a snapshot must never make training fail
            errors.append(e)

    t = threading.Thread(target=train)
    t.start()
    time.sleep(0.05)

    def finish():
        stop.set()
        t.join()
        assert not errors, errors
        return states

    yield model, finish
    finish()


def digest(tensors, names):
    return np.concatenate([np.asarray(tensors[n], np.float32).ravel() for n in names]).tobytes().__hash__()


def test_state_dict_and_clone_hold_one_step(training, tmp_path):
    model, finish = training
    taken = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        taken.append(digest(model.state_dict(), model.names))
        c = model.clone()
        taken.append(c.core.flat_params().tobytes().__hash__())
    model.to_hf(tmp_path)
    from safetensors.numpy import load_file
    taken.append(digest(load_file(str(tmp_path / "model.safetensors")), model.names))
    states = finish()  # every state the trainer went through, recorded after each step
    torn = [h for h in taken if h not in states]
    assert not torn, f"{len(torn)} of {len(taken)} snapshots mix weights of different steps"


def test_snapshot_is_a_copy():
    m = gz.Model(CFG, seed=0)
    snap = m.snapshot()
    snap[:] = 0
    assert m.core.flat_params().any()
    sd = m.state_dict()
    for n in m.names:
        assert np.array_equal(sd[n], m.params[n])
