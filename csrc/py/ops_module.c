/* ops_module.c — gozaru._core.ops: the CPU backend's ops on NumPy arrays, one Python function per
 * vtable entry, so tests can check each op (finite differences, reference formulas) in isolation.
 *
 * Every input is checked like any other _core argument (dtype, shape, contiguity, id ranges, no
 * empty arrays); outputs are fresh zero-filled arrays, so the "accumulate" outputs of backend.h
 * (dw, db, dwte, layernorm dinp) come back as the plain gradient. Nothing numeric happens here.
 */
#include "pycore.h"

#include <limits.h>

#include "args.h"
#include "cpu/cpu_ops.h"
#include "call.h"

/* A non-empty float32 / int32 input. */
static PyArrayObject *f32_in(PyObject *obj, const char *name, int ndim, const npy_intp *want, const char *dims) {
    PyArrayObject *a = gzpy_array(obj, name, NPY_FLOAT32, ndim, want, dims);
    return a && gzpy_check_nonempty(a, name) == 0 ? a : NULL;
}

static PyArrayObject *i32_in(PyObject *obj, const char *name, int ndim, const npy_intp *want, const char *dims) {
    PyArrayObject *a = gzpy_array(obj, name, NPY_INT32, ndim, want, dims);
    return a && gzpy_check_nonempty(a, name) == 0 ? a : NULL;
}

/* Sizes the backend takes as int must fit one. */
static int dims_fit(const npy_intp *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (gzpy_check_int_dim(d[i], "a dimension") < 0) return -1;
    return 0;
}
#define DIMS_FIT(...) dims_fit((const npy_intp[]){__VA_ARGS__}, sizeof((const npy_intp[]){__VA_ARGS__}) / sizeof(npy_intp))

/* ------------------------------------------------------------------ outputs and the call */
/* The fresh zero-filled arrays one op writes into, and the call that fills them. The op's result is
 * its returned outputs in order (one alone, several as a tuple, a skipped one as None); every array
 * is released when an allocation or the backend call fails, so ops need no cleanup code of their own. */
#define MAX_OUTPUTS 4
typedef struct {
    int n, failed;
    PyArrayObject *a[MAX_OUTPUTS]; /* NULL: a skipped output, returned as None */
    int returned[MAX_OUTPUTS];     /* 0: scratch the backend needs, dropped after the call */
    gzpy_call call;
} op_outputs;

static float *add_output(op_outputs *o, int ndim, const npy_intp *shape, int returned) {
    PyArrayObject *a = o->failed ? NULL : gzpy_zeros_f32(ndim, shape);
    if (!a) {
        o->failed = 1;
        return NULL;
    }
    o->a[o->n] = a;
    o->returned[o->n++] = returned;
    return GZPY_F32(a);
}

#define OUT_F32(o, ndim, ...) add_output(o, ndim, (const npy_intp[]){__VA_ARGS__}, 1)
#define SCRATCH_F32(o, ndim, ...) add_output(o, ndim, (const npy_intp[]){__VA_ARGS__}, 0)

/* An output the caller did not ask for (returned as None; the backend gets NULL). */
static float *skip_output(op_outputs *o) {
    o->a[o->n] = NULL;
    o->returned[o->n++] = 1;
    return NULL;
}

static PyObject *release_outputs(op_outputs *o) {
    for (int i = 0; i < o->n; i++) Py_XDECREF(o->a[i]);
    return NULL;
}

/* Releases the GIL for the backend call; -1 (outputs released) when an allocation failed. */
static int op_begin(op_outputs *o) {
    if (o->failed) {
        release_outputs(o);
        return -1;
    }
    return gzpy_call_begin(&o->call, NULL, 0);
}

/* Takes the GIL back; the op's result, or NULL with the exception set and the outputs released. */
static PyObject *op_end(op_outputs *o, gz_status s) {
    if (gzpy_call_end(&o->call, s) < 0) return release_outputs(o);
    PyObject *ret[MAX_OUTPUTS];
    int k = 0;
    for (int i = 0; i < o->n; i++) {
        if (o->returned[i]) ret[k++] = o->a[i] ? (PyObject *)o->a[i] : Py_NewRef(Py_None);
        else Py_DECREF(o->a[i]);
    }
    if (k == 1) return ret[0];
    PyObject *tuple = PyTuple_New(k);
    for (int i = 0; i < k; i++) {
        if (tuple) PyTuple_SET_ITEM(tuple, i, ret[i]); /* steals */
        else Py_DECREF(ret[i]);
    }
    return tuple;
}


/* ------------------------------------------------------------------ layernorm */
static PyObject *layernorm_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"inp", "weight", "bias", "eps", NULL};
    PyObject *inp_o, *w_o, *b_o, *eps_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:layernorm_forward", kwlist, &inp_o, &w_o, &b_o, &eps_o))
        return NULL;
    double eps = 1e-5;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *w = f32_in(w_o, "weight", 1, &C, "[C]");
    PyArrayObject *b = w ? f32_in(b_o, "bias", 1, &C, "[C]") : NULL;
    if (!b || (eps_o && gzpy_float_arg(eps_o, "eps", 0.0, 1.0, 0, &eps) < 0)) return NULL;
    if (DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, C), *mean = OUT_F32(&o, 1, N), *rstd = OUT_F32(&o, 1, N);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_layernorm_forward(out, mean, rstd, GZPY_F32(inp), GZPY_F32(w), GZPY_F32(b), (int64_t)N,
                                           (int)C, (float)eps);
    return op_end(&o, s);
}

static PyObject *layernorm_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", "weight", "mean", "rstd", NULL};
    PyObject *dout_o, *inp_o, *w_o, *mean_o, *rstd_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:layernorm_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &mean_o, &rstd_o))
        return NULL;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *dout = f32_in(dout_o, "dout", 2, PyArray_DIMS(inp), "[N, C]");
    PyArrayObject *w = dout ? f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    PyArrayObject *mean = w ? f32_in(mean_o, "mean", 1, &N, "[N]") : NULL;
    PyArrayObject *rstd = mean ? f32_in(rstd_o, "rstd", 1, &N, "[N]") : NULL;
    if (!rstd || DIMS_FIT(C) < 0) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 1, C), *db = OUT_F32(&o, 1, C);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_layernorm_backward(dinp, dw, db, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w), GZPY_F32(mean),
                                            GZPY_F32(rstd), (int64_t)N, (int)C);
    return op_end(&o, s);
}

/* ------------------------------------------------------------------ matmul */
static PyObject *matmul_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"inp", "weight", "bias", NULL};
    PyObject *inp_o, *w_o, *b_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:matmul_forward", kwlist, &inp_o, &w_o, &b_o)) return NULL;
    PyArrayObject *b = NULL;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    npy_intp want_w[2] = {GZPY_ANY, C};
    PyArrayObject *w = f32_in(w_o, "weight", 2, want_w, "[OC, C]");
    if (!w) return NULL;
    npy_intp OC = PyArray_DIM(w, 0);
    if (b_o != Py_None && !(b = f32_in(b_o, "bias", 1, &OC, "[OC]"))) return NULL;
    if (DIMS_FIT(C, OC) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, OC);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_matmul_forward(out, GZPY_F32(inp), GZPY_F32(w), b ? GZPY_F32(b) : NULL, (int64_t)N, (int)C,
                                        (int)OC);
    return op_end(&o, s);
}

static PyObject *matmul_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", "weight", "with_bias", NULL};
    PyObject *dout_o, *inp_o, *w_o;
    int with_bias = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|p:matmul_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &with_bias))
        return NULL;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    npy_intp want_w[2] = {GZPY_ANY, C};
    PyArrayObject *w = f32_in(w_o, "weight", 2, want_w, "[OC, C]");
    if (!w) return NULL;
    npy_intp OC = PyArray_DIM(w, 0);
    npy_intp want_dout[2] = {N, OC};
    PyArrayObject *dout = f32_in(dout_o, "dout", 2, want_dout, "[N, OC]");
    if (!dout || DIMS_FIT(C, OC) < 0) return NULL;
    op_outputs o = {0};
    float *dinp = OUT_F32(&o, 2, N, C), *dw = OUT_F32(&o, 2, OC, C);
    float *db = with_bias ? OUT_F32(&o, 1, OC) : skip_output(&o);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_matmul_backward(dinp, dw, db, GZPY_F32(dout), GZPY_F32(inp), GZPY_F32(w), (int64_t)N,
                                         (int)C, (int)OC);
    return op_end(&o, s);
}

/* ------------------------------------------------------------------ rotary + split */
/* q, k, v (or their gradients): three [B, NH, T, HS] arrays of one shape. */
static int qkv_in(PyObject *q_o, PyObject *k_o, PyObject *v_o, const char *names[3], PyArrayObject *out[3]) {
    out[0] = f32_in(q_o, names[0], 4, NULL, "[B, NH, T, HS]");
    out[1] = out[0] ? f32_in(k_o, names[1], 4, PyArray_DIMS(out[0]), "[B, NH, T, HS]") : NULL;
    out[2] = out[1] ? f32_in(v_o, names[2], 4, PyArray_DIMS(out[0]), "[B, NH, T, HS]") : NULL;
    return out[2] ? 0 : -1;
}

/* pos [B, T] must index rows of the [P, rot/2] cos/sin tables. */
static int check_rotary_tables(PyArrayObject *pos, PyArrayObject **cos_t, PyArrayObject **sin_t, PyObject *cos_o,
                               PyObject *sin_o, npy_intp HS, int *rot) {
    *cos_t = f32_in(cos_o, "cos", 2, NULL, "[max_pos, rot/2]");
    if (!*cos_t) return -1;
    *sin_t = f32_in(sin_o, "sin", 2, PyArray_DIMS(*cos_t), "[max_pos, rot/2]");
    if (!*sin_t) return -1;
    npy_intp P = PyArray_DIM(*cos_t, 0), half = PyArray_DIM(*cos_t, 1);
    if (2 * half > HS) {
        PyErr_Format(PyExc_ValueError, "cos/sin have rot/2 = %lld columns, but rot = %lld exceeds the head size %lld",
                     (long long)half, (long long)(2 * half), (long long)HS);
        return -1;
    }
    if (gzpy_check_int_dim(P, "max_pos") < 0) return -1;
    if (gzpy_check_ids(pos, "pos", (int)P, 0, "table rows") < 0) return -1;
    *rot = (int)(2 * half);
    return 0;
}

static PyObject *rotary_split_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"qkv", "pos", "cos", "sin", NULL};
    PyObject *qkv_o, *pos_o, *cos_o, *sin_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:rotary_split_forward", kwlist, &qkv_o, &pos_o, &cos_o,
                                     &sin_o))
        return NULL;
    PyArrayObject *cos_t, *sin_t;
    npy_intp want_qkv[5] = {GZPY_ANY, GZPY_ANY, GZPY_ANY, 3, GZPY_ANY};
    PyArrayObject *qkv = f32_in(qkv_o, "qkv", 5, want_qkv, "[B, T, NH, 3, HS]");
    if (!qkv) return NULL;
    npy_intp B = PyArray_DIM(qkv, 0), T = PyArray_DIM(qkv, 1), NH = PyArray_DIM(qkv, 2), HS = PyArray_DIM(qkv, 4);
    PyArrayObject *pos = i32_in(pos_o, "pos", 2, PyArray_DIMS(qkv), "[B, T]");
    int rot;
    if (!pos || check_rotary_tables(pos, &cos_t, &sin_t, cos_o, sin_o, HS, &rot) < 0) return NULL;
    if (DIMS_FIT(B, T, NH, HS, B * T * NH * 3 * HS) < 0) return NULL;
    op_outputs o = {0};
    float *q = OUT_F32(&o, 4, B, NH, T, HS), *k = OUT_F32(&o, 4, B, NH, T, HS), *v = OUT_F32(&o, 4, B, NH, T, HS);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_rotary_split_forward(q, k, v, GZPY_F32(qkv), GZPY_I32(pos), GZPY_F32(cos_t),
                                              GZPY_F32(sin_t), (int)B, (int)T, (int)NH, (int)HS, rot);
    return op_end(&o, s);
}

static PyObject *rotary_split_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dq", "dk", "dv", "pos", "cos", "sin", NULL};
    PyObject *dq_o, *dk_o, *dv_o, *pos_o, *cos_o, *sin_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO:rotary_split_backward", kwlist, &dq_o, &dk_o, &dv_o,
                                     &pos_o, &cos_o, &sin_o))
        return NULL;
    PyArrayObject *cos_t, *sin_t, *in[3];
    if (qkv_in(dq_o, dk_o, dv_o, (const char *[]){"dq", "dk", "dv"}, in) < 0) return NULL;
    npy_intp B = PyArray_DIM(in[0], 0), NH = PyArray_DIM(in[0], 1), T = PyArray_DIM(in[0], 2),
             HS = PyArray_DIM(in[0], 3);
    npy_intp want_pos[2] = {B, T};
    PyArrayObject *pos = i32_in(pos_o, "pos", 2, want_pos, "[B, T]");
    int rot;
    if (!pos || check_rotary_tables(pos, &cos_t, &sin_t, cos_o, sin_o, HS, &rot) < 0) return NULL;
    if (DIMS_FIT(B, T, NH, HS, B * T * NH * 3 * HS) < 0) return NULL;
    op_outputs o = {0};
    float *dqkv = OUT_F32(&o, 5, B, T, NH, 3, HS);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_rotary_split_backward(dqkv, GZPY_F32(in[0]), GZPY_F32(in[1]), GZPY_F32(in[2]), GZPY_I32(pos),
                                               GZPY_F32(cos_t), GZPY_F32(sin_t), (int)B, (int)T, (int)NH, (int)HS,
                                               rot);
    return op_end(&o, s);
}

/* ------------------------------------------------------------------ attention */
static PyObject *attention_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"q", "k", "v", NULL};
    PyObject *q_o, *k_o, *v_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:attention_forward", kwlist, &q_o, &k_o, &v_o)) return NULL;
    PyArrayObject *in[3];
    if (qkv_in(q_o, k_o, v_o, (const char *[]){"q", "k", "v"}, in) < 0) return NULL;
    PyArrayObject *q = in[0];
    npy_intp B = PyArray_DIM(q, 0), NH = PyArray_DIM(q, 1), T = PyArray_DIM(q, 2), HS = PyArray_DIM(q, 3);
    if (DIMS_FIT(B, NH, T, HS, NH * HS) < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 3, B, T, NH * HS), *att = OUT_F32(&o, 4, B, NH, T, T);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_attention_forward(out, att, GZPY_F32(in[0]), GZPY_F32(in[1]), GZPY_F32(in[2]), (int)B,
                                           (int)T, (int)NH, (int)HS);
    return op_end(&o, s);
}

static PyObject *attention_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "att", "q", "k", "v", NULL};
    PyObject *dout_o, *att_o, *q_o, *k_o, *v_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:attention_backward", kwlist, &dout_o, &att_o, &q_o, &k_o,
                                     &v_o))
        return NULL;
    PyArrayObject *in[3];
    if (qkv_in(q_o, k_o, v_o, (const char *[]){"q", "k", "v"}, in) < 0) return NULL;
    PyArrayObject *q = in[0];
    npy_intp B = PyArray_DIM(q, 0), NH = PyArray_DIM(q, 1), T = PyArray_DIM(q, 2), HS = PyArray_DIM(q, 3);
    npy_intp want_att[4] = {B, NH, T, T}, want_dout[3] = {B, T, NH * HS};
    PyArrayObject *att = f32_in(att_o, "att", 4, want_att, "[B, NH, T, T]");
    PyArrayObject *dout = att ? f32_in(dout_o, "dout", 3, want_dout, "[B, T, NH*HS]") : NULL;
    if (!dout || DIMS_FIT(B, NH, T, HS, NH * HS) < 0) return NULL;
    op_outputs o = {0};
    float *dq = OUT_F32(&o, 4, B, NH, T, HS), *dk = OUT_F32(&o, 4, B, NH, T, HS), *dv = OUT_F32(&o, 4, B, NH, T, HS);
    float *scratch = SCRATCH_F32(&o, 4, B, NH, T, T); /* d(att) / d(pre-softmax scores) */
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_attention_backward(dq, dk, dv, scratch, GZPY_F32(dout), GZPY_F32(att), GZPY_F32(in[0]),
                                            GZPY_F32(in[1]), GZPY_F32(in[2]), (int)B, (int)T, (int)NH, (int)HS);
    return op_end(&o, s);
}

/* ------------------------------------------------------------------ gelu */
/* Elementwise ops take any shape. */
static PyArrayObject *any_shape_f32(PyObject *obj, const char *name) {
    int ndim = PyArray_Check(obj) ? PyArray_NDIM((PyArrayObject *)obj) : 1;
    return f32_in(obj, name, ndim, NULL, "(any shape)");
}

static PyObject *gelu_forward(PyObject *mod, PyObject *inp_o) {
    (void)mod;
    PyArrayObject *inp = any_shape_f32(inp_o, "inp");
    if (!inp) return NULL;
    op_outputs o = {0};
    float *out = add_output(&o, PyArray_NDIM(inp), PyArray_DIMS(inp), 1);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_gelu_forward(out, GZPY_F32(inp), (int64_t)PyArray_SIZE(inp));
    return op_end(&o, s);
}

static PyObject *gelu_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", NULL};
    PyObject *dout_o, *inp_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:gelu_backward", kwlist, &dout_o, &inp_o)) return NULL;
    PyArrayObject *inp = any_shape_f32(inp_o, "inp");
    if (!inp) return NULL;
    PyArrayObject *dout = f32_in(dout_o, "dout", PyArray_NDIM(inp), PyArray_DIMS(inp), "(the shape of inp)");
    if (!dout) return NULL;
    op_outputs o = {0};
    float *dinp = add_output(&o, PyArray_NDIM(inp), PyArray_DIMS(inp), 1);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_gelu_backward(dinp, GZPY_F32(dout), GZPY_F32(inp), (int64_t)PyArray_SIZE(inp));
    return op_end(&o, s);
}

/* ------------------------------------------------------------------ cross-entropy */
static PyObject *cross_entropy_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"logits", "targets", NULL};
    PyObject *logits_o, *targets_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:cross_entropy_forward", kwlist, &logits_o, &targets_o))
        return NULL;
    PyArrayObject *logits = f32_in(logits_o, "logits", 2, NULL, "[N, V]");
    if (!logits) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    PyArrayObject *targets = i32_in(targets_o, "targets", 1, &N, "[N]");
    if (!targets || DIMS_FIT(V) < 0) return NULL;
    if (gzpy_check_ids(targets, "targets", (int)V, 1, "vocabulary") < 0) return NULL;
    op_outputs o = {0};
    float *lse = OUT_F32(&o, 1, N);
    double loss_sum = 0.0;
    int64_t count = 0;
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_cross_entropy_forward(lse, GZPY_F32(logits), GZPY_I32(targets), (int64_t)N, (int)V,
                                               &loss_sum, &count);
    PyObject *lse_obj = op_end(&o, s);
    return lse_obj ? Py_BuildValue("(NdL)", lse_obj, loss_sum, (long long)count) : NULL;
}

static PyObject *cross_entropy_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"logits", "lse", "targets", "scale", NULL};
    PyObject *logits_o, *lse_o, *targets_o, *scale_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:cross_entropy_backward", kwlist, &logits_o, &lse_o,
                                     &targets_o, &scale_o))
        return NULL;
    double scale = 1.0;
    PyArrayObject *logits = f32_in(logits_o, "logits", 2, NULL, "[N, V]");
    if (!logits) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    PyArrayObject *lse = f32_in(lse_o, "lse", 1, &N, "[N]");
    PyArrayObject *targets = lse ? i32_in(targets_o, "targets", 1, &N, "[N]") : NULL;
    if (!targets || (scale_o && gzpy_float_arg(scale_o, "scale", -1e30, 1e30, 0, &scale) < 0)) return NULL;
    if (DIMS_FIT(V) < 0 || gzpy_check_ids(targets, "targets", (int)V, 1, "vocabulary") < 0) return NULL;
    op_outputs o = {0};
    float *dlogits = OUT_F32(&o, 2, N, V);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_cross_entropy_backward(dlogits, GZPY_F32(logits), GZPY_F32(lse), GZPY_I32(targets),
                                                (int64_t)N, (int)V, (float)scale);
    return op_end(&o, s);
}

/* ------------------------------------------------------------------ embedding */
static PyObject *embedding_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"tokens", "wte", NULL};
    PyObject *tokens_o, *wte_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:embedding_forward", kwlist, &tokens_o, &wte_o)) return NULL;
    PyArrayObject *tokens = i32_in(tokens_o, "tokens", 1, NULL, "[N]");
    PyArrayObject *wte = tokens ? f32_in(wte_o, "wte", 2, NULL, "[V, C]") : NULL;
    if (!wte) return NULL;
    npy_intp N = PyArray_DIM(tokens, 0), V = PyArray_DIM(wte, 0), C = PyArray_DIM(wte, 1);
    if (DIMS_FIT(V, C) < 0 || gzpy_check_ids(tokens, "tokens", (int)V, 0, "vocabulary") < 0) return NULL;
    op_outputs o = {0};
    float *out = OUT_F32(&o, 2, N, C);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_embedding_forward(out, GZPY_I32(tokens), GZPY_F32(wte), (int64_t)N, (int)C);
    return op_end(&o, s);
}

static PyObject *embedding_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "tokens", "vocab_size", NULL};
    PyObject *dout_o, *tokens_o, *vocab_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:embedding_backward", kwlist, &dout_o, &tokens_o, &vocab_o))
        return NULL;
    long long V;
    PyArrayObject *tokens = i32_in(tokens_o, "tokens", 1, NULL, "[N]");
    if (!tokens || gzpy_int_arg(vocab_o, "vocab_size", 1, INT_MAX, &V) < 0) return NULL;
    npy_intp N = PyArray_DIM(tokens, 0);
    npy_intp want_dout[2] = {N, GZPY_ANY};
    PyArrayObject *dout = f32_in(dout_o, "dout", 2, want_dout, "[N, C]");
    if (!dout) return NULL;
    npy_intp C = PyArray_DIM(dout, 1);
    if (DIMS_FIT(C) < 0 || gzpy_check_ids(tokens, "tokens", (int)V, 0, "vocabulary") < 0) return NULL;
    op_outputs o = {0};
    float *dwte = OUT_F32(&o, 2, (npy_intp)V, C);
    if (op_begin(&o) < 0) return NULL;
    gz_status s = gz_cpu_embedding_backward(dwte, GZPY_F32(dout), GZPY_I32(tokens), (int64_t)N, (int)C);
    return op_end(&o, s);
}

/* ------------------------------------------------------------------ module */
#define KW(fn, doc) {#fn, (PyCFunction)(void (*)(void))fn, METH_VARARGS | METH_KEYWORDS, doc}
static PyMethodDef ops_methods[] = {
    KW(layernorm_forward, "layernorm_forward(inp[N,C], weight[C], bias[C], eps=1e-5) -> (out, mean[N], rstd[N])"),
    KW(layernorm_backward, "layernorm_backward(dout, inp, weight, mean, rstd) -> (dinp, dweight, dbias)"),
    KW(matmul_forward, "matmul_forward(inp[N,C], weight[OC,C], bias[OC]=None) -> out[N,OC]"),
    KW(matmul_backward, "matmul_backward(dout[N,OC], inp, weight, with_bias=True) -> (dinp, dweight, dbias|None)"),
    KW(rotary_split_forward, "rotary_split_forward(qkv[B,T,NH,3,HS], pos[B,T] int32, cos[P,rot/2], sin[P,rot/2])"
                             " -> (q, k, v) each [B,NH,T,HS]"),
    KW(rotary_split_backward, "rotary_split_backward(dq, dk, dv, pos, cos, sin) -> dqkv[B,T,NH,3,HS]"),
    KW(attention_forward, "attention_forward(q, k, v [B,NH,T,HS]) -> (out[B,T,NH*HS], att[B,NH,T,T])"),
    KW(attention_backward, "attention_backward(dout, att, q, k, v) -> (dq, dk, dv)"),
    {"gelu_forward", (PyCFunction)gelu_forward, METH_O, "gelu_forward(inp) -> out (exact erf GELU, any shape)"},
    KW(gelu_backward, "gelu_backward(dout, inp) -> dinp"),
    KW(cross_entropy_forward, "cross_entropy_forward(logits[N,V], targets[N] int32 (-100 = ignore))"
                              " -> (lse[N], loss_sum, count)"),
    KW(cross_entropy_backward, "cross_entropy_backward(logits, lse, targets, scale=1.0) -> dlogits"),
    KW(embedding_forward, "embedding_forward(tokens[N] int32, wte[V,C]) -> out[N,C]"),
    KW(embedding_backward, "embedding_backward(dout[N,C], tokens[N], vocab_size) -> dwte[V,C]"),
    {NULL, NULL, 0, NULL},
};
#undef KW

static struct PyModuleDef ops_def = {
    PyModuleDef_HEAD_INIT, "gozaru._core.ops",
    "The CPU backend's ops on NumPy float32 arrays (for tests; the model never goes through here).", -1,
    ops_methods, NULL, NULL, NULL, NULL,
};

PyObject *gzpy_ops_module_create(void) { return PyModule_Create(&ops_def); }
