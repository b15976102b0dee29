"""Finite-difference gradient checks of each CPU op, through the test-only module ``_gozaru_testops``.

Method: for an op y = f(x) and a fixed random upstream gradient g, the scalar L(x) = sum(g * f(x)) is
evaluated in float64 from the float32 op; its central difference (L(x + h e_i) - L(x - h e_i)) / (2h), with
h the perturbation actually representable in float32, is compared with the op's backward(g).
With h = 1e-2..1e-3 on O(1) inputs the float32 rounding of L contributes ~1e-4 relative, truncation less,
so we require   max|analytic - numeric| <= TOL * max|numeric|   with TOL = 2e-3 (reached: <= 3e-4 for
every op; a wrong formula is off by O(1)). Forward outputs are also compared with float64 NumPy
references: relative 1e-5 (reached: <= 1e-7).
"""
import math

import numpy as np
import pytest

from testops import ops
TOL = 2e-3
FWD_TOL = 1e-5


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def numeric_grad(loss, x, h):
    """Central differences of loss() (float64) w.r.t. every element of the float32 array x (changed in place
    and restored)."""
    grad = np.zeros(x.shape, np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        up, down = np.float32(old + h), np.float32(old - h)
        flat[i] = up
        lp = loss()
        flat[i] = down
        lm = loss()
        flat[i] = old
        grad.flat[i] = (lp - lm) / (float(up) - float(down))
    return grad


def weighted(g, y):
    return float(np.sum(np.asarray(g, np.float64) * np.asarray(y, np.float64)))


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# --------------------------------------------------------------------------- layernorm
def test_layernorm():
    rng = np.random.default_rng(0)
    N, C, eps = 4, 7, 1e-5
    x, w, b = rand(rng, N, C), 1 + rand(rng, C, scale=0.3), rand(rng, C, scale=0.3)
    g = rand(rng, N, C)
    out, mean, rstd = ops.layernorm_forward(x, w, b, eps)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + eps) * w + b
    assert rel_err(out, ref) < FWD_TOL

    dx, dw, db = ops.layernorm_backward(g, x, w, mean, rstd)
    loss = lambda: weighted(g, ops.layernorm_forward(x, w, b, eps)[0])
    assert rel_err(dx, numeric_grad(loss, x, 1e-3)) < TOL
    assert rel_err(dw, numeric_grad(loss, w, 1e-3)) < TOL
    assert rel_err(db, numeric_grad(loss, b, 1e-3)) < TOL


# --------------------------------------------------------------------------- RMSNorm, SwiGLU (Llama family)
def test_rmsnorm():
    rng = np.random.default_rng(7)
    N, C, eps = 5, 11, 1e-6
    x, w = rand(rng, N, C), 1 + rand(rng, C, scale=0.3)
    g = rand(rng, N, C)
    out, rstd = ops.rmsnorm_forward(x, w, eps)
    x64 = x.astype(np.float64)
    assert rel_err(out, w * x64 / np.sqrt((x64 ** 2).mean(1, keepdims=True) + eps)) < FWD_TOL
    dx, dw = ops.rmsnorm_backward(g, x, w, rstd)
    loss = lambda: weighted(g, ops.rmsnorm_forward(x, w, eps)[0])
    assert rel_err(dx, numeric_grad(loss, x, 1e-3)) < TOL
    assert rel_err(dw, numeric_grad(loss, w, 1e-3)) < TOL


def test_swiglu():
    rng = np.random.default_rng(8)
    gate = np.concatenate([np.linspace(-30, 30, 13), rand(rng, 20, scale=3.0)]).astype(np.float32)
    up = rand(rng, gate.size)
    g64 = gate.astype(np.float64)
    ref = g64 / (1 + np.exp(-g64)) * up
    assert rel_err(ops.swiglu_forward(gate, up), ref) < FWD_TOL
    g = rand(rng, gate.size)
    dgate, dup = ops.swiglu_backward(g, gate, up)
    loss = lambda: weighted(g, ops.swiglu_forward(gate, up))
    assert rel_err(dgate, numeric_grad(loss, gate, 1e-3)) < TOL
    assert rel_err(dup, numeric_grad(loss, up, 1e-3)) < TOL


# --------------------------------------------------------------------------- GELU
def test_gelu():
    x = np.linspace(-5, 5, 41, dtype=np.float32).reshape(41)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    y = ops.gelu_forward(x)
    assert float(np.max(np.abs(y - ref))) < 1e-6 * 5
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    dx = ops.gelu_backward(g, x)
    loss = lambda: weighted(g, ops.gelu_forward(x))
    assert rel_err(dx, numeric_grad(loss, x, 1e-3)) < TOL
    # any shape, same values
    x2 = x[:40].reshape(2, 4, 5).copy()
    assert np.array_equal(ops.gelu_forward(x2).reshape(-1), y[:40])


# --------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("with_bias", [True, False])
def test_matmul(with_bias):
    rng = np.random.default_rng(2)
    N, C, OC = 5, 4, 3
    x, w = rand(rng, N, C), rand(rng, OC, C)
    bias = rand(rng, OC) if with_bias else None
    g = rand(rng, N, OC)
    out = ops.matmul_forward(x, w, bias)
    ref = x.astype(np.float64) @ w.astype(np.float64).T + (0 if bias is None else bias)
    assert rel_err(out, ref) < FWD_TOL
    dx, dw, db = ops.matmul_backward(g, x, w, with_bias)
    loss = lambda: weighted(g, ops.matmul_forward(x, w, bias))
    assert rel_err(dx, numeric_grad(loss, x, 1e-2)) < TOL
    assert rel_err(dw, numeric_grad(loss, w, 1e-2)) < TOL
    if with_bias:
        assert rel_err(db, numeric_grad(loss, bias, 1e-2)) < TOL
    else:
        assert db is None


# --------------------------------------------------------------------------- cross-entropy
def test_cross_entropy_with_ignored_targets():
    rng = np.random.default_rng(3)
    N, V = 6, 11
    logits = rand(rng, N, V, scale=2.0)
    targets = np.array([3, -100, 0, 10, -100, 7], np.int32)
    lse, loss_sum, count = ops.cross_entropy_forward(logits, targets)
    l64 = logits.astype(np.float64)
    ref_lse = np.log(np.exp(l64).sum(1))
    counted = targets != -100
    assert count == counted.sum() == 4
    assert rel_err(lse, ref_lse) < FWD_TOL
    ref_sum = float(np.sum(ref_lse[counted] - l64[counted, targets[counted]]))
    assert abs(loss_sum - ref_sum) < FWD_TOL * abs(ref_sum)

    # d(mean loss)/d(logits): scale = 1 / count
    dlogits = ops.cross_entropy_backward(logits, lse, targets, 1.0 / count)
    assert np.all(dlogits[~counted] == 0.0)  # ignored rows get no gradient
    def mean_loss():
        s = ops.cross_entropy_forward(logits, targets)
        return s[1] / s[2]
    assert rel_err(dlogits, numeric_grad(mean_loss, logits, 1e-3)) < TOL


def test_cross_entropy_all_ignored():
    logits = np.zeros((2, 5), np.float32)
    targets = np.full(2, -100, np.int32)
    _, loss_sum, count = ops.cross_entropy_forward(logits, targets)
    assert count == 0 and loss_sum == 0.0
    lse = ops.cross_entropy_forward(logits, targets)[0]
    assert np.all(ops.cross_entropy_backward(logits, lse, targets, 1.0) == 0.0)


# --------------------------------------------------------------------------- embedding
def test_embedding():
    rng = np.random.default_rng(4)
    V, C = 7, 5
    wte = rand(rng, V, C)
    tokens = np.array([1, 3, 1, 6, 0], np.int32)  # a repeated id must accumulate
    g = rand(rng, len(tokens), C)
    assert np.array_equal(ops.embedding_forward(tokens, wte), wte[tokens])
    dwte = ops.embedding_backward(g, tokens, V)
    ref = np.zeros((V, C))
    np.add.at(ref, tokens, g.astype(np.float64))
    assert rel_err(dwte, ref) < FWD_TOL


# --------------------------------------------------------------------------- rotary + attention
def rotary_tables(max_pos, rot, base=10000.0):
    """GPT-NeoX / HF: inv_freq = base^(-2i/rot), angle = pos * inv_freq; tables [max_pos, rot/2]."""
    inv_freq = 1.0 / base ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
    ang = np.arange(max_pos, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def reference_attention(qkv, pos, rot, base=10000.0):
    """float64 HF GPT-NeoX attention: per-head q|k|v split, rotate-half rotary on the first rot dims of q and k,
    causal softmax(q k^T / sqrt(HS)) v, heads merged -> [B, T, NH*HS]."""
    B, T, NH, _, HS = qkv.shape
    x = qkv.astype(np.float64)
    q, k, v = (x[:, :, :, i, :].transpose(0, 2, 1, 3) for i in range(3))  # [B, NH, T, HS]
    if rot:
        inv_freq = 1.0 / base ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
        ang = pos.astype(np.float64)[:, None, :, None] * inv_freq  # [B, 1, T, rot/2]
        cos = np.concatenate([np.cos(ang)] * 2, -1)
        sin = np.concatenate([np.sin(ang)] * 2, -1)

        def rotate(t):
            r, rest = t[..., :rot], t[..., rot:]
            half = rot // 2
            rotated = np.concatenate([-r[..., half:], r[..., :half]], -1)
            return np.concatenate([r * cos + rotated * sin, rest], -1)
        q, k = rotate(q), rotate(k)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HS)
    scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(B, T, NH * HS)


@pytest.mark.parametrize("rot", [2, 4, 8], ids=["rot2_lt_HS", "rot4_lt_HS", "rot_eq_HS"])
def test_rotary_attention(rot):
    rng = np.random.default_rng(5 + rot)
    B, T, NH, HS, max_pos = 2, 5, 2, 8, 12
    qkv = rand(rng, B, T, NH, 3, HS)
    pos = np.stack([np.arange(T), np.arange(3, 3 + T)]).astype(np.int32)  # row 1 starts at position 3
    cos, sin = rotary_tables(max_pos, rot)
    g = rand(rng, B, T, NH * HS)

    def forward():
        q, k, v = ops.rotary_split_forward(qkv, pos, cos, sin)
        return ops.attention_forward(q, k, v), (q, k, v)

    (out, lse), (q, k, v) = forward()
    assert rel_err(out, reference_attention(qkv, pos, rot)) < FWD_TOL
    assert rel_err(lse, reference_attention_grads(q, k, v, g)[0]) < FWD_TOL

    dq, dk, dv = ops.attention_backward(g, out, lse, q, k, v)
    dqkv = ops.rotary_split_backward(dq, dk, dv, pos, cos, sin)
    assert dqkv.shape == qkv.shape
    numeric = numeric_grad(lambda: weighted(g, forward()[0][0]), qkv, 1e-3)
    assert rel_err(dqkv, numeric) < TOL


def reference_attention_grads(q, k, v, g, doc_start=None):
    """float64 causal attention with k, v shared by groups of NH / NKV query heads (head h reads h // group):
    (lse [B,NH,T], out [B,T,NH*HS], dq, dk, dv) for the upstream gradient g [B,T,NH*HS], by the textbook
    softmax backward on the full T x T matrix. doc_start [B,T]: query t sees keys doc_start[t] .. t only."""
    q, k, v, g = (np.asarray(x, np.float64) for x in (q, k, v, g))
    B, NH, T, HS = q.shape
    group = NH // k.shape[1]
    ke, ve = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = q @ ke.transpose(0, 1, 3, 2) / math.sqrt(HS)
    allowed = np.broadcast_to(np.tril(np.ones((T, T), bool)), (B, 1, T, T))
    if doc_start is not None:
        allowed = allowed & (np.arange(T)[None, None, None, :] >= np.asarray(doc_start)[:, None, :, None])
    s = np.where(allowed, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(s - mx).sum(-1, keepdims=True)))[..., 0]
    p = np.exp(s - lse[..., None])
    out = p @ ve
    go = g.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)
    dp = go @ ve.transpose(0, 1, 3, 2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / math.sqrt(HS)
    dq = ds @ ke
    dk = (ds.transpose(0, 1, 3, 2) @ q).reshape(B, -1, group, T, HS).sum(2)
    dv = (p.transpose(0, 1, 3, 2) @ go).reshape(B, -1, group, T, HS).sum(2)
    return lse, out.transpose(0, 2, 1, 3).reshape(B, T, NH * HS), dq, dk, dv


def test_attention_alone_matches_finite_differences():
    """attention_backward by itself (q, k, v as separate inputs), a single head, T = 1 and grouped-query
    attention (two query heads per key/value head) included."""
    rng = np.random.default_rng(9)
    for B, NH, NKV, T, HS in [(1, 1, 1, 1, 4), (2, 3, 3, 4, 2), (1, 4, 2, 5, 3)]:
        q = rand(rng, B, NH, T, HS)
        k, v = (rand(rng, B, NKV, T, HS) for _ in range(2))
        g = rand(rng, B, T, NH * HS)
        out, lse = ops.attention_forward(q, k, v)
        dq, dk, dv = ops.attention_backward(g, out, lse, q, k, v)
        assert dk.shape == k.shape and dv.shape == v.shape
        loss = lambda: weighted(g, ops.attention_forward(q, k, v)[0])
        for analytic, x in ((dq, q), (dk, k), (dv, v)):
            numeric = numeric_grad(loss, x, 1e-3)
            if np.max(np.abs(numeric)) == 0:  # T = 1: q and k do not matter
                assert np.max(np.abs(analytic)) < 1e-6
            else:
                assert rel_err(analytic, numeric) < TOL


# Many tiles: float32 sums of up to T terms (scores over HS, outputs and gradients over T keys or queries),
# each within T * 2^-24 relative in the worst case (3e-5 at T = 500), two in a chain for the gradients, and
# exp within ~2 ulp: 1e-4 of the largest value bounds it; a wrong rescale or a tile mask off by one is O(1).
LONG_TOL = 1e-4


@pytest.mark.parametrize("B, NH, NKV, T, HS", [(1, 2, 2, 300, 16), (2, 4, 1, 257, 8), (1, 6, 3, 500, 5)],
                         ids=["multi_head_300", "one_kv_head_257", "gqa_500_odd_head_size"])
def test_blocked_attention_matches_float64_reference_over_many_tiles(B, NH, NKV, T, HS):
    """Several query blocks and key tiles, partial last ones, grouped-query attention: outputs, log-sum-exp
    and every gradient against the float64 textbook computation."""
    rng = np.random.default_rng(T)
    q = rand(rng, B, NH, T, HS, scale=2.0)  # peaked rows: the running max moves between tiles
    k, v = (rand(rng, B, NKV, T, HS) for _ in range(2))
    g = rand(rng, B, T, NH * HS)
    out, lse = ops.attention_forward(q, k, v)
    dq, dk, dv = ops.attention_backward(g, out, lse, q, k, v)
    ref = reference_attention_grads(q, k, v, g)
    for name, got, want in zip(("lse", "out", "dq", "dk", "dv"), (lse, out, dq, dk, dv), ref):
        assert rel_err(got, want) < LONG_TOL, name


def doc_starts(lengths_per_row):
    """[B, T] document starts of rows packed with documents of the given lengths (each row's sum is T)."""
    return np.array([np.repeat(np.cumsum([0] + lens[:-1]), lens) for lens in lengths_per_row], np.int32)


# Documents inside one key tile (BK = 128) and one query block (BQ = 64), across block and tile edges, one token
# long, a whole tile long, and a row of one document: every way a tile can be partly or wholly masked.
DOCS = [[1, 5, 58, 64, 2, 130, 20, 1, 9, 10], [128, 128, 44], [300]]


def test_packed_attention_matches_float64_reference_with_a_document_mask():
    """Each query sees only the keys of its own document: outputs, log-sum-exp and gradients against the
    float64 textbook computation with that mask (LONG_TOL as above: the sums are no longer than unpacked)."""
    rng = np.random.default_rng(31)
    B, NH, NKV, T, HS = 3, 4, 2, 300, 8
    ds = doc_starts(DOCS)
    q = rand(rng, B, NH, T, HS, scale=2.0)
    k, v = (rand(rng, B, NKV, T, HS) for _ in range(2))
    g = rand(rng, B, T, NH * HS)
    out, lse = ops.attention_forward(q, k, v, doc_start=ds)
    dq, dk, dv = ops.attention_backward(g, out, lse, q, k, v, doc_start=ds)
    ref = reference_attention_grads(q, k, v, g, ds)
    for name, got, want in zip(("lse", "out", "dq", "dk", "dv"), (lse, out, dq, dk, dv), ref):
        assert rel_err(got, want) < LONG_TOL, name
    # the mask matters: without it every output but the first document's differs by O(1)
    plain = reference_attention_grads(q, k, v, g)
    assert rel_err(plain[1], ref[1]) > 0.1
    # a row of one document is the unpacked computation, bit for bit
    alone = ops.attention_forward(q[2:], k[2:], v[2:])
    assert np.array_equal(out[2], alone[0][0]) and np.array_equal(lse[2], alone[1][0])


def test_packed_attention_document_is_its_own_row():
    """A document attends as it would alone at the start of a row (same keys, same order of tiles when it starts
    on a tile edge), so outputs agree to float32 rounding."""
    rng = np.random.default_rng(32)
    B, NH, T, HS = 1, 2, 256, 8
    ds = doc_starts([[128, 128]])
    q, k, v = (rand(rng, B, NH, T, HS) for _ in range(3))
    out, lse = ops.attention_forward(q, k, v, doc_start=ds)
    for a, b in ((0, 128), (128, 256)):
        o1, l1 = ops.attention_forward(*(np.ascontiguousarray(x[:, :, a:b]) for x in (q, k, v)))
        assert np.array_equal(out[:, a:b], o1) and np.array_equal(lse[:, :, a:b], l1)


@pytest.mark.parametrize("bad, match", [
    (np.array([[0, 0, 0, 9]], np.int32), r"doc_start\[0, 3\] = 9 is outside"),
    (np.array([[0, 0, 1, 1]], np.int32), r"doc_start\[0, 2\] = 1 is neither 2"),
    (np.array([[0, 1, 0, 1]], np.int32), r"doc_start\[0, 2\] = 0 is neither 2"),
    (np.array([[1, 1, 2, 3]], np.int32), r"doc_start\[0, 0\] = 1"),
    (np.array([[0, 0, 0]], np.int32), r"shape \(1, 4\)"),
    (np.array([[0, 0, 0, 0]], np.float32), "int32"),
])
def test_attention_rejects_bad_document_starts(bad, match):
    q = np.zeros((1, 1, 4, 2), np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        ops.attention_forward(q, q, q, doc_start=bad)


def test_attention_rejects_kv_heads_that_do_not_divide_query_heads():
    q = np.zeros((1, 3, 4, 2), np.float32)
    kv = np.zeros((1, 2, 4, 2), np.float32)
    with pytest.raises(ValueError, match="2 heads.*3 query heads"):
        ops.attention_forward(q, kv, kv)


@pytest.mark.parametrize("C, OC", [(67, 37), (256, 8), (8, 3), (5, 2)])
def test_few_row_matmul_rows_do_not_depend_on_their_company(C, OC):
    """Decode steps run 1..8 rows through the streaming kernel (one row alone, two weight rows at a time, or
    blocks of four rows): each row's output must be the same bits whatever else shares the call, and close to
    the float64 product."""
    rng = np.random.default_rng(C * OC)
    x = rng.standard_normal((8, C)).astype(np.float32)
    w = rng.standard_normal((OC, C)).astype(np.float32)
    b = rng.standard_normal(OC).astype(np.float32)
    alone = np.stack([ops.matmul_forward(np.ascontiguousarray(x[i:i + 1]), w, b)[0] for i in range(8)])
    for n in range(2, 9):
        together = ops.matmul_forward(np.ascontiguousarray(x[:n]), w, b)
        assert np.array_equal(together, alone[:n]), n
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert np.max(np.abs(alone - ref)) <= 1e-5 * max(1.0, np.max(np.abs(ref))) * np.sqrt(C)
