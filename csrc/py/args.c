/* args.c — the boundary checks declared in args.h. */
#include "args.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* "(2, 5)" style shape text for messages. */
static void format_shape(char *buf, size_t cap, int ndim, const npy_intp *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "(");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) n += (size_t)snprintf(buf + n, cap - n, ndim == 1 ? ",)" : ")");
}

static const char *dtype_name(int typenum) {
    switch (typenum) {
    case NPY_FLOAT32: return "float32";
    case NPY_FLOAT64: return "float64";
    case NPY_INT32: return "int32";
    case NPY_INT64: return "int64";
    default: return "the documented dtype";
    }
}

PyArrayObject *gzpy_array(PyObject *obj, const char *name, int typenum, int ndim, const npy_intp *want,
                          const char *dims) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray of dtype %s %s, got %.100s", name,
                     dtype_name(typenum), dims, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    PyArray_Descr *d = PyArray_DESCR(a);
    if (!PyArray_EquivTypenums(PyArray_TYPE(a), typenum) || !PyArray_ISNOTSWAPPED(a)) {
        PyObject *got = PyObject_Str((PyObject *)d);
        if (!got) return NULL;
        PyErr_Format(PyExc_TypeError, "%s must have dtype %s (native byte order), got %U", name,
                     dtype_name(typenum), got);
        Py_DECREF(got);
        return NULL;
    }
    char shape_text[GZPY_SHAPE_TEXT];
    format_shape(shape_text, sizeof shape_text, PyArray_NDIM(a), PyArray_DIMS(a));
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be a %d-D array %s, got shape %s", name, ndim, dims, shape_text);
        return NULL;
    }
    if (want) {
        for (int i = 0; i < ndim; i++) {
            if (want[i] != GZPY_ANY && want[i] != PyArray_DIM(a, i)) {
                char want_text[GZPY_SHAPE_TEXT];
                npy_intp w[NPY_MAXDIMS];
                for (int j = 0; j < ndim; j++) w[j] = want[j] == GZPY_ANY ? PyArray_DIM(a, j) : want[j];
                format_shape(want_text, sizeof want_text, ndim, w);
                PyErr_Format(PyExc_ValueError, "%s must have shape %s %s, got %s", name, want_text, dims,
                             shape_text);
                return NULL;
            }
        }
    }
    if (!PyArray_IS_C_CONTIGUOUS(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be C-contiguous (got a strided view of shape %s; pass np.ascontiguousarray(%s))",
                     name, shape_text, name);
        return NULL;
    }
    if (!PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s must be aligned for its dtype (pass a copy)", name);
        return NULL;
    }
    return a;
}

int gzpy_check_nonempty(PyArrayObject *a, const char *name) {
    if (PyArray_SIZE(a) > 0) return 0;
    char shape_text[GZPY_SHAPE_TEXT];
    format_shape(shape_text, sizeof shape_text, PyArray_NDIM(a), PyArray_DIMS(a));
    PyErr_Format(PyExc_ValueError, "%s is empty (shape %s): a zero-size batch cannot be processed", name,
                 shape_text);
    return -1;
}

int gzpy_check_int_dim(npy_intp size, const char *what) {
    if (size >= 0 && size <= INT_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s = %lld does not fit a C int", what, (long long)size);
    return -1;
}

int gzpy_check_ids(PyArrayObject *a, const char *name, int hi, int allow_ignore, const char *range_name) {
    const int32_t *p = GZPY_I32(a);
    npy_intp n = PyArray_SIZE(a);
    for (npy_intp i = 0; i < n; i++) {
        int32_t v = p[i];
        if ((v >= 0 && v < hi) || (allow_ignore && v == GZ_IGNORE_INDEX)) continue;
        /* name the position with one index per axis */
        char pos[GZPY_SHAPE_TEXT];
        size_t len = 0;
        npy_intp rest = i;
        npy_intp idx[NPY_MAXDIMS];
        for (int d = PyArray_NDIM(a) - 1; d >= 0; d--) {
            idx[d] = rest % PyArray_DIM(a, d);
            rest /= PyArray_DIM(a, d);
        }
        for (int d = 0; d < PyArray_NDIM(a) && len < sizeof pos; d++)
            len += (size_t)snprintf(pos + len, sizeof pos - len, "%s%lld", d ? ", " : "", (long long)idx[d]);
        if (allow_ignore)
            PyErr_Format(PyExc_ValueError, "%s[%s] = %d is outside the %s [0, %d) (and is not the ignore index %d)",
                         name, pos, (int)v, range_name, hi, GZ_IGNORE_INDEX);
        else
            PyErr_Format(PyExc_ValueError, "%s[%s] = %d is outside the %s [0, %d)", name, pos, (int)v, range_name, hi);
        return -1;
    }
    return 0;
}

const char *gzpy_str_arg(PyObject *obj, const char *name, const char *hint) {
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str%s, got %.100s", name, hint, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8(obj);
}

int gzpy_int_arg(PyObject *obj, const char *name, long long lo, long long hi, long long *out) {
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, got %.100s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *as_int = PyNumber_Index(obj);
    if (!as_int) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(as_int, &overflow);
    Py_DECREF(as_int);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be in [%lld, %lld], got %S", name, lo, hi, obj);
        return -1;
    }
    *out = v;
    return 0;
}

int gzpy_u64_arg(PyObject *obj, const char *name, uint64_t *out) {
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, got %.100s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *as_int = PyNumber_Index(obj);
    if (!as_int) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(as_int);
    Py_DECREF(as_int);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be in [0, 2**64), got %S", name, obj);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int gzpy_real_arg(PyObject *obj, const char *name, double *out) {
    double v = PyBool_Check(obj) ? 0.0 : PyFloat_AsDouble(obj);
    if (PyBool_Check(obj) || (v == -1.0 && PyErr_Occurred())) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a real number, got %.100s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = v;
    return 0;
}

int gzpy_float_arg(PyObject *obj, const char *name, double lo, double hi, int hi_open, double *out) {
    double v;
    if (gzpy_real_arg(obj, name, &v) < 0) return -1;
    if (!isfinite(v) || v < lo || v > hi || (hi_open && v == hi)) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s must be a finite number in [%g, %g%c, got %g", name, lo, hi,
                 hi_open ? ')' : ']', v);
        PyErr_SetString(PyExc_ValueError, msg);
        return -1;
    }
    *out = v;
    return 0;
}

PyObject *gzpy_float32_obj(float x) {
    if (!isfinite(x)) return PyFloat_FromDouble((double)x);
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) { /* 9 significant digits always round-trip a float */
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    return PyFloat_FromDouble(strtod(buf, NULL));
}

PyArrayObject *gzpy_zeros_f32(int ndim, const npy_intp *shape) {
    return (PyArrayObject *)PyArray_ZEROS(ndim, (npy_intp *)shape, NPY_FLOAT32, 0);
}

PyArrayObject *gzpy_zeros_i32(int ndim, const npy_intp *shape) {
    return (PyArrayObject *)PyArray_ZEROS(ndim, (npy_intp *)shape, NPY_INT32, 0);
}
