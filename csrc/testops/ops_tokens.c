/* ops_tokens.c — cross-entropy and embedding of the test-only op module (testops.h). */
#include "testops.h"

/* ------------------------------------------------------------------ cross-entropy */
GZT_OP(cross_entropy_forward) {
    static char *kwlist[] = {"logits", "targets", NULL};
    PyObject *logits_o, *targets_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:cross_entropy_forward", kwlist, &logits_o, &targets_o))
        return NULL;
    PyArrayObject *logits = gzt_f32_in(logits_o, "logits", 2, NULL, "[N, V]");
    if (!logits) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    PyArrayObject *targets = gzt_i32_in(targets_o, "targets", 1, &N, "[N]");
    if (!targets || DIMS_FIT(V) < 0) return NULL;
    op_outputs o = {0};
    if (!(targets = gzt_ids_in(&o, targets_o, "targets", 1, &N, "[N]", (int)V, 1, "vocabulary"))) return NULL;
    float *lse = OUT_F32(&o, 1, N);
    double loss_sum = 0.0;
    int64_t count = 0;
    PyObject *lse_obj = GZT_RUN(&o, gz_cpu_cross_entropy_forward(lse, GZPY_F32(logits), GZPY_I32(targets), (int64_t)N,
                                                                 (int)V, &loss_sum, &count));
    return lse_obj ? Py_BuildValue("(NdL)", lse_obj, loss_sum, (long long)count) : NULL;
}

GZT_OP(cross_entropy_backward) {
    static char *kwlist[] = {"logits", "lse", "targets", "scale", NULL};
    PyObject *logits_o, *lse_o, *targets_o, *scale_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:cross_entropy_backward", kwlist, &logits_o, &lse_o,
                                     &targets_o, &scale_o))
        return NULL;
    double scale = 1.0;
    PyArrayObject *logits = gzt_f32_in(logits_o, "logits", 2, NULL, "[N, V]");
    if (!logits) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    PyArrayObject *lse = gzt_f32_in(lse_o, "lse", 1, &N, "[N]");
    PyArrayObject *targets = lse ? gzt_i32_in(targets_o, "targets", 1, &N, "[N]") : NULL;
    if (!targets || (scale_o && gzpy_float_arg(scale_o, "scale", -1e30, 1e30, 0, &scale) < 0)) return NULL;
    if (DIMS_FIT(V) < 0) return NULL;
    op_outputs o = {0};
    if (!(targets = gzt_ids_in(&o, targets_o, "targets", 1, &N, "[N]", (int)V, 1, "vocabulary"))) return NULL;
    float *dlogits = OUT_F32(&o, 2, N, V);
    return GZT_RUN(&o, gz_cpu_cross_entropy_backward(dlogits, GZPY_F32(logits), GZPY_F32(lse), GZPY_I32(targets),
                                                     (int64_t)N, (int)V, (float)scale));
}

/* ------------------------------------------------------------------ embedding */
GZT_OP(embedding_forward) {
    static char *kwlist[] = {"tokens", "wte", NULL};
    PyObject *tokens_o, *wte_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:embedding_forward", kwlist, &tokens_o, &wte_o)) return NULL;
    PyArrayObject *tokens = gzt_i32_in(tokens_o, "tokens", 1, NULL, "[N]");
    PyArrayObject *wte = tokens ? gzt_f32_in(wte_o, "wte", 2, NULL, "[V, C]") : NULL;
    if (!wte) return NULL;
    npy_intp N = PyArray_DIM(tokens, 0), V = PyArray_DIM(wte, 0), C = PyArray_DIM(wte, 1);
    if (DIMS_FIT(V, C) < 0) return NULL;
    op_outputs o = {0};
    if (!(tokens = gzt_ids_in(&o, tokens_o, "tokens", 1, &N, "[N]", (int)V, 0, "vocabulary"))) return NULL;
    float *out = OUT_F32(&o, 2, N, C);
    return GZT_RUN(&o, gz_cpu_embedding_forward(out, GZPY_I32(tokens), GZPY_F32(wte), (int64_t)N, (int)C));
}

GZT_OP(embedding_backward) {
    static char *kwlist[] = {"dout", "tokens", "vocab_size", NULL};
    PyObject *dout_o, *tokens_o, *vocab_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:embedding_backward", kwlist, &dout_o, &tokens_o, &vocab_o))
        return NULL;
    long long V;
    PyArrayObject *tokens = gzt_i32_in(tokens_o, "tokens", 1, NULL, "[N]");
    if (!tokens || gzpy_int_arg(vocab_o, "vocab_size", 1, INT_MAX, &V) < 0) return NULL;
    npy_intp N = PyArray_DIM(tokens, 0);
    npy_intp want_dout[2] = {N, GZPY_ANY};
    PyArrayObject *dout = gzt_f32_in(dout_o, "dout", 2, want_dout, "[N, C]");
    if (!dout) return NULL;
    npy_intp C = PyArray_DIM(dout, 1);
    if (DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    if (!(tokens = gzt_ids_in(&o, tokens_o, "tokens", 1, &N, "[N]", (int)V, 0, "vocabulary"))) return NULL;
    float *dwte = OUT_F32(&o, 2, (npy_intp)V, C);
    return GZT_RUN(&o, gz_cpu_embedding_backward(dwte, GZPY_F32(dout), GZPY_I32(tokens), (int64_t)N, (int)C));
}

