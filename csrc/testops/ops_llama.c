/* ops_llama.c — the Llama family's per-element ops of the test-only op module (testops.h): RMSNorm, SwiGLU. */
#include "testops.h"

GZT_OP(rmsnorm_forward) {
    static char *kwlist[] = {"inp", "weight", "eps", NULL};
    PyObject *inp_o, *w_o, *eps_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:rmsnorm_forward", kwlist, &inp_o, &w_o, &eps_o)) return NULL;
    double eps = 1e-6;
    npy_intp N, C;
    PyArrayObject *inp = gzt_rows_in(inp_o, "inp", &N, &C);
    PyArrayObject *w = inp ? gzt_f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    if (!w || (eps_o && gzpy_float_arg(eps_o, "eps", 0.0, 1.0, 0, &eps) < 0)) return NULL;
    if (DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, C), *rstd = OUT_F32(&o, 1, N);
    return GZT_RUN(&o, gz_cpu_rmsnorm_forward(out, rstd, GZPY_F32(inp), GZPY_F32(w), (int64_t)N, (int)C, (float)eps));
}

GZT_OP(rmsnorm_backward) {
    static char *kwlist[] = {"dout", "inp", "weight", "rstd", NULL};
    PyObject *dout_o, *inp_o, *w_o, *rstd_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:rmsnorm_backward", kwlist, &dout_o, &inp_o, &w_o, &rstd_o))
        return NULL;
    npy_intp N, C;
    PyArrayObject *inp = gzt_rows_in(inp_o, "inp", &N, &C);
    PyArrayObject *dout = inp ? gzt_f32_in(dout_o, "dout", 2, PyArray_DIMS(inp), "[N, C]") : NULL;
    PyArrayObject *w = dout ? gzt_f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    PyArrayObject *rstd = w ? gzt_f32_in(rstd_o, "rstd", 1, &N, "[N]") : NULL;
    if (!rstd || DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 1, C);
    return GZT_RUN(&o, gz_cpu_rmsnorm_backward(dinp, dw, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w), GZPY_F32(rstd),
                                               (int64_t)N, (int)C));
}

/* Elementwise: any shape, gate and up (and dout) alike. */
GZT_OP(swiglu_forward) {
    static char *kwlist[] = {"gate", "up", NULL};
    PyObject *gate_o, *up_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:swiglu_forward", kwlist, &gate_o, &up_o)) return NULL;
    PyArrayObject *gate = gzt_elementwise_in(gate_o, "gate", NULL, NULL);
    PyArrayObject *up = gate ? gzt_elementwise_in(up_o, "up", gate, "gate") : NULL;
    if (!up) return NULL;
    op_outputs o = {0};
    float *out = OUT_LIKE(&o, gate);
    return GZT_RUN(&o, gz_cpu_swiglu_forward(out, GZPY_F32(gate), GZPY_F32(up), (int64_t)PyArray_SIZE(gate)));
}

GZT_OP(swiglu_backward) {
    static char *kwlist[] = {"dout", "gate", "up", NULL};
    PyObject *dout_o, *gate_o, *up_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:swiglu_backward", kwlist, &dout_o, &gate_o, &up_o))
        return NULL;
    PyArrayObject *gate = gzt_elementwise_in(gate_o, "gate", NULL, NULL);
    PyArrayObject *up = gate ? gzt_elementwise_in(up_o, "up", gate, "gate") : NULL;
    PyArrayObject *dout = up ? gzt_elementwise_in(dout_o, "dout", gate, "gate") : NULL;
    if (!dout) return NULL;
    op_outputs o = {0};
    float *dgate = OUT_LIKE(&o, gate), *dup = OUT_LIKE(&o, gate);
    return GZT_RUN(&o, gz_cpu_swiglu_backward(dgate, dup, GZPY_F32(dout), GZPY_F32(gate), GZPY_F32(up),
                                              (int64_t)PyArray_SIZE(gate)));
}
