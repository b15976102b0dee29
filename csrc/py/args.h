/* args.h — argument checks shared by every _core entry point.
 *
 * One implementation of the boundary rules, so every function reports a problem the same way and
 * the C core never sees a bad pointer or shape:
 *   not an ndarray, wrong dtype                     -> TypeError  naming the argument and dtype
 *   wrong ndim or shape, not C-contiguous/aligned   -> ValueError naming the argument
 *   empty arrays, ids out of range, bad numbers     -> ValueError naming the argument (and position)
 */
#ifndef GOZARU_PY_ARGS_H
#define GOZARU_PY_ARGS_H

#include "pycore.h"

#define GZPY_ANY ((npy_intp)-1) /* "any size" in a wanted shape */

/* obj as a C-contiguous, aligned, native-byte-order ndarray of dtype typenum with `ndim` dims whose
 * sizes match `want` (GZPY_ANY = any; want may be NULL). `dims` names the axes for messages, e.g.
 * "[B, T]". Returns a borrowed pointer, or NULL with the exception set. No conversion is done. */
PyArrayObject *gzpy_array(PyObject *obj, const char *name, int typenum, int ndim, const npy_intp *want,
                          const char *dims);

/* ValueError when the array has no elements ("empty batch"). */
int gzpy_check_nonempty(PyArrayObject *a, const char *name);

/* ValueError when size does not fit a C int (the core's dimension type). */
int gzpy_check_int_dim(npy_intp size, const char *what);

/* Every value must lie in [0, hi) (or equal -100 when allow_ignore). Messages name the position,
 * e.g. "tokens[1, 7] = 9001 is outside the vocabulary [0, 8000)". a is int32 and C-contiguous. */
int gzpy_check_ids(PyArrayObject *a, const char *name, int hi, int allow_ignore, const char *range_name);

/* The UTF-8 text of a str (TypeError "<name> must be a str<hint>, got <type>" otherwise). */
const char *gzpy_str_arg(PyObject *obj, const char *name, const char *hint);

/* A Python int in [lo, hi] (TypeError for non-integers, bools included; ValueError out of range). */
int gzpy_int_arg(PyObject *obj, const char *name, long long lo, long long hi, long long *out);
/* A non-negative Python int that fits uint64 (seeds). */
int gzpy_u64_arg(PyObject *obj, const char *name, uint64_t *out);
#define GZPY_SHAPE_TEXT 160 /* bytes of a shape or index "(d0, d1, ...)" in a message (cut when longer) */

/* Any real number, unchecked: for values the core checks itself (TypeError for non-numbers and bools). */
int gzpy_real_arg(PyObject *obj, const char *name, double *out);
/* A finite real number in [lo, hi] or [lo, hi) when hi_open (TypeError for non-numbers and bools;
 * ValueError for NaN, inf or out of range). */
int gzpy_float_arg(PyObject *obj, const char *name, double lo, double hi, int hi_open, double *out);

/* A float32 value as the Python float with the shortest decimal form that rounds back to it
 * (1e-05f -> 1e-05, not 9.999999747378752e-06), so configs read back equal what was written. */
PyObject *gzpy_float32_obj(float x);

/* New zero-filled float32 / int32 arrays (MemoryError on failure). */
PyArrayObject *gzpy_zeros_f32(int ndim, const npy_intp *shape);
PyArrayObject *gzpy_zeros_i32(int ndim, const npy_intp *shape);

#define GZPY_F32(a) ((float *)PyArray_DATA(a))
#define GZPY_I32(a) ((int32_t *)PyArray_DATA(a))

#endif
