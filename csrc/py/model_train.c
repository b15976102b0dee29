/* model_train.c — gozaru._core.Model's forward, backward and gradients (the GIL released around the core). */
#include "pycore.h"

#include <math.h>
#include <string.h>

#include "args.h"
#include "call.h"

/* ------------------------------------------------------------------ forward / backward */
/* Validates a [B, T] int32 id array and returns a private copy whose ids are in range, so another
 * thread changing the caller's array while the GIL is released cannot put a bad id into the core. */
static PyArrayObject *checked_ids_copy(PyObject *obj, const char *name, const npy_intp *want, int vocab,
                                       int allow_ignore) {
    PyArrayObject *a = gzpy_array(obj, name, NPY_INT32, 2, want, "[B, T]");
    if (!a || gzpy_check_nonempty(a, name) < 0) return NULL;
    PyArrayObject *copy = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER);
    if (!copy) return NULL;
    if (gzpy_check_ids(copy, name, vocab, allow_ignore, "vocabulary") < 0) {
        Py_DECREF(copy);
        return NULL;
    }
    return copy;
}

PyObject *gzpy_model_forward(GzModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"tokens", "targets", "return_logits", "keep_activations", "doc_ids", NULL};
    PyObject *tokens_obj, *targets_obj = Py_None, *docs_obj = Py_None;
    int return_logits = 0, keep = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OppO:forward", kwlist, &tokens_obj, &targets_obj,
                                     &return_logits, &keep, &docs_obj))
        return NULL;
    const gz_config *cfg = gz_model_config(self->model);
    PyArrayObject *tokens = NULL, *targets = NULL, *docs = NULL, *logits = NULL;
    PyObject *result = NULL;

    tokens = checked_ids_copy(tokens_obj, "tokens", NULL, cfg->vocab_size, 0);
    if (!tokens) goto done;
    npy_intp B = PyArray_DIM(tokens, 0), T = PyArray_DIM(tokens, 1);
    if (T > cfg->max_position_embeddings) {
        PyErr_Format(PyExc_ValueError, "tokens has %lld positions per row, more than max_position_embeddings = %d",
                     (long long)T, cfg->max_position_embeddings);
        goto done;
    }
    if (gzpy_check_int_dim(B, "batch size B") < 0 || gzpy_check_int_dim(B * T, "B * T") < 0) goto done;
    if (targets_obj != Py_None) {
        npy_intp want[2] = {B, T};
        targets = checked_ids_copy(targets_obj, "targets", want, cfg->vocab_size, 1);
        if (!targets) goto done;
    }
    if (docs_obj != Py_None) { /* a private copy too: the core checks the documents while the GIL is released */
        npy_intp want[2] = {B, T};
        PyArrayObject *a = gzpy_array(docs_obj, "doc_ids", NPY_INT32, 2, want, "[B, T]");
        if (!a || !(docs = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER))) goto done;
    }
    if (return_logits) {
        npy_intp dims[3] = {B, T, cfg->vocab_size};
        logits = gzpy_zeros_f32(3, dims);
        if (!logits) goto done;
    }
    float loss = NAN;
    int64_t counted = 0;
    gzpy_call c;
    if (gzpy_call_begin(&c, self, 0) < 0) goto done;
    gz_status s = (keep ? gz_model_forward_docs : gz_model_evaluate_docs)(
        self->model, GZPY_I32(tokens), targets ? GZPY_I32(targets) : NULL, docs ? GZPY_I32(docs) : NULL, (int)B,
        (int)T, logits ? GZPY_F32(logits) : NULL, targets ? &loss : NULL, targets ? &counted : NULL);
    if (gzpy_call_end(&c, s) < 0) goto done;
    PyObject *loss_obj = targets ? PyFloat_FromDouble(loss) : (Py_INCREF(Py_None), Py_None);
    if (!loss_obj) goto done;
    result = Py_BuildValue("(NLO)", loss_obj, (long long)counted, logits ? (PyObject *)logits : Py_None);
done:
    Py_XDECREF(tokens);
    Py_XDECREF(targets);
    Py_XDECREF(docs);
    Py_XDECREF(logits);
    return result;
}

PyObject *gzpy_model_backward(GzModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"loss_scale", NULL};
    PyObject *scale_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:backward", kwlist, &scale_obj)) return NULL;
    double scale = 1.0;
    if (scale_obj && gzpy_float_arg(scale_obj, "loss_scale", -1e30, 1e30, 0, &scale) < 0) return NULL;
    gzpy_call c;
    if (gzpy_call_begin(&c, self, 0) < 0) return NULL;
    gz_status s = gz_model_backward(self->model, (float)scale);
    if (gzpy_call_end(&c, s) < 0) return NULL;
    Py_RETURN_NONE;
}

PyObject *gzpy_model_zero_grad(GzModelObject *self, PyObject *unused) {
    (void)unused;
    return gzpy_run_model_call(self, gz_model_zero_grad);
}

/* A fresh float32 array of shape dims filled by the core: tensor idx's gradient, or (idx < 0) the
 * per-tensor gradient norms. */
static PyObject *grad_array(GzModelObject *self, int idx, int ndim, const npy_intp *dims) {
    PyArrayObject *out = gzpy_zeros_f32(ndim, dims);
    if (!out) return NULL;
    gzpy_call c;
    if (gzpy_call_begin(&c, self, 0) == 0) {
        gz_status s = idx < 0 ? gz_model_grad_norms(self->model, GZPY_F32(out))
                              : gz_model_grad(self->model, idx, GZPY_F32(out));
        if (gzpy_call_end(&c, s) == 0) return (PyObject *)out;
    }
    Py_DECREF(out);
    return NULL;
}

PyObject *gzpy_model_grad(GzModelObject *self, PyObject *name) {
    int idx = gzpy_tensor_index(self, name);
    gz_tensor_info info;
    if (idx < 0) return NULL;
    gz_status st = gz_model_tensor(self->model, idx, &info);
    if (st != GZ_OK) return gzpy_raise_status(st);
    if (!gz_model_is_trainable(self->model, idx)) {
        PyErr_Format(PyExc_ValueError, "%R is frozen and has no gradient (set_trainable(%R, True) first)", name,
                     name);
        return NULL;
    }
    npy_intp dims[2] = {(npy_intp)info.shape[0], (npy_intp)info.shape[1]};
    return grad_array(self, idx, info.ndim, dims);
}

PyObject *gzpy_model_grad_norms(GzModelObject *self, PyObject *unused) {
    (void)unused;
    npy_intp n = gz_model_num_tensors(self->model);
    return grad_array(self, -1, 1, &n);
}

