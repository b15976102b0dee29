"""Bad input at the ``gozaru._core`` boundary, continued: generation, checkpoint wrappers, module functions,
state dicts, the test-only ops and a model used from two threads (see test_bad_input.py for the rest)."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import gozaru as gz
from gozaru import _core
from test_bad_input import CFG, MAXPOS, NAME, V, core, ids  # noqa: F401,F811  (core is a fixture)


# --------------------------------------------------------------------------- generate
def gen(core, prompts, lens, max_new=3, **kw):
    return core.generate(prompts, lens, max_new, **kw)


@pytest.mark.parametrize("lens, exc, words", [
    (np.array([0, 3], np.int32), ValueError, r"lens\[0\] = 0"),
    (np.array([3, 5], np.int32), ValueError, r"lens\[1\] = 5"),          # longer than Tmax = 4
    (np.array([-1, 2], np.int32), ValueError, r"lens\[0\] = -1"),
    (np.array([3, 3, 3], np.int32), ValueError, r"lens must have shape \(2,\)"),
    (np.array([[3, 3]], np.int32), ValueError, "lens must be a 1-D"),
    (np.array([3, 3], np.int64), TypeError, "lens must have dtype int32"),
    ([3, 3], TypeError, "lens must be a numpy.ndarray"),
])
def test_generate_bad_lens(core, lens, exc, words):
    with pytest.raises(exc, match=words):
        gen(core, ids((2, 4)), lens)


def test_generate_checks_only_the_used_part_of_each_row(core):
    prompts = ids((2, 4))
    prompts[1, 2:] = -1  # padding after lens[1] = 2 is never read
    out, out_lens = gen(core, prompts, np.array([4, 2], np.int32))
    assert out.shape == (2, 3) and out.dtype == np.int32 and list(out_lens) == [3, 3]
    prompts[1, 1] = V
    with pytest.raises(ValueError, match=rf"prompts\[1, 1\] = {V}"):
        gen(core, prompts, np.array([4, 2], np.int32))


@pytest.mark.parametrize("kw, exc, words", [
    (dict(max_new=-1), ValueError, "max_new_tokens"),
    (dict(max_new=MAXPOS - 3), ValueError, "max_position_embeddings"),   # 4 + 13 > 16
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_k=-1), ValueError, "top_k"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(eos_token_id=V), ValueError, "eos_token_id"),
    (dict(max_new=2.0), TypeError, "max_new_tokens"),
])
def test_generate_bad_settings(core, kw, exc, words):
    max_new = kw.pop("max_new", 3)
    with pytest.raises(exc, match=words):
        gen(core, ids((2, 4)), np.array([4, 4], np.int32), max_new, **kw)


def test_generate_bad_prompts(core):
    lens = np.array([2, 2], np.int32)
    with pytest.raises(TypeError, match="prompts must have dtype int32"):
        gen(core, ids((2, 4), dtype=np.int64), lens)
    with pytest.raises(ValueError, match="prompts.*empty"):
        gen(core, np.zeros((0, 4), np.int32), np.zeros(0, np.int32))
    with pytest.raises(ValueError, match="prompts.*C-contiguous"):
        gen(core, ids((2, 8))[:, ::2], lens)


def test_generate_zero_new_tokens(core):
    out, out_lens = gen(core, ids((2, 4)), np.array([4, 1], np.int32), 0)
    assert out.shape == (2, 0) and list(out_lens) == [0, 0]


def test_python_generate_bad_prompts():
    m = gz.Model(gz.GPTNeoXConfig(**CFG), seed=0)
    with pytest.raises(ValueError, match="empty"):
        m.generate([])
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        m.generate([[1, 2], []], max_new_tokens=2)
    with pytest.raises(ValueError, match=rf"= {V} is outside"):
        m.generate([[1, V]], max_new_tokens=2)
    with pytest.raises(TypeError, match="integer"):
        m.generate([[1.5, 2]], max_new_tokens=2)
    assert [len(r) for r in m.generate([[1, 2, 3], [4]], max_new_tokens=2, eos_token_id=-1)] == [2, 2]


def test_ctrl_c_stops_generation_and_restores_the_handler(sigint_raises):
    cfg = dict(CFG, max_position_embeddings=4096, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    m = _core.Model(cfg, seed=0)
    prompts = ids((4, 2))
    lens = np.array([2, 2, 2, 2], np.int32)
    handler = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            m.generate(prompts, lens, 4000)  # far longer than 0.2 s
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 30
    assert signal.getsignal(signal.SIGINT) is handler
    out, out_lens = m.generate(prompts, lens, 2)  # the flag was cleared: the next call runs
    assert list(out_lens) == [2, 2, 2, 2]


# --------------------------------------------------------------------------- checkpoints and module functions
def test_checkpoint_wrappers_reject_bad_arguments(core, tmp_path):
    other = _core.Model(CFG)
    with pytest.raises(ValueError, match="another Model"):
        core.save_checkpoint(tmp_path / "a.h5", _core.AdamW(other))
    with pytest.raises(TypeError, match="optimizer"):
        core.save_checkpoint(tmp_path / "a.h5", "adam")
    with pytest.raises(ValueError, match="step"):
        core.save_checkpoint(tmp_path / "a.h5", step=-1)
    with pytest.raises(TypeError):
        core.save_checkpoint(tmp_path / "a.h5", rng="not bytes")
    with pytest.raises(TypeError):
        core.save_checkpoint(123)
    with pytest.raises(OSError):
        core.load_checkpoint(tmp_path / "missing.h5")
    with pytest.raises(OSError):
        _core.read_checkpoint_meta(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises((OSError, _core.CheckpointError)):
        _core.read_checkpoint_meta(tmp_path / "junk.h5")
    assert issubclass(_core.CheckpointError, ValueError) and gz.CheckpointError is _core.CheckpointError


def test_module_functions():
    with pytest.raises(ValueError, match="n must be"):
        _core.set_num_threads(0)
    with pytest.raises(TypeError):
        _core.set_num_threads(1.5)
    with pytest.raises(ValueError, match="backend"):
        _core.backend_available("tpu")
    assert _core.backend_available("cpu") is True


# --------------------------------------------------------------------------- state dicts
def test_load_state_dict_checks_everything_first():
    m = gz.Model(gz.GPTNeoXConfig(**CFG), seed=0)
    before = m.state_dict()
    bad = dict(before)
    bad[NAME] = bad[NAME][:, :-1]
    bad["gpt_neox.embed_in.weight"] = bad["gpt_neox.embed_in.weight"] + 1  # valid, but must not be applied
    with pytest.raises(ValueError, match=NAME):
        m.load_state_dict(bad)
    assert np.array_equal(m.params["gpt_neox.embed_in.weight"], before["gpt_neox.embed_in.weight"])
    missing = dict(before)
    del missing[NAME]
    with pytest.raises(ValueError, match="missing"):
        m.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected"):
        m.load_state_dict({**before, "lm_head.bias": np.zeros(3)})


# --------------------------------------------------------------------------- ops
def test_ops_check_their_arguments():
    from testops import ops

    x = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="inp must have dtype float32"):
        ops.gelu_forward(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        ops.layernorm_forward(x, np.ones(5, np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="empty"):
        ops.matmul_forward(np.zeros((0, 4), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"targets\[1\] = 9"):
        ops.cross_entropy_forward(np.zeros((2, 5), np.float32), np.array([1, 9], np.int32))
    qkv = np.zeros((1, 3, 2, 3, 8), np.float32)
    cos = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"pos\[0, 2\] = 4"):
        ops.rotary_split_forward(qkv, np.array([[0, 1, 4]], np.int32), cos, cos)
    with pytest.raises(ValueError, match="head size"):
        ops.rotary_split_forward(qkv, np.array([[0, 1, 2]], np.int32), np.ones((4, 5), np.float32),
                                 np.ones((4, 5), np.float32))


def test_a_model_busy_in_another_thread_is_refused_not_raced():
    cfg = dict(CFG, max_position_embeddings=4096, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    m = _core.Model(cfg, seed=0)
    prompts, lens = ids((4, 2)), np.array([2, 2, 2, 2], np.int32)
    generated = threading.Event()

    def work():  # ~0.3 s with the GIL released; retried if our forward() happened to hold the model
        while not generated.is_set():
            try:
                m.generate(prompts, lens, 300)
                generated.set()
            except RuntimeError:
                time.sleep(0.001)

    worker = threading.Thread(target=work)
    worker.start()
    refused = False
    try:
        while worker.is_alive() and not refused:
            try:
                m.forward(prompts)
            except RuntimeError as e:
                assert "in use by another thread" in str(e)
                refused = True
            time.sleep(0.001)
    finally:
        worker.join()
    assert refused and generated.is_set()
    m.forward(prompts)  # free again


MEMORY_SCRIPT = r"""
import json, os, resource, sys
import numpy as np
from gozaru import _core
CFG = json.loads(sys.argv[1])
m = _core.Model(CFG, seed=0)
for n in m.names:
    m.set_trainable(n, True)
small = np.zeros((2, 8), np.int32)
m.forward(small, small)
# at most 1 GiB more address space than now: every big allocation below must fail cleanly
vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
big = np.zeros((2 ** 16, 16), np.int32)
results = {}
for what, call in [
        ("model", lambda: _core.Model(dict(CFG, vocab_size=2 ** 24, hidden_size=2 ** 14))),
        ("forward", lambda: m.forward(big, big)),
        ("logits", lambda: m.forward(big, None, True)),
        ("generate", lambda: m.generate(np.zeros((2 ** 18, 8), np.int32), np.full(2 ** 18, 8, np.int32), 8))]:
    try:
        call()
        results[what] = "no error"
    except MemoryError as e:
        results[what] = "MemoryError: " + str(e)
try:  # the model is still usable at its old size
    m.forward(small, small)
    m.backward()
    results["after"] = "ok"
except Exception as e:
    results["after"] = type(e).__name__ + ": " + str(e)
print(json.dumps(results))
"""


def _under_address_sanitizer() -> bool:
    with open("/proc/self/maps") as f:
        return "libasan" in f.read()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_allocation_failures_raise_memory_error():
    """Runs in a child process with a capped address space, so no allocation can reach the OOM killer."""
    if _under_address_sanitizer():
        pytest.skip("AddressSanitizer's shadow memory does not fit a capped address space")
    import json
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(gz.__file__)))  # the folder holding gozaru/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cfg = dict(CFG, num_hidden_layers=1)
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for what in ("model", "forward", "logits", "generate"):
        assert results[what].startswith("MemoryError: out of memory"), (what, results[what])
    assert results["after"] == "ok", results["after"]
