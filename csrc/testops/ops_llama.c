/* ops_llama.c — the Llama family's per-element ops of the test-only op module (testops.h): RMSNorm, SwiGLU. */
#include "testops.h"

PyObject *gzt_rmsnorm_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"inp", "weight", "eps", NULL};
    PyObject *inp_o, *w_o, *eps_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:rmsnorm_forward", kwlist, &inp_o, &w_o, &eps_o)) return NULL;
    double eps = 1e-6;
    PyArrayObject *inp = gzt_f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *w = gzt_f32_in(w_o, "weight", 1, &C, "[C]");
    if (!w || (eps_o && gzpy_float_arg(eps_o, "eps", 0.0, 1.0, 0, &eps) < 0)) return NULL;
    if (DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, C), *rstd = OUT_F32(&o, 1, N);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_rmsnorm_forward(out, rstd, GZPY_F32(inp), GZPY_F32(w), (int64_t)N, (int)C, (float)eps);
    return gzt_op_end(&o, s);
}

PyObject *gzt_rmsnorm_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", "weight", "rstd", NULL};
    PyObject *dout_o, *inp_o, *w_o, *rstd_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:rmsnorm_backward", kwlist, &dout_o, &inp_o, &w_o, &rstd_o))
        return NULL;
    PyArrayObject *inp = gzt_f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *dout = gzt_f32_in(dout_o, "dout", 2, PyArray_DIMS(inp), "[N, C]");
    PyArrayObject *w = dout ? gzt_f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    PyArrayObject *rstd = w ? gzt_f32_in(rstd_o, "rstd", 1, &N, "[N]") : NULL;
    if (!rstd || DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 1, C);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_rmsnorm_backward(dinp, dw, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w), GZPY_F32(rstd),
                                          (int64_t)N, (int)C);
    return gzt_op_end(&o, s);
}

/* Elementwise: any shape, gate and up alike. */
static PyArrayObject *pair_in(PyObject *obj, const char *name, PyArrayObject *like) {
    if (!like) return gzt_f32_in(obj, name, PyArray_Check(obj) ? PyArray_NDIM((PyArrayObject *)obj) : 1, NULL,
                                 "(any shape)");
    return gzt_f32_in(obj, name, PyArray_NDIM(like), PyArray_DIMS(like), "(the shape of gate)");
}

PyObject *gzt_swiglu_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"gate", "up", NULL};
    PyObject *gate_o, *up_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:swiglu_forward", kwlist, &gate_o, &up_o)) return NULL;
    PyArrayObject *gate = pair_in(gate_o, "gate", NULL);
    PyArrayObject *up = gate ? pair_in(up_o, "up", gate) : NULL;
    if (!up) return NULL;
    op_outputs o = {0};
    float *out = gzt_add_output(&o, PyArray_NDIM(gate), PyArray_DIMS(gate), 1);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_swiglu_forward(out, GZPY_F32(gate), GZPY_F32(up), (int64_t)PyArray_SIZE(gate));
    return gzt_op_end(&o, s);
}

PyObject *gzt_swiglu_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "gate", "up", NULL};
    PyObject *dout_o, *gate_o, *up_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:swiglu_backward", kwlist, &dout_o, &gate_o, &up_o))
        return NULL;
    PyArrayObject *gate = pair_in(gate_o, "gate", NULL);
    PyArrayObject *up = gate ? pair_in(up_o, "up", gate) : NULL;
    PyArrayObject *dout = up ? pair_in(dout_o, "dout", gate) : NULL;
    if (!dout) return NULL;
    op_outputs o = {0};
    float *dgate = gzt_add_output(&o, PyArray_NDIM(gate), PyArray_DIMS(gate), 1);
    float *dup = gzt_add_output(&o, PyArray_NDIM(gate), PyArray_DIMS(gate), 1);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_swiglu_backward(dgate, dup, GZPY_F32(dout), GZPY_F32(gate), GZPY_F32(up),
                                         (int64_t)PyArray_SIZE(gate));
    return gzt_op_end(&o, s);
}
