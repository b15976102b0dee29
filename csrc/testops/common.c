/* common.c — argument, output and call helpers of the test-only op module (testops.h). */
#include "testops.h"

PyArrayObject *gzt_f32_in(PyObject *obj, const char *name, int ndim, const npy_intp *want, const char *dims) {
    PyArrayObject *a = gzpy_array(obj, name, NPY_FLOAT32, ndim, want, dims);
    return a && gzpy_check_nonempty(a, name) == 0 ? a : NULL;
}

PyArrayObject *gzt_i32_in(PyObject *obj, const char *name, int ndim, const npy_intp *want, const char *dims) {
    PyArrayObject *a = gzpy_array(obj, name, NPY_INT32, ndim, want, dims);
    return a && gzpy_check_nonempty(a, name) == 0 ? a : NULL;
}

PyArrayObject *gzt_rows_in(PyObject *obj, const char *name, npy_intp *N, npy_intp *C) {
    PyArrayObject *a = gzt_f32_in(obj, name, 2, NULL, "[N, C]");
    if (a) *N = PyArray_DIM(a, 0), *C = PyArray_DIM(a, 1);
    return a;
}

PyArrayObject *gzt_elementwise_in(PyObject *obj, const char *name, PyArrayObject *like, const char *like_name) {
    if (like) {
        char dims[64];
        snprintf(dims, sizeof dims, "(the shape of %s)", like_name);
        return gzt_f32_in(obj, name, PyArray_NDIM(like), PyArray_DIMS(like), dims);
    }
    return gzt_f32_in(obj, name, PyArray_Check(obj) ? PyArray_NDIM((PyArrayObject *)obj) : 1, NULL, "(any shape)");
}

int gzt_dims_fit(const npy_intp *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (gzpy_check_int_dim(d[i], "a dimension") < 0) return -1;
    return 0;
}

static int keep(op_outputs *o, PyArrayObject *a, int returned) {
    if (!a || o->n == MAX_OUTPUTS) {
        if (a) {
            Py_DECREF(a);
            PyErr_SetString(PyExc_RuntimeError, "internal: too many arrays for one op");
        }
        o->failed = 1;
        return -1;
    }
    o->a[o->n] = a;
    o->returned[o->n++] = returned;
    return 0;
}

float *gzt_add_output(op_outputs *o, int ndim, const npy_intp *shape, int returned) {
    PyArrayObject *a = o->failed ? NULL : gzpy_zeros_f32(ndim, shape);
    if (o->failed || keep(o, a, returned) < 0) return NULL;
    return GZPY_F32(a);
}

float *gzt_skip_output(op_outputs *o) {
    if (o->n == MAX_OUTPUTS) {
        o->failed = 1;
        return NULL;
    }
    o->a[o->n] = NULL;
    o->returned[o->n++] = 1;
    return NULL;
}

PyArrayObject *gzt_ids_in(op_outputs *o, PyObject *obj, const char *name, int ndim, const npy_intp *want,
                          const char *dims, int hi, int allow_ignore, const char *range_name) {
    PyArrayObject *a = gzt_i32_in(obj, name, ndim, want, dims);
    PyArrayObject *copy = a ? (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER) : NULL;
    if (!copy || keep(o, copy, 0) < 0 || gzpy_check_ids(copy, name, hi, allow_ignore, range_name) < 0) {
        gzt_release_outputs(o);
        return NULL;
    }
    return copy;
}

PyObject *gzt_release_outputs(op_outputs *o) {
    for (int i = 0; i < o->n; i++) Py_XDECREF(o->a[i]);
    o->n = 0;
    o->failed = 1;
    return NULL;
}

int gzt_op_begin(op_outputs *o) {
    if (o->failed) {
        gzt_release_outputs(o);
        return -1;
    }
    o->saved = PyEval_SaveThread();
    return 0;
}

static void raise_status(gz_status s) {
    PyObject *type = s == GZ_ERR_VALUE ? PyExc_ValueError : s == GZ_ERR_NOMEM ? PyExc_MemoryError : PyExc_RuntimeError;
    PyErr_SetString(type, gz_last_error());
}

PyObject *gzt_op_end(op_outputs *o, gz_status s) {
    PyEval_RestoreThread(o->saved);
    if (s != GZ_OK) {
        raise_status(s);
        return gzt_release_outputs(o);
    }
    PyObject *ret[MAX_OUTPUTS];
    int k = 0;
    for (int i = 0; i < o->n; i++) {
        if (o->returned[i]) ret[k++] = o->a[i] ? (PyObject *)o->a[i] : Py_NewRef(Py_None);
        else Py_DECREF(o->a[i]);
    }
    o->n = 0;
    if (k == 1) return ret[0];
    PyObject *tuple = PyTuple_New(k);
    for (int i = 0; i < k; i++) {
        if (tuple) PyTuple_SET_ITEM(tuple, i, ret[i]); /* steals */
        else Py_DECREF(ret[i]);
    }
    return tuple;
}
