/* module.c — the test-only extension _gozaru_testops (see testops.h). */
#define GZPY_IMPORTS_ARRAY /* this module's one import_array() */
#include "testops.h"

#define KW(fn, doc) {#fn, (PyCFunction)(void (*)(void))gzt_##fn, METH_VARARGS | METH_KEYWORDS, doc}
static PyMethodDef ops_methods[] = {
    KW(layernorm_forward, "layernorm_forward(inp[N,C], weight[C], bias[C], eps=1e-5) -> (out, mean[N], rstd[N])"),
    KW(layernorm_backward, "layernorm_backward(dout, inp, weight, mean, rstd) -> (dinp, dweight, dbias)"),
    KW(rmsnorm_forward, "rmsnorm_forward(inp[N,C], weight[C], eps=1e-6) -> (out, rstd[N])"),
    KW(rmsnorm_backward, "rmsnorm_backward(dout, inp, weight, rstd) -> (dinp, dweight)"),
    KW(swiglu_forward, "swiglu_forward(gate, up) -> silu(gate) * up (any shape)"),
    KW(swiglu_backward, "swiglu_backward(dout, gate, up) -> (dgate, dup)"),
    KW(matmul_forward, "matmul_forward(inp[N,C], weight[OC,C], bias[OC]=None) -> out[N,OC]"),
    KW(matmul_backward, "matmul_backward(dout[N,OC], inp, weight, with_bias=True) -> (dinp, dweight, dbias|None)"),
    KW(rotary_split_forward, "rotary_split_forward(qkv[B,T,NH,3,HS], pos[B,T] int32, cos[P,rot/2], sin[P,rot/2])"
                             " -> (q, k, v) each [B,NH,T,HS]"),
    KW(rotary_split_backward, "rotary_split_backward(dq, dk, dv, pos, cos, sin) -> dqkv[B,T,NH,3,HS]"),
    KW(attention_forward, "attention_forward(q [B,NH,T,HS], k, v [B,NKV,T,HS], doc_start=None [B,T]) -> "
                          "(out[B,T,NH*HS], lse[B,NH,T])"),
    KW(attention_backward, "attention_backward(dout, out, lse, q, k, v, doc_start=None) -> (dq, dk, dv)"),
    KW(gelu_forward, "gelu_forward(inp) -> out (exact erf GELU, any shape)"),
    KW(gelu_backward, "gelu_backward(dout, inp) -> dinp"),
    KW(cross_entropy_forward, "cross_entropy_forward(logits[N,V], targets[N] int32 (IGNORE_INDEX = ignore))"
                              " -> (lse[N], loss_sum, count)"),
    KW(cross_entropy_backward, "cross_entropy_backward(logits, lse, targets, scale=1.0) -> dlogits"),
    KW(embedding_forward, "embedding_forward(tokens[N] int32, wte[V,C]) -> out[N,C]"),
    KW(embedding_backward, "embedding_backward(dout[N,C], tokens[N], vocab_size) -> dwte[V,C]"),
    {NULL, NULL, 0, NULL},
};
#undef KW

static struct PyModuleDef ops_def = {
    PyModuleDef_HEAD_INIT, "_gozaru_testops",
    "The CPU backend's ops on NumPy float32 arrays, for the test suite only (the model never goes through "
    "here; not part of the gozaru package).", -1, ops_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__gozaru_testops(void) {
    import_array();
    PyObject *m = PyModule_Create(&ops_def);
    if (m && PyModule_AddIntConstant(m, "IGNORE_INDEX", GZ_IGNORE_INDEX) < 0) Py_CLEAR(m);
    return m;
}
