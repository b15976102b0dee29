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


def test_adapter_save_merge_and_attach_hold_one_step(tmp_path):
    """save_adapter, merge and attach on a LoRA model that another thread trains: every adapter value they
    read comes from one optimizer step (they take the model's busy guard, as checkpoints do)."""
    from safetensors.numpy import load_file
    lm = gz.lora.attach(gz.Model(CFG, seed=0), ("query_key_value", "dense"), r=4, alpha=8, seed=1)
    opt = gz.AdamW(lm, lr=1e-2)
    tokens = np.random.default_rng(0).integers(0, 512, (2, 16)).astype(np.int32)
    lm.loss(tokens)
    lm.backward()
    names = [n for s in lm.lora for n in lm.lora_names(s)]
    offsets = [(lm.core.tensor_info(n)["offset"], lm.core.tensor_info(n)["numel"]) for n in names]

    def adapters_of(flat):
        return np.concatenate([flat[o: o + k] for o, k in offsets])

    states = {adapters_of(lm.core.flat_params()).tobytes(): adapters_of(lm.core.flat_params()).copy()}
    stop, errors = threading.Event(), []

    def train():
        try:
            while not stop.is_set():
                opt.step()
                a = adapters_of(lm.core.flat_params())
                states[a.tobytes()] = a.copy()
        except Exception as e:
            errors.append(e)

    t = threading.Thread(target=train)
    t.start()
    saved, merged, attached = [], [], []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        gz.lora.save_adapter(lm, tmp_path / "a")
        f = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
        saved.append(np.concatenate([f[n].ravel() for n in names]))
        m = gz.lora.merge(lm)
        merged.append({s.target: m.params[s.target].copy() for s in lm.lora})
        more = gz.lora.attach(lm, ("dense_h_to_4h",), r=2)
        attached.append(np.concatenate([more.params[n].ravel() for n in names]))
    stop.set()
    t.join()
    assert not errors, errors
    torn = [i for i, a in enumerate(saved + attached) if a.tobytes() not in states]
    assert not torn, f"{len(torn)} of {len(saved) + len(attached)} adapter copies mix two steps"
    # a merged model must equal W + s B A of one recorded step
    base = {s.target: lm.params[s.target].astype(np.float64) for s in lm.lora}  # frozen: never changes
    split = np.cumsum([k for _, k in offsets])[:-1]
    candidates = []
    for flat in states.values():
        parts = dict(zip(names, np.split(flat, split)))
        candidates.append({s.target: (base[s.target] + s.scale * (
            parts[lm.lora_names(s)[1]].reshape(lm.params[lm.lora_names(s)[1]].shape).astype(np.float64)
            @ parts[lm.lora_names(s)[0]].reshape(lm.params[lm.lora_names(s)[0]].shape).astype(np.float64)
        )).astype(np.float32) for s in lm.lora})
    for m in merged[:20]:
        assert any(all(np.array_equal(m[k], c[k]) for k in m) for c in candidates), "a merge mixes two steps"
