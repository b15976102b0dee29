/* testops.h — the test-only module _gozaru_testops: the CPU backend's kernels on NumPy arrays, one
 * Python function per backend.h operation, so tests can check each op (finite differences, reference
 * formulas) in isolation. Built only for the test suite (GOZARU_TEST_OPS=1, see setup.py); never
 * part of the gozaru package.
 *
 * Every input is checked like any other _core argument (dtype, shape, contiguity, id ranges, no
 * empty arrays); outputs are fresh zero-filled arrays, so the "accumulate" outputs of backend.h
 * (dw, db, dwte, layernorm dinp) come back as the plain gradient. Nothing numeric happens here.
 */
#ifndef GOZARU_TESTOPS_H
#define GOZARU_TESTOPS_H

#include "py/pycore.h"

#include <limits.h>

#include "cpu/cpu_ops.h"
#include "py/args.h"

/* A non-empty float32 / int32 input (borrowed: the caller's own array). */
PyArrayObject *gzt_f32_in(PyObject *obj, const char *name, int ndim, const npy_intp *want, const char *dims);
PyArrayObject *gzt_i32_in(PyObject *obj, const char *name, int ndim, const npy_intp *want, const char *dims);

/* A [N, C] float32 input (rows of C): *N and *C its sizes. */
PyArrayObject *gzt_rows_in(PyObject *obj, const char *name, npy_intp *N, npy_intp *C);
/* An elementwise op's float32 input: any shape (like NULL), else the shape of like, named like_name. */
PyArrayObject *gzt_elementwise_in(PyObject *obj, const char *name, PyArrayObject *like, const char *like_name);

/* Sizes the backend takes as int must fit one. */
int gzt_dims_fit(const npy_intp *d, size_t n);
#define DIMS_FIT(...) \
    gzt_dims_fit((const npy_intp[]){__VA_ARGS__}, sizeof((const npy_intp[]){__VA_ARGS__}) / sizeof(npy_intp))

/* The fresh arrays one op writes into (and private copies of its id inputs), and the call that fills
 * them. The op's result is its returned outputs in order (one alone, several as a tuple, a skipped one
 * as None); every array is released when an allocation or the backend call fails, so ops need no
 * cleanup code of their own. */
#define MAX_OUTPUTS 6
typedef struct {
    int n, failed;
    PyArrayObject *a[MAX_OUTPUTS]; /* NULL: a skipped output, returned as None */
    int returned[MAX_OUTPUTS];     /* 0: scratch or an id copy, dropped after the call */
    PyThreadState *saved;
} op_outputs;

float *gzt_add_output(op_outputs *o, int ndim, const npy_intp *shape, int returned);
#define OUT_F32(o, ndim, ...) gzt_add_output(o, ndim, (const npy_intp[]){__VA_ARGS__}, 1)
#define OUT_LIKE(o, a) gzt_add_output(o, PyArray_NDIM(a), PyArray_DIMS(a), 1)
#define SCRATCH_F32(o, ndim, ...) gzt_add_output(o, ndim, (const npy_intp[]){__VA_ARGS__}, 0)
/* An output the caller did not ask for (returned as None; the backend gets NULL). */
float *gzt_skip_output(op_outputs *o);

/* An int32 id input, copied into an array owned by o before its range is checked: the kernel reads
 * the checked copy with the GIL released, so another thread changing the caller's array cannot
 * slip an out-of-range id past the check. NULL with the exception set (o released) on failure. */
PyArrayObject *gzt_ids_in(op_outputs *o, PyObject *obj, const char *name, int ndim, const npy_intp *want,
                          const char *dims, int hi, int allow_ignore, const char *range_name);

PyObject *gzt_release_outputs(op_outputs *o);
/* Releases the GIL for the backend call; -1 (outputs released) when an allocation failed. */
int gzt_op_begin(op_outputs *o);
/* Takes the GIL back; the op's result, or NULL with the exception set and the outputs released. */
PyObject *gzt_op_end(op_outputs *o, gz_status s);
/* The backend call between the two: the op's result (NULL, call not made, when an allocation failed). */
#define GZT_RUN(o, call) (gzt_op_begin(o) < 0 ? NULL : gzt_op_end(o, (call)))

/* Every op's signature (METH_VARARGS | METH_KEYWORDS; the module object is not used). */
#define GZT_OP(name) PyObject *gzt_##name(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwargs)

/* ops_dense.c */
GZT_OP(layernorm_forward);
GZT_OP(layernorm_backward);
GZT_OP(matmul_forward);
GZT_OP(matmul_backward);
GZT_OP(gelu_forward);
GZT_OP(gelu_backward);
/* ops_llama.c */
GZT_OP(rmsnorm_forward);
GZT_OP(rmsnorm_backward);
GZT_OP(swiglu_forward);
GZT_OP(swiglu_backward);
/* ops_attention.c */
GZT_OP(rotary_split_forward);
GZT_OP(rotary_split_backward);
GZT_OP(attention_forward);
GZT_OP(attention_backward);
/* ops_tokens.c */
GZT_OP(cross_entropy_forward);
GZT_OP(cross_entropy_backward);
GZT_OP(embedding_forward);
GZT_OP(embedding_backward);

#endif
