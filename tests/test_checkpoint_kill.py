"""A writer SIGKILLed at random moments never leaves a broken checkpoint under the real name.

The test process forks children that save in a loop (state k is a pure function of k, so any file can
be checked) and kills each after a random delay. After every kill the file must load and hold exactly
one of the states the child had started to save, and at most the dead child's temporary file may be
left over; the next save removes it.
"""
import os
import random
import signal
import time

import numpy as np

from gozaru import _core

CFG = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
           rotary_pct=1.0, rotary_emb_base=10000.0, max_position_embeddings=32, layer_norm_eps=1e-5,
           use_parallel_residual=True, tie_word_embeddings=False)
KILLS = 24


def state(k, n):
    return np.random.default_rng(k).standard_normal(n, dtype=np.float32)


def save_state(m, path, k):
    m.flat_params()[:] = state(k, m.num_params)
    m.set_trainable("embed_out.weight", k % 2 == 1)
    m.save_checkpoint(path, step=k, extra=str(k).encode())


def saver_child(m, path, first, pipe_w):
    """Runs in the forked child: saves states first, first+1, ... until killed."""
    try:
        k = first
        while True:
            os.write(pipe_w, f"start {k}\n".encode())
            save_state(m, path, k)
            k += 1
    finally:
        os._exit(1)  # only reached on an error: never return into pytest


def temp_files(folder):
    return [f for f in os.listdir(folder) if ".tmp-" in f]


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = str(tmp_path / "run.h5")
    m = _core.Model(CFG)
    save_state(m, path, 0)
    t0 = time.perf_counter()
    save_state(m, path, 0)
    save_time = time.perf_counter() - t0
    check = _core.Model(CFG)
    rnd = random.Random(1234)
    previous, kills_mid_write = 0, 0
    for round_ in range(KILLS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            saver_child(m, path, (round_ + 1) * 100_000, w)
        os.close(w)
        out = os.read(r, 1 << 16)  # the child is running
        time.sleep(rnd.uniform(0, 4 * save_time))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while chunk := os.read(r, 1 << 16):
            out += chunk
        started = [int(line.split()[1]) for line in out.decode().split("\n") if line]
        os.close(r)

        # The save in flight may or may not have completed; the one before it has.
        candidates = {started[-1], started[-2] if len(started) > 1 else previous}
        meta = _core.read_checkpoint_meta(path)
        step = meta["step"]
        assert step in candidates, (round_, step, candidates)
        check.load_checkpoint(path)
        assert np.array_equal(check.flat_params(), state(step, m.num_params)), (round_, step)
        assert check.is_trainable("embed_out.weight") == (step % 2 == 1)
        assert meta["extra"] == str(step).encode()
        leftovers = temp_files(tmp_path)
        assert len(leftovers) <= 1, leftovers  # earlier leftovers were cleaned by the next save
        kills_mid_write += len(leftovers)
        previous = step
    assert kills_mid_write >= 3, "the kills should also hit saves in progress"
    save_state(m, path, 1)
    assert os.listdir(tmp_path) == ["run.h5"]
