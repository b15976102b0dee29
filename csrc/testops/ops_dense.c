/* ops_dense.c — layernorm, Linear and GELU of the test-only op module (testops.h). */
#include "testops.h"

/* ------------------------------------------------------------------ layernorm */
GZT_OP(layernorm_forward) {
    static char *kwlist[] = {"inp", "weight", "bias", "eps", NULL};
    PyObject *inp_o, *w_o, *b_o, *eps_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:layernorm_forward", kwlist, &inp_o, &w_o, &b_o, &eps_o))
        return NULL;
    double eps = 1e-5;
    npy_intp N, C;
    PyArrayObject *inp = gzt_rows_in(inp_o, "inp", &N, &C);
    PyArrayObject *w = inp ? gzt_f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    PyArrayObject *b = w ? gzt_f32_in(b_o, "bias", 1, &C, "[C]") : NULL;
    if (!b || (eps_o && gzpy_float_arg(eps_o, "eps", 0.0, 1.0, 0, &eps) < 0)) return NULL;
    if (DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, C), *mean = OUT_F32(&o, 1, N), *rstd = OUT_F32(&o, 1, N);
    return GZT_RUN(&o, gz_cpu_layernorm_forward(out, mean, rstd, GZPY_F32(inp), GZPY_F32(w), GZPY_F32(b), (int64_t)N,
                                                (int)C, (float)eps));
}

GZT_OP(layernorm_backward) {
    static char *kwlist[] = {"dout", "inp", "weight", "mean", "rstd", NULL};
    PyObject *dout_o, *inp_o, *w_o, *mean_o, *rstd_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:layernorm_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &mean_o, &rstd_o))
        return NULL;
    npy_intp N, C;
    PyArrayObject *inp = gzt_rows_in(inp_o, "inp", &N, &C);
    PyArrayObject *dout = inp ? gzt_f32_in(dout_o, "dout", 2, PyArray_DIMS(inp), "[N, C]") : NULL;
    PyArrayObject *w = dout ? gzt_f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    PyArrayObject *mean = w ? gzt_f32_in(mean_o, "mean", 1, &N, "[N]") : NULL;
    PyArrayObject *rstd = mean ? gzt_f32_in(rstd_o, "rstd", 1, &N, "[N]") : NULL;
    if (!rstd || DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 1, C), *db = OUT_F32(&o, 1, C);
    return GZT_RUN(&o, gz_cpu_layernorm_backward(dinp, dw, db, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w),
                                                 GZPY_F32(mean), GZPY_F32(rstd), (int64_t)N, (int)C));
}

/* ------------------------------------------------------------------ matmul */
/* A Linear layer's inp [N, C] and weight [OC, C], and its sizes (checked to fit an int). */
static int linear_in(PyObject *inp_o, PyObject *w_o, PyArrayObject **inp, PyArrayObject **w, npy_intp *N,
                     npy_intp *C, npy_intp *OC) {
    if (!(*inp = gzt_rows_in(inp_o, "inp", N, C))) return -1;
    npy_intp want_w[2] = {GZPY_ANY, *C};
    if (!(*w = gzt_f32_in(w_o, "weight", 2, want_w, "[OC, C]"))) return -1;
    *OC = PyArray_DIM(*w, 0);
    return DIMS_FIT(*C, *OC);
}

GZT_OP(matmul_forward) {
    static char *kwlist[] = {"inp", "weight", "bias", NULL};
    PyObject *inp_o, *w_o, *b_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:matmul_forward", kwlist, &inp_o, &w_o, &b_o)) return NULL;
    PyArrayObject *inp, *w, *b = NULL;
    npy_intp N, C, OC;
    if (linear_in(inp_o, w_o, &inp, &w, &N, &C, &OC) < 0) return NULL;
    if (b_o != Py_None && !(b = gzt_f32_in(b_o, "bias", 1, &OC, "[OC]"))) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, OC);
    return GZT_RUN(&o, gz_cpu_matmul_forward(out, GZPY_F32(inp), GZPY_F32(w), b ? GZPY_F32(b) : NULL, (int64_t)N,
                                             (int)C, (int)OC));
}

GZT_OP(matmul_backward) {
    static char *kwlist[] = {"dout", "inp", "weight", "with_bias", NULL};
    PyObject *dout_o, *inp_o, *w_o;
    int with_bias = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|p:matmul_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &with_bias))
        return NULL;
    PyArrayObject *inp, *w;
    npy_intp N, C, OC;
    if (linear_in(inp_o, w_o, &inp, &w, &N, &C, &OC) < 0) return NULL;
    npy_intp want_dout[2] = {N, OC};
    PyArrayObject *dout = gzt_f32_in(dout_o, "dout", 2, want_dout, "[N, OC]");
    if (!dout) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 2, OC, C);
    float *db = with_bias ? OUT_F32(&o, 1, OC) : gzt_skip_output(&o);
    return GZT_RUN(&o, gz_cpu_matmul_backward(dinp, dw, db, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w),
                                              (int64_t)N, (int)C, (int)OC));
}

/* ------------------------------------------------------------------ gelu */
GZT_OP(gelu_forward) {
    static char *kwlist[] = {"inp", NULL};
    PyObject *inp_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:gelu_forward", kwlist, &inp_o)) return NULL;
    PyArrayObject *inp = gzt_elementwise_in(inp_o, "inp", NULL, NULL);
    if (!inp) return NULL;
    op_outputs o = {0};
    float *out = OUT_LIKE(&o, inp);
    return GZT_RUN(&o, gz_cpu_gelu_forward(out, GZPY_F32(inp), (int64_t)PyArray_SIZE(inp)));
}

GZT_OP(gelu_backward) {
    static char *kwlist[] = {"dout", "inp", NULL};
    PyObject *dout_o, *inp_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:gelu_backward", kwlist, &dout_o, &inp_o)) return NULL;
    PyArrayObject *inp = gzt_elementwise_in(inp_o, "inp", NULL, NULL);
    PyArrayObject *dout = inp ? gzt_elementwise_in(dout_o, "dout", inp, "inp") : NULL;
    if (!dout) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_LIKE(&o, inp);
    return GZT_RUN(&o, gz_cpu_gelu_backward(dinp, GZPY_F32(dout), GZPY_F32(inp), (int64_t)PyArray_SIZE(inp)));
}
