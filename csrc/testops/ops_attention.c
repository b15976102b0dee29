/* ops_attention.c — rotary split and causal attention of the test-only op module (testops.h). */
#include "testops.h"

/* ------------------------------------------------------------------ rotary + split */
/* q, k, v (or their gradients): three [B, NH, T, HS] arrays of one shape. */
static int qkv_in(PyObject *q_o, PyObject *k_o, PyObject *v_o, const char *names[3], PyArrayObject *out[3]) {
    out[0] = gzt_f32_in(q_o, names[0], 4, NULL, "[B, NH, T, HS]");
    out[1] = out[0] ? gzt_f32_in(k_o, names[1], 4, PyArray_DIMS(out[0]), "[B, NH, T, HS]") : NULL;
    out[2] = out[1] ? gzt_f32_in(v_o, names[2], 4, PyArray_DIMS(out[0]), "[B, NH, T, HS]") : NULL;
    return out[2] ? 0 : -1;
}

/* The [P, rot/2] cos/sin tables; pos ids are checked against P (*P) by the caller. */
static int check_rotary_tables(PyArrayObject **cos_t, PyArrayObject **sin_t, PyObject *cos_o, PyObject *sin_o,
                               npy_intp HS, int *rot, int *P_out) {
    *cos_t = gzt_f32_in(cos_o, "cos", 2, NULL, "[max_pos, rot/2]");
    if (!*cos_t) return -1;
    *sin_t = gzt_f32_in(sin_o, "sin", 2, PyArray_DIMS(*cos_t), "[max_pos, rot/2]");
    if (!*sin_t) return -1;
    npy_intp P = PyArray_DIM(*cos_t, 0), half = PyArray_DIM(*cos_t, 1);
    if (2 * half > HS) {
        PyErr_Format(PyExc_ValueError, "cos/sin have rot/2 = %lld columns, but rot = %lld exceeds the head size %lld",
                     (long long)half, (long long)(2 * half), (long long)HS);
        return -1;
    }
    if (gzpy_check_int_dim(P, "max_pos") < 0) return -1;
    *P_out = (int)P;
    *rot = (int)(2 * half);
    return 0;
}

GZT_OP(rotary_split_forward) {
    static char *kwlist[] = {"qkv", "pos", "cos", "sin", NULL};
    PyObject *qkv_o, *pos_o, *cos_o, *sin_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:rotary_split_forward", kwlist, &qkv_o, &pos_o, &cos_o,
                                     &sin_o))
        return NULL;
    PyArrayObject *cos_t, *sin_t;
    npy_intp want_qkv[5] = {GZPY_ANY, GZPY_ANY, GZPY_ANY, 3, GZPY_ANY};
    PyArrayObject *qkv = gzt_f32_in(qkv_o, "qkv", 5, want_qkv, "[B, T, NH, 3, HS]");
    if (!qkv) return NULL;
    npy_intp B = PyArray_DIM(qkv, 0), T = PyArray_DIM(qkv, 1), NH = PyArray_DIM(qkv, 2), HS = PyArray_DIM(qkv, 4);
    int rot, P;
    if (check_rotary_tables(&cos_t, &sin_t, cos_o, sin_o, HS, &rot, &P) < 0) return NULL;
    if (DIMS_FIT(B, T, NH, HS, B * T * NH * 3 * HS) < 0) return NULL;
    op_outputs o = {0};
    PyArrayObject *pos = gzt_ids_in(&o, pos_o, "pos", 2, PyArray_DIMS(qkv), "[B, T]", P, 0, "table rows");
    if (!pos) return NULL;
    float *q = OUT_F32(&o, 4, B, NH, T, HS), *k = OUT_F32(&o, 4, B, NH, T, HS), *v = OUT_F32(&o, 4, B, NH, T, HS);
    return GZT_RUN(&o, gz_cpu_rotary_split_forward(q, k, v, GZPY_F32(qkv), GZPY_I32(pos), GZPY_F32(cos_t),
                                                   GZPY_F32(sin_t), (int)B, (int)T, (int)NH, (int)HS, rot));
}

GZT_OP(rotary_split_backward) {
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
    int rot, P;
    if (check_rotary_tables(&cos_t, &sin_t, cos_o, sin_o, HS, &rot, &P) < 0) return NULL;
    if (DIMS_FIT(B, T, NH, HS, B * T * NH * 3 * HS) < 0) return NULL;
    op_outputs o = {0};
    PyArrayObject *pos = gzt_ids_in(&o, pos_o, "pos", 2, want_pos, "[B, T]", P, 0, "table rows");
    if (!pos) return NULL;
    float *dqkv = OUT_F32(&o, 5, B, T, NH, 3, HS);
    return GZT_RUN(&o, gz_cpu_rotary_split_backward(dqkv, GZPY_F32(in[0]), GZPY_F32(in[1]), GZPY_F32(in[2]),
                                                    GZPY_I32(pos), GZPY_F32(cos_t), GZPY_F32(sin_t), (int)B, (int)T,
                                                    (int)NH, (int)HS, rot));
}

/* ------------------------------------------------------------------ attention */
/* q [B, NH, T, HS]; k, v [B, NKV, T, HS] with NKV dividing NH (grouped-query attention when fewer). */
static int attention_in(PyObject *q_o, PyObject *k_o, PyObject *v_o, PyArrayObject *in[3], npy_intp dims[5]) {
    in[0] = gzt_f32_in(q_o, "q", 4, NULL, "[B, NH, T, HS]");
    if (!in[0]) return -1;
    npy_intp B = PyArray_DIM(in[0], 0), NH = PyArray_DIM(in[0], 1), T = PyArray_DIM(in[0], 2),
             HS = PyArray_DIM(in[0], 3);
    npy_intp want_k[4] = {B, GZPY_ANY, T, HS};
    in[1] = gzt_f32_in(k_o, "k", 4, want_k, "[B, NKV, T, HS]");
    in[2] = in[1] ? gzt_f32_in(v_o, "v", 4, PyArray_DIMS(in[1]), "[B, NKV, T, HS]") : NULL;
    if (!in[2]) return -1;
    npy_intp NKV = PyArray_DIM(in[1], 1);
    if (NKV < 1 || NH % NKV != 0) {
        PyErr_Format(PyExc_ValueError, "k, v have %lld heads, which does not divide the %lld query heads",
                     (long long)NKV, (long long)NH);
        return -1;
    }
    dims[0] = B, dims[1] = NH, dims[2] = T, dims[3] = HS, dims[4] = NKV;
    return DIMS_FIT(B, NH, T, HS, NH * HS);
}

/* The optional doc_start [B, T] of packed rows (backend.h): a checked copy in *out, NULL for None; -1 (o released)
 * when it is not a row's document starts (0 <= doc_start[t] <= t, each either t or the previous token's start). */
static int doc_start_in(op_outputs *o, PyObject *obj, npy_intp B, npy_intp T, const int32_t **out) {
    *out = NULL;
    if (obj == Py_None) return 0;
    npy_intp want[2] = {B, T};
    PyArrayObject *a = gzt_ids_in(o, obj, "doc_start", 2, want, "[B, T]", (int)T, 0, "row");
    if (!a) return -1;
    const int32_t *ds = GZPY_I32(a);
    for (npy_intp b = 0; b < B; b++)
        for (npy_intp t = 0; t < T; t++) {
            int32_t s = ds[b * T + t];
            if (s == t || (t > 0 && s == ds[b * T + t - 1])) continue;
            PyErr_Format(PyExc_ValueError, "doc_start[%lld, %lld] = %d is neither %lld nor the previous token's start",
                         (long long)b, (long long)t, (int)s, (long long)t);
            gzt_release_outputs(o);
            return -1;
        }
    *out = ds;
    return 0;
}

GZT_OP(attention_forward) {
    static char *kwlist[] = {"q", "k", "v", "doc_start", NULL};
    PyObject *q_o, *k_o, *v_o, *ds_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:attention_forward", kwlist, &q_o, &k_o, &v_o, &ds_o))
        return NULL;
    PyArrayObject *in[3];
    npy_intp d[5];
    if (attention_in(q_o, k_o, v_o, in, d) < 0) return NULL;
    npy_intp B = d[0], NH = d[1], T = d[2], HS = d[3], NKV = d[4];
    op_outputs o = {0};
    const int32_t *ds;
    if (doc_start_in(&o, ds_o, B, T, &ds) < 0) return NULL;
    float *out = OUT_F32(&o, 3, B, T, NH * HS), *lse = OUT_F32(&o, 3, B, NH, T);
    return GZT_RUN(&o, gz_cpu_attention_forward(out, lse, GZPY_F32(in[0]), GZPY_F32(in[1]), GZPY_F32(in[2]), ds,
                                                (int)B, (int)T, (int)NH, (int)NKV, (int)HS));
}

GZT_OP(attention_backward) {
    static char *kwlist[] = {"dout", "out", "lse", "q", "k", "v", "doc_start", NULL};
    PyObject *dout_o, *out_o, *lse_o, *q_o, *k_o, *v_o, *ds_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO|O:attention_backward", kwlist, &dout_o, &out_o, &lse_o,
                                     &q_o, &k_o, &v_o, &ds_o))
        return NULL;
    PyArrayObject *in[3];
    npy_intp d[5];
    if (attention_in(q_o, k_o, v_o, in, d) < 0) return NULL;
    npy_intp B = d[0], NH = d[1], T = d[2], HS = d[3], NKV = d[4];
    npy_intp want_lse[3] = {B, NH, T}, want_out[3] = {B, T, NH * HS};
    PyArrayObject *lse = gzt_f32_in(lse_o, "lse", 3, want_lse, "[B, NH, T]");
    PyArrayObject *out = lse ? gzt_f32_in(out_o, "out", 3, want_out, "[B, T, NH*HS]") : NULL;
    PyArrayObject *dout = out ? gzt_f32_in(dout_o, "dout", 3, want_out, "[B, T, NH*HS]") : NULL;
    if (!dout) return NULL;
    op_outputs o = {0};
    const int32_t *ds;
    if (doc_start_in(&o, ds_o, B, T, &ds) < 0) return NULL;
    float *dq = OUT_F32(&o, 4, B, NH, T, HS), *dk = OUT_F32(&o, 4, B, NKV, T, HS), *dv = OUT_F32(&o, 4, B, NKV, T, HS);
    float *scratch = SCRATCH_F32(&o, 3, B, NH, T); /* the backend interface's D = rowsum(dout * out) slot */
    return GZT_RUN(&o, gz_cpu_attention_backward(dq, dk, dv, scratch, GZPY_F32(dout), GZPY_F32(out), GZPY_F32(lse),
                                                 GZPY_F32(in[0]), GZPY_F32(in[1]), GZPY_F32(in[2]), ds, (int)B,
                                                 (int)T, (int)NH, (int)NKV, (int)HS));
}
