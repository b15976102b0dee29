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
#include "backend.h"

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
#define DIMS_FIT(...)                                                    \
    do {                                                                 \
        npy_intp d_[] = {__VA_ARGS__};                                   \
        for (size_t i_ = 0; i_ < sizeof d_ / sizeof d_[0]; i_++)         \
            if (gzpy_check_int_dim(d_[i_], "a dimension") < 0) goto fail; \
    } while (0)

/* Runs a backend call with the GIL released; on failure raises and jumps to fail. */
#define BACKEND_CALL(expr)                        \
    do {                                          \
        gz_status s_;                             \
        Py_BEGIN_ALLOW_THREADS                    \
        s_ = (expr);                              \
        Py_END_ALLOW_THREADS                      \
        if (s_ != GZ_OK) {                        \
            gzpy_raise_status(s_);                \
            goto fail;                            \
        }                                         \
    } while (0)

#define NEW_F32(var, ndim, ...)                              \
    do {                                                     \
        npy_intp shape_[] = {__VA_ARGS__};                   \
        var = gzpy_zeros_f32(ndim, shape_);                  \
        if (!var) goto fail;                                 \
    } while (0)

static const gz_backend *cpu(void) { return gz_backend_cpu(); }

/* ------------------------------------------------------------------ layernorm */
static PyObject *layernorm_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"inp", "weight", "bias", "eps", NULL};
    PyObject *inp_o, *w_o, *b_o, *eps_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:layernorm_forward", kwlist, &inp_o, &w_o, &b_o, &eps_o))
        return NULL;
    PyArrayObject *out = NULL, *mean = NULL, *rstd = NULL;
    double eps = 1e-5;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *w = f32_in(w_o, "weight", 1, &C, "[C]");
    PyArrayObject *b = w ? f32_in(b_o, "bias", 1, &C, "[C]") : NULL;
    if (!b || (eps_o && gzpy_float_arg(eps_o, "eps", 0.0, 1.0, 0, &eps) < 0)) return NULL;
    DIMS_FIT(C);
    NEW_F32(out, 2, N, C);
    NEW_F32(mean, 1, N);
    NEW_F32(rstd, 1, N);
    BACKEND_CALL(cpu()->layernorm_forward(GZPY_F32(out), GZPY_F32(mean), GZPY_F32(rstd), GZPY_F32(inp),
                                          GZPY_F32(w), GZPY_F32(b), (int64_t)N, (int)C, (float)eps));
    return Py_BuildValue("(NNN)", out, mean, rstd);
fail:
    Py_XDECREF(out);
    Py_XDECREF(mean);
    Py_XDECREF(rstd);
    return NULL;
}

static PyObject *layernorm_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", "weight", "mean", "rstd", NULL};
    PyObject *dout_o, *inp_o, *w_o, *mean_o, *rstd_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:layernorm_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &mean_o, &rstd_o))
        return NULL;
    PyArrayObject *dinp = NULL, *dw = NULL, *db = NULL;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    PyArrayObject *dout = f32_in(dout_o, "dout", 2, PyArray_DIMS(inp), "[N, C]");
    PyArrayObject *w = dout ? f32_in(w_o, "weight", 1, &C, "[C]") : NULL;
    PyArrayObject *mean = w ? f32_in(mean_o, "mean", 1, &N, "[N]") : NULL;
    PyArrayObject *rstd = mean ? f32_in(rstd_o, "rstd", 1, &N, "[N]") : NULL;
    if (!rstd) return NULL;
    DIMS_FIT(C);
    NEW_F32(dinp, 2, N, C);
    NEW_F32(dw, 1, C);
    NEW_F32(db, 1, C);
    BACKEND_CALL(cpu()->layernorm_backward(GZPY_F32(dinp), GZPY_F32(dw), GZPY_F32(db), GZPY_F32(dout),
                                           GZPY_F32(inp), GZPY_F32(w), GZPY_F32(mean), GZPY_F32(rstd), (int64_t)N,
                                           (int)C));
    return Py_BuildValue("(NNN)", dinp, dw, db);
fail:
    Py_XDECREF(dinp);
    Py_XDECREF(dw);
    Py_XDECREF(db);
    return NULL;
}

/* ------------------------------------------------------------------ matmul */
static PyObject *matmul_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"inp", "weight", "bias", NULL};
    PyObject *inp_o, *w_o, *b_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:matmul_forward", kwlist, &inp_o, &w_o, &b_o)) return NULL;
    PyArrayObject *out = NULL, *b = NULL;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    npy_intp want_w[2] = {GZPY_ANY, C};
    PyArrayObject *w = f32_in(w_o, "weight", 2, want_w, "[OC, C]");
    if (!w) return NULL;
    npy_intp OC = PyArray_DIM(w, 0);
    if (b_o != Py_None && !(b = f32_in(b_o, "bias", 1, &OC, "[OC]"))) return NULL;
    DIMS_FIT(C, OC);
    NEW_F32(out, 2, N, OC);
    BACKEND_CALL(cpu()->matmul_forward(GZPY_F32(out), GZPY_F32(inp), GZPY_F32(w), b ? GZPY_F32(b) : NULL,
                                       (int64_t)N, (int)C, (int)OC));
    return (PyObject *)out;
fail:
    Py_XDECREF(out);
    return NULL;
}

static PyObject *matmul_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", "weight", "with_bias", NULL};
    PyObject *dout_o, *inp_o, *w_o;
    int with_bias = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|p:matmul_backward", kwlist, &dout_o, &inp_o, &w_o,
                                     &with_bias))
        return NULL;
    PyArrayObject *dinp = NULL, *dw = NULL, *db = NULL;
    PyArrayObject *inp = f32_in(inp_o, "inp", 2, NULL, "[N, C]");
    if (!inp) return NULL;
    npy_intp N = PyArray_DIM(inp, 0), C = PyArray_DIM(inp, 1);
    npy_intp want_w[2] = {GZPY_ANY, C};
    PyArrayObject *w = f32_in(w_o, "weight", 2, want_w, "[OC, C]");
    if (!w) return NULL;
    npy_intp OC = PyArray_DIM(w, 0);
    npy_intp want_dout[2] = {N, OC};
    PyArrayObject *dout = f32_in(dout_o, "dout", 2, want_dout, "[N, OC]");
    if (!dout) return NULL;
    DIMS_FIT(C, OC);
    NEW_F32(dinp, 2, N, C);
    NEW_F32(dw, 2, OC, C);
    if (with_bias) NEW_F32(db, 1, OC);
    BACKEND_CALL(cpu()->matmul_backward(GZPY_F32(dinp), GZPY_F32(dw), db ? GZPY_F32(db) : NULL, GZPY_F32(dout),
                                        GZPY_F32(inp), GZPY_F32(w), (int64_t)N, (int)C, (int)OC));
    return Py_BuildValue("(NNO)", dinp, dw, db ? (PyObject *)db : Py_None);
fail:
    Py_XDECREF(dinp);
    Py_XDECREF(dw);
    Py_XDECREF(db);
    return NULL;
}

/* ------------------------------------------------------------------ rotary + split */
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
    PyArrayObject *q = NULL, *k = NULL, *v = NULL, *cos_t, *sin_t;
    npy_intp want_qkv[5] = {GZPY_ANY, GZPY_ANY, GZPY_ANY, 3, GZPY_ANY};
    PyArrayObject *qkv = f32_in(qkv_o, "qkv", 5, want_qkv, "[B, T, NH, 3, HS]");
    if (!qkv) return NULL;
    npy_intp B = PyArray_DIM(qkv, 0), T = PyArray_DIM(qkv, 1), NH = PyArray_DIM(qkv, 2), HS = PyArray_DIM(qkv, 4);
    PyArrayObject *pos = i32_in(pos_o, "pos", 2, PyArray_DIMS(qkv), "[B, T]");
    int rot;
    if (!pos || check_rotary_tables(pos, &cos_t, &sin_t, cos_o, sin_o, HS, &rot) < 0) return NULL;
    DIMS_FIT(B, T, NH, HS, B * T * NH * 3 * HS);
    NEW_F32(q, 4, B, NH, T, HS);
    NEW_F32(k, 4, B, NH, T, HS);
    NEW_F32(v, 4, B, NH, T, HS);
    BACKEND_CALL(cpu()->rotary_split_forward(GZPY_F32(q), GZPY_F32(k), GZPY_F32(v), GZPY_F32(qkv), GZPY_I32(pos),
                                             GZPY_F32(cos_t), GZPY_F32(sin_t), (int)B, (int)T, (int)NH, (int)HS,
                                             rot));
    return Py_BuildValue("(NNN)", q, k, v);
fail:
    Py_XDECREF(q);
    Py_XDECREF(k);
    Py_XDECREF(v);
    return NULL;
}

static PyObject *rotary_split_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dq", "dk", "dv", "pos", "cos", "sin", NULL};
    PyObject *dq_o, *dk_o, *dv_o, *pos_o, *cos_o, *sin_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO:rotary_split_backward", kwlist, &dq_o, &dk_o, &dv_o,
                                     &pos_o, &cos_o, &sin_o))
        return NULL;
    PyArrayObject *dqkv = NULL, *cos_t, *sin_t;
    PyArrayObject *dq = f32_in(dq_o, "dq", 4, NULL, "[B, NH, T, HS]");
    PyArrayObject *dk = dq ? f32_in(dk_o, "dk", 4, PyArray_DIMS(dq), "[B, NH, T, HS]") : NULL;
    PyArrayObject *dv = dk ? f32_in(dv_o, "dv", 4, PyArray_DIMS(dq), "[B, NH, T, HS]") : NULL;
    if (!dv) return NULL;
    npy_intp B = PyArray_DIM(dq, 0), NH = PyArray_DIM(dq, 1), T = PyArray_DIM(dq, 2), HS = PyArray_DIM(dq, 3);
    npy_intp want_pos[2] = {B, T};
    PyArrayObject *pos = i32_in(pos_o, "pos", 2, want_pos, "[B, T]");
    int rot;
    if (!pos || check_rotary_tables(pos, &cos_t, &sin_t, cos_o, sin_o, HS, &rot) < 0) return NULL;
    DIMS_FIT(B, T, NH, HS, B * T * NH * 3 * HS);
    NEW_F32(dqkv, 5, B, T, NH, 3, HS);
    BACKEND_CALL(cpu()->rotary_split_backward(GZPY_F32(dqkv), GZPY_F32(dq), GZPY_F32(dk), GZPY_F32(dv),
                                              GZPY_I32(pos), GZPY_F32(cos_t), GZPY_F32(sin_t), (int)B, (int)T,
                                              (int)NH, (int)HS, rot));
    return (PyObject *)dqkv;
fail:
    Py_XDECREF(dqkv);
    return NULL;
}

/* ------------------------------------------------------------------ attention */
static PyObject *attention_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"q", "k", "v", NULL};
    PyObject *q_o, *k_o, *v_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:attention_forward", kwlist, &q_o, &k_o, &v_o)) return NULL;
    PyArrayObject *out = NULL, *att = NULL;
    PyArrayObject *q = f32_in(q_o, "q", 4, NULL, "[B, NH, T, HS]");
    PyArrayObject *k = q ? f32_in(k_o, "k", 4, PyArray_DIMS(q), "[B, NH, T, HS]") : NULL;
    PyArrayObject *v = k ? f32_in(v_o, "v", 4, PyArray_DIMS(q), "[B, NH, T, HS]") : NULL;
    if (!v) return NULL;
    npy_intp B = PyArray_DIM(q, 0), NH = PyArray_DIM(q, 1), T = PyArray_DIM(q, 2), HS = PyArray_DIM(q, 3);
    DIMS_FIT(B, NH, T, HS, NH * HS);
    NEW_F32(out, 3, B, T, NH * HS);
    NEW_F32(att, 4, B, NH, T, T);
    BACKEND_CALL(cpu()->attention_forward(GZPY_F32(out), GZPY_F32(att), GZPY_F32(q), GZPY_F32(k), GZPY_F32(v),
                                          (int)B, (int)T, (int)NH, (int)HS));
    return Py_BuildValue("(NN)", out, att);
fail:
    Py_XDECREF(out);
    Py_XDECREF(att);
    return NULL;
}

static PyObject *attention_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "att", "q", "k", "v", NULL};
    PyObject *dout_o, *att_o, *q_o, *k_o, *v_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:attention_backward", kwlist, &dout_o, &att_o, &q_o, &k_o,
                                     &v_o))
        return NULL;
    PyArrayObject *dq = NULL, *dk = NULL, *dv = NULL, *scratch = NULL;
    PyArrayObject *q = f32_in(q_o, "q", 4, NULL, "[B, NH, T, HS]");
    PyArrayObject *k = q ? f32_in(k_o, "k", 4, PyArray_DIMS(q), "[B, NH, T, HS]") : NULL;
    PyArrayObject *v = k ? f32_in(v_o, "v", 4, PyArray_DIMS(q), "[B, NH, T, HS]") : NULL;
    if (!v) return NULL;
    npy_intp B = PyArray_DIM(q, 0), NH = PyArray_DIM(q, 1), T = PyArray_DIM(q, 2), HS = PyArray_DIM(q, 3);
    npy_intp want_att[4] = {B, NH, T, T}, want_dout[3] = {B, T, NH * HS};
    PyArrayObject *att = f32_in(att_o, "att", 4, want_att, "[B, NH, T, T]");
    PyArrayObject *dout = att ? f32_in(dout_o, "dout", 3, want_dout, "[B, T, NH*HS]") : NULL;
    if (!dout) return NULL;
    DIMS_FIT(B, NH, T, HS, NH * HS);
    NEW_F32(dq, 4, B, NH, T, HS);
    NEW_F32(dk, 4, B, NH, T, HS);
    NEW_F32(dv, 4, B, NH, T, HS);
    NEW_F32(scratch, 4, B, NH, T, T); /* d(att) / d(pre-softmax scores) */
    BACKEND_CALL(cpu()->attention_backward(GZPY_F32(dq), GZPY_F32(dk), GZPY_F32(dv), GZPY_F32(scratch),
                                           GZPY_F32(dout), GZPY_F32(att), GZPY_F32(q), GZPY_F32(k), GZPY_F32(v),
                                           (int)B, (int)T, (int)NH, (int)HS));
    Py_DECREF(scratch);
    return Py_BuildValue("(NNN)", dq, dk, dv);
fail:
    Py_XDECREF(dq);
    Py_XDECREF(dk);
    Py_XDECREF(dv);
    Py_XDECREF(scratch);
    return NULL;
}

/* ------------------------------------------------------------------ gelu */
/* Elementwise ops take any shape. */
static PyArrayObject *any_shape_f32(PyObject *obj, const char *name) {
    int ndim = PyArray_Check(obj) ? PyArray_NDIM((PyArrayObject *)obj) : 1;
    return f32_in(obj, name, ndim, NULL, "(any shape)");
}

static PyObject *gelu_forward(PyObject *mod, PyObject *inp_o) {
    (void)mod;
    PyArrayObject *out = NULL;
    PyArrayObject *inp = any_shape_f32(inp_o, "inp");
    if (!inp) return NULL;
    out = (PyArrayObject *)PyArray_ZEROS(PyArray_NDIM(inp), PyArray_DIMS(inp), NPY_FLOAT32, 0);
    if (!out) return NULL;
    BACKEND_CALL(cpu()->gelu_forward(GZPY_F32(out), GZPY_F32(inp), (int64_t)PyArray_SIZE(inp)));
    return (PyObject *)out;
fail:
    Py_XDECREF(out);
    return NULL;
}

static PyObject *gelu_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "inp", NULL};
    PyObject *dout_o, *inp_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:gelu_backward", kwlist, &dout_o, &inp_o)) return NULL;
    PyArrayObject *dinp = NULL;
    PyArrayObject *inp = any_shape_f32(inp_o, "inp");
    if (!inp) return NULL;
    PyArrayObject *dout = f32_in(dout_o, "dout", PyArray_NDIM(inp), PyArray_DIMS(inp), "(the shape of inp)");
    if (!dout) return NULL;
    dinp = (PyArrayObject *)PyArray_ZEROS(PyArray_NDIM(inp), PyArray_DIMS(inp), NPY_FLOAT32, 0);
    if (!dinp) return NULL;
    BACKEND_CALL(cpu()->gelu_backward(GZPY_F32(dinp), GZPY_F32(dout), GZPY_F32(inp), (int64_t)PyArray_SIZE(inp)));
    return (PyObject *)dinp;
fail:
    Py_XDECREF(dinp);
    return NULL;
}

/* ------------------------------------------------------------------ cross-entropy */
static PyObject *cross_entropy_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"logits", "targets", NULL};
    PyObject *logits_o, *targets_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:cross_entropy_forward", kwlist, &logits_o, &targets_o))
        return NULL;
    PyArrayObject *lse = NULL;
    PyArrayObject *logits = f32_in(logits_o, "logits", 2, NULL, "[N, V]");
    if (!logits) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    PyArrayObject *targets = i32_in(targets_o, "targets", 1, &N, "[N]");
    if (!targets) return NULL;
    DIMS_FIT(V);
    if (gzpy_check_ids(targets, "targets", (int)V, 1, "vocabulary") < 0) return NULL;
    NEW_F32(lse, 1, N);
    double loss_sum = 0.0;
    int64_t count = 0;
    BACKEND_CALL(cpu()->cross_entropy_forward(GZPY_F32(lse), GZPY_F32(logits), GZPY_I32(targets), (int64_t)N,
                                              (int)V, &loss_sum, &count));
    return Py_BuildValue("(NdL)", lse, loss_sum, (long long)count);
fail:
    Py_XDECREF(lse);
    return NULL;
}

static PyObject *cross_entropy_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"logits", "lse", "targets", "scale", NULL};
    PyObject *logits_o, *lse_o, *targets_o, *scale_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:cross_entropy_backward", kwlist, &logits_o, &lse_o,
                                     &targets_o, &scale_o))
        return NULL;
    PyArrayObject *dlogits = NULL;
    double scale = 1.0;
    PyArrayObject *logits = f32_in(logits_o, "logits", 2, NULL, "[N, V]");
    if (!logits) return NULL;
    npy_intp N = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    PyArrayObject *lse = f32_in(lse_o, "lse", 1, &N, "[N]");
    PyArrayObject *targets = lse ? i32_in(targets_o, "targets", 1, &N, "[N]") : NULL;
    if (!targets || (scale_o && gzpy_float_arg(scale_o, "scale", -1e30, 1e30, 0, &scale) < 0)) return NULL;
    DIMS_FIT(V);
    if (gzpy_check_ids(targets, "targets", (int)V, 1, "vocabulary") < 0) return NULL;
    NEW_F32(dlogits, 2, N, V);
    BACKEND_CALL(cpu()->cross_entropy_backward(GZPY_F32(dlogits), GZPY_F32(logits), GZPY_F32(lse),
                                               GZPY_I32(targets), (int64_t)N, (int)V, (float)scale));
    return (PyObject *)dlogits;
fail:
    Py_XDECREF(dlogits);
    return NULL;
}

/* ------------------------------------------------------------------ embedding */
static PyObject *embedding_forward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"tokens", "wte", NULL};
    PyObject *tokens_o, *wte_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:embedding_forward", kwlist, &tokens_o, &wte_o)) return NULL;
    PyArrayObject *out = NULL;
    PyArrayObject *tokens = i32_in(tokens_o, "tokens", 1, NULL, "[N]");
    PyArrayObject *wte = tokens ? f32_in(wte_o, "wte", 2, NULL, "[V, C]") : NULL;
    if (!wte) return NULL;
    npy_intp N = PyArray_DIM(tokens, 0), V = PyArray_DIM(wte, 0), C = PyArray_DIM(wte, 1);
    DIMS_FIT(V, C);
    if (gzpy_check_ids(tokens, "tokens", (int)V, 0, "vocabulary") < 0) return NULL;
    NEW_F32(out, 2, N, C);
    BACKEND_CALL(cpu()->embedding_forward(GZPY_F32(out), GZPY_I32(tokens), GZPY_F32(wte), (int64_t)N, (int)C));
    return (PyObject *)out;
fail:
    Py_XDECREF(out);
    return NULL;
}

static PyObject *embedding_backward(PyObject *mod, PyObject *args, PyObject *kwargs) {
    (void)mod;
    static char *kwlist[] = {"dout", "tokens", "vocab_size", NULL};
    PyObject *dout_o, *tokens_o, *vocab_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:embedding_backward", kwlist, &dout_o, &tokens_o, &vocab_o))
        return NULL;
    PyArrayObject *dwte = NULL;
    long long V;
    PyArrayObject *tokens = i32_in(tokens_o, "tokens", 1, NULL, "[N]");
    if (!tokens || gzpy_int_arg(vocab_o, "vocab_size", 1, INT_MAX, &V) < 0) return NULL;
    npy_intp N = PyArray_DIM(tokens, 0);
    npy_intp want_dout[2] = {N, GZPY_ANY};
    PyArrayObject *dout = f32_in(dout_o, "dout", 2, want_dout, "[N, C]");
    if (!dout) return NULL;
    npy_intp C = PyArray_DIM(dout, 1);
    DIMS_FIT(C);
    if (gzpy_check_ids(tokens, "tokens", (int)V, 0, "vocabulary") < 0) return NULL;
    NEW_F32(dwte, 2, (npy_intp)V, C);
    BACKEND_CALL(cpu()->embedding_backward(GZPY_F32(dwte), GZPY_F32(dout), GZPY_I32(tokens), (int64_t)N, (int)C));
    return (PyObject *)dwte;
fail:
    Py_XDECREF(dwte);
    return NULL;
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
