/* ops_dense.c — layernorm, Linear and GELU of the test-only op module (testops.h). */
#include "testops.h"

/* ------------------------------------------------------------------ layernorm */
PyObject *gzt_layernorm_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"inp", "weight", "bias", "eps", NULL};
    PyObject *inp_o, *w_o, *b_o, *eps_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:layernorm_forward", kwlist, &inp_o, &w_o, &b_o, &eps_o))
        return NULL;
    double eps = 1e-5;
    PyArrayObject *inp = gzt_f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *w = gzt_f32_in(w_o, "weight", 1, &C, "[C]");
    PyArrayObject *b = w ? gzt_f32_in(b_o, "bias", 1, &C, "[C]") : NULL;
    if (!b || (eps_o && gzpy_float_arg(eps_o, "eps", 0.0, 1.0, 0, &eps) < 0)) return NULL;
    if (DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, C), *mean = OUT_F32(&o, 1, N), *rstd = OUT_F32(&o, 1, N);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_layernorm_forward(out, mean, rstd, GZPY_F32(inp), GZPY_F32(w), GZPY_F32(b), (int64_t)N,
                                           (int)C, (float)eps);
    return gzt_op_end(&o, s);
}

PyObject *gzt_layernorm_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", "weight", "mean", "rstd", NULL};
    PyObject *dout_o, *inp_o, *w_o, *mean_o, *rstd_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:layernorm_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &mean_o, &rstd_o))
        return NULL;
    PyArrayObject *inp = gzt_f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *dout = gzt_f32_in(dout_o, "dout", 2, PyArray_DIMS(inp), "[N, C]");
    PyArrayObject *w = dout ? gzt_f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    PyArrayObject *mean = w ? gzt_f32_in(mean_o, "mean", 1, &N, "[N]") : NULL;
    PyArrayObject *rstd = mean ? gzt_f32_in(rstd_o, "rstd", 1, &N, "[N]") : NULL;
    if (!rstd || DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 1, C), *db = OUT_F32(&o, 1, C);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_layernorm_backward(dinp, dw, db, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w), GZPY_F32(mean),
                                            GZPY_F32(rstd), (int64_t)N, (int)C);
    return gzt_op_end(&o, s);
}

/* ------------------------------------------------------------------ matmul */
PyObject *gzt_matmul_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"inp", "weight", "bias", NULL};
    PyObject *inp_o, *w_o, *b_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:matmul_forward", kwlist, &inp_o, &w_o, &b_o)) return NULL;
    PyArrayObject *b = NULL;
    PyArrayObject *inp = gzt_f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    npy_intp want_w[2] = {GZPY_ANY, C};
    PyArrayObject *w = gzt_f32_in(w_o, "weight", 2, want_w, "[OC, C]");
    if (!w) return NULL;
    npy_intp OC = PyArray_DIM(w, 0);
    if (b_o != Py_None && !(b = gzt_f32_in(b_o, "bias", 1, &OC, "[OC]"))) return NULL;
    if (DIMS_FIT(C, OC) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, OC);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_matmul_forward(out, GZPY_F32(inp), GZPY_F32(w), b ? GZPY_F32(b) : NULL, (int64_t)N, (int)C,
                                        (int)OC);
    return gzt_op_end(&o, s);
}

PyObject *gzt_matmul_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", "weight", "with_bias", NULL};
    PyObject *dout_o, *inp_o, *w_o;
    int with_bias = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|p:matmul_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &with_bias))
        return NULL;
    PyArrayObject *inp = gzt_f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    npy_intp want_w[2] = {GZPY_ANY, C};
    PyArrayObject *w = gzt_f32_in(w_o, "weight", 2, want_w, "[OC, C]");
    if (!w) return NULL;
    npy_intp OC = PyArray_DIM(w, 0);
    npy_intp want_dout[2] = {N, OC};
    PyArrayObject *dout = gzt_f32_in(dout_o, "dout", 2, want_dout, "[N, OC]");
    if (!dout || DIMS_FIT(C, OC) < 0) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 2, OC, C);
    float *db = with_bias ? OUT_F32(&o, 1, OC) : gzt_skip_output(&o);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_matmul_backward(dinp, dw, db, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w), (int64_t)N,
                                         (int)C, (int)OC);
    return gzt_op_end(&o, s);
}

/* ------------------------------------------------------------------ gelu */
/* Elementwise ops take any shape. */
static PyArrayObject *any_shape_f32(PyObject *obj, const char *name) {
    int ndim = PyArray_Check(obj) ? PyArray_NDIM((PyArrayObject *)obj) : 1;
    return gzt_f32_in(obj, name, ndim, NULL, "(any shape)");
}

PyObject *gzt_gelu_forward(PyObject *mod, PyObject *inp_o) {
    (void)mod;
    PyArrayObject *inp = any_shape_f32(inp_o, "inp");
    if (!inp) return NULL;
    op_outputs o = {0};
    float *out = gzt_add_output(&o, PyArray_NDIM(inp), PyArray_DIMS(inp), 1);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_gelu_forward(out, GZPY_F32(inp), (int64_t)PyArray_SIZE(inp));
    return gzt_op_end(&o, s);
}

PyObject *gzt_gelu_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", NULL};
    PyObject *dout_o, *inp_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:gelu_backward", kwlist, &dout_o, &inp_o)) return NULL;
    PyArrayObject *inp = any_shape_f32(inp_o, "inp");
    if (!inp) return NULL;
    PyArrayObject *dout = gzt_f32_in(dout_o, "dout", PyArray_NDIM(inp), PyArray_DIMS(inp), "(the shape of inp)");
    if (!dout) return NULL;
    op_outputs o = {0};
    float *dinp = gzt_add_output(&o, PyArray_NDIM(inp), PyArray_DIMS(inp), 1);
    if (gzt_op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_gelu_backward(dinp, GZPY_F32(dout), GZPY_F32(inp), (int64_t)PyArray_SIZE(inp));
    return gzt_op_end(&o, s);
}

