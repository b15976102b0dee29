"""The workload of scripts/leakcheck.sh: 20 steps of train + save + load, with every error path of the
checkpoint code exercised once, on a tiny model. Run it under a leak checker; it only needs to finish."""
import os
import sys
import tempfile

import numpy as np

import gozaru as gz

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
cfg = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, rotary_pct=0.25, max_position_embeddings=32)
rng = np.random.default_rng(0)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "ckpt.h5")
    model = gz.Model(cfg, seed=0)
    model.train_only([n for n in model.names if "layers.1" in n or n == "embed_out.weight"])
    opt = gz.AdamW(model, lr=1e-3, weight_decay=0.01)
    for step in range(STEPS):
        tokens = rng.integers(0, cfg.vocab_size, size=(2, 16))
        model.zero_grad()
        model.loss(tokens)
        model.backward()
        opt.step(max_grad_norm=1.0)
        model.save(path, optimizer=opt, step=step + 1, rng=b"r" * step, extra={"step": step})
        model, opt, info = gz.load(path)  # continue from the loaded copy: the old ones are freed
        assert info["step"] == step + 1
    model.generate([[1, 2, 3]], max_new_tokens=4)

    # Error paths: each must free what it allocated.
    bad = os.path.join(d, "bad.h5")
    data = open(path, "rb").read()
    for blob in (data[: len(data) // 2], b"not hdf5", data[:4096]):
        with open(bad, "wb") as f:
            f.write(blob)
        try:
            gz.load(bad)
        except (gz.CheckpointError, OSError):
            pass
    other = gz.Model(cfg.replace(rotary_pct=0.5), seed=None)
    try:
        other.core.load_checkpoint(path)
    except gz.CheckpointError:
        pass
    try:
        model.save(os.path.join(d, "missing", "x.h5"))
    except OSError:
        pass
    model.to_hf(os.path.join(d, "hf"))
    gz.Model.from_hf(os.path.join(d, "hf"))
print("leakcheck loop finished")
