"""Shared test helpers: small random configs and models (tests run on 2 shared cores: keep them tiny)."""
import numpy as np
import pytest

import gozaru as gz
from reference import random_batch


def random_small_config(seed: int = 0, **overrides) -> "gz.GPTNeoXConfig":
    """A small random GPT-NeoX config: 1-2 layers, 1-3 heads of size 8, odd-ish vocab, either residual mode,
    rotary_pct in {0.25, 0.5, 1.0} (rotary dims stay even). Keyword arguments override any field."""
    rng = np.random.default_rng(seed)
    heads = int(rng.integers(1, 4))
    fields = dict(
        vocab_size=int(rng.integers(13, 60)),
        hidden_size=8 * heads,
        num_hidden_layers=int(rng.integers(1, 3)),
        num_attention_heads=heads,
        intermediate_size=int(rng.integers(8, 40)),
        rotary_pct=float(rng.choice([0.25, 0.5, 1.0])),
        max_position_embeddings=16,
        use_parallel_residual=bool(rng.integers(0, 2)),
        eos_token_id=3,
    )
    fields.update(overrides)
    return gz.GPTNeoXConfig(**fields)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Runs a test at 1 and at 2 threads (a different summation order in BLAS and the OpenMP reductions)."""
    saved = gz.get_num_threads()
    gz.set_num_threads(request.param)
    yield request.param
    gz.set_num_threads(saved)


@pytest.fixture
def small_config():
    """Factory fixture: ``small_config(seed=0, **overrides)`` -> GPTNeoXConfig."""
    return random_small_config


@pytest.fixture
def small_model():
    """A fully trainable random model on a fixed small config."""
    m = gz.Model(random_small_config(0), seed=0)
    m.train_all()
    return m


@pytest.fixture
def batch():
    """Factory fixture: ``batch(config, B, T, seed=0)`` -> (tokens, targets) int32 [B, T], ~30 % targets ignored."""
    return lambda config, B, T, seed=0: random_batch(config, B, T, seed)


@pytest.fixture
def sigint_raises():
    """Ctrl-C tests send SIGINT to this process. A shell that starts pytest in the background (``cmd &``, nohup)
    hands it SIGINT ignored, and Python then installs no handler: install Python's own for the test."""
    import signal
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
