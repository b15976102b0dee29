/* generate_wrap.c — Model.generate: checks prompts, runs gz_generate with the GIL released and
 * Ctrl-C routed to the core's interrupt flag. */
#include "pycore.h"

#include <limits.h>

#include "args.h"
#include "call.h"

typedef struct {
    PyArrayObject *prompts, *lens; /* private copies: another thread cannot change them under us */
    int B, Tmax;
    gz_generate_config cfg;
    int return_logits;
} generate_args;

/* Row b uses its first lens[b] tokens: 1 <= lens[b] <= Tmax, ids in the vocabulary, and
 * len + max_new_tokens fits max_position_embeddings (the KV cache's positions). */
static int check_rows(const generate_args *a, const gz_config *mc) {
    const int32_t *p = GZPY_I32(a->prompts), *lens = GZPY_I32(a->lens);
    for (int b = 0; b < a->B; b++) {
        int len = lens[b];
        if (len < 1 || len > a->Tmax) {
            PyErr_Format(PyExc_ValueError, "lens[%d] = %d must be in [1, %d] (the prompts' width Tmax)", b, len,
                         a->Tmax);
            return -1;
        }
        long long reach = (long long)len + a->cfg.max_new_tokens;
        if (reach > mc->max_position_embeddings) {
            PyErr_Format(PyExc_ValueError,
                         "row %d: prompt length %d + max_new_tokens %d = %lld positions exceed "
                         "max_position_embeddings = %d",
                         b, len, a->cfg.max_new_tokens, reach, mc->max_position_embeddings);
            return -1;
        }
        for (int t = 0; t < len; t++) {
            int32_t id = p[(size_t)b * a->Tmax + t];
            if (id < 0 || id >= mc->vocab_size) {
                PyErr_Format(PyExc_ValueError, "prompts[%d, %d] = %d is outside the vocabulary [0, %d)", b, t, (int)id,
                             mc->vocab_size);
                return -1;
            }
        }
    }
    return 0;
}

static int parse_args(GzModelObject *self, PyObject *args, PyObject *kwargs, generate_args *a) {
    static char *kwlist[] = {"prompts", "lens", "max_new_tokens", "temperature", "top_k", "top_p", "seed",
                             "eos_token_id", "return_logits", NULL};
    PyObject *prompts_obj, *lens_obj, *max_new_obj, *temp_obj = NULL, *top_k_obj = NULL, *top_p_obj = NULL,
                                                     *seed_obj = NULL, *eos_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OOOOOp:generate", kwlist, &prompts_obj, &lens_obj,
                                     &max_new_obj, &temp_obj, &top_k_obj, &top_p_obj, &seed_obj, &eos_obj,
                                     &a->return_logits))
        return -1;
    const gz_config *mc = gz_model_config(self->model);
    gz_generate_config *c = &a->cfg;
    c->temperature = 0.0f;
    c->top_k = 0;
    c->top_p = 1.0f;
    c->seed = 0;
    c->eos_token_id = -1;
    long long v;
    double d;
    if (gzpy_int_arg(max_new_obj, "max_new_tokens", 0, mc->max_position_embeddings, &v) < 0) return -1;
    c->max_new_tokens = (int)v;
    if (temp_obj) {
        if (gzpy_float_arg(temp_obj, "temperature", 0.0, 1e30, 0, &d) < 0) return -1;
        c->temperature = (float)d;
    }
    if (top_k_obj) {
        if (gzpy_int_arg(top_k_obj, "top_k", 0, INT_MAX, &v) < 0) return -1;
        c->top_k = (int)v;
    }
    if (top_p_obj) {
        if (gzpy_float_arg(top_p_obj, "top_p", 0.0, 1.0, 0, &d) < 0) return -1;
        if (d <= 0.0) {
            PyErr_SetString(PyExc_ValueError, "top_p must be in (0, 1] (1 = off), got 0");
            return -1;
        }
        c->top_p = (float)d;
    }
    if (seed_obj && gzpy_u64_arg(seed_obj, "seed", &c->seed) < 0) return -1;
    if (eos_obj) {
        if (gzpy_int_arg(eos_obj, "eos_token_id", INT_MIN, mc->vocab_size - 1, &v) < 0) return -1;
        c->eos_token_id = v < 0 ? -1 : (int)v;
    }

    PyArrayObject *prompts = gzpy_array(prompts_obj, "prompts", NPY_INT32, 2, NULL, "[B, Tmax]");
    if (!prompts || gzpy_check_nonempty(prompts, "prompts") < 0) return -1;
    npy_intp B = PyArray_DIM(prompts, 0), Tmax = PyArray_DIM(prompts, 1);
    if (gzpy_check_int_dim(B, "B") < 0 || gzpy_check_int_dim(Tmax, "Tmax") < 0 ||
        gzpy_check_int_dim(B * Tmax, "B * Tmax") < 0)
        return -1;
    PyArrayObject *lens = gzpy_array(lens_obj, "lens", NPY_INT32, 1, &B, "[B]");
    if (!lens) return -1;
    a->B = (int)B;
    a->Tmax = (int)Tmax;
    a->prompts = (PyArrayObject *)PyArray_NewCopy(prompts, NPY_CORDER);
    a->lens = a->prompts ? (PyArrayObject *)PyArray_NewCopy(lens, NPY_CORDER) : NULL;
    if (!a->lens) return -1;
    return check_rows(a, mc);
}

PyObject *gzpy_model_generate(GzModelObject *self, PyObject *args, PyObject *kwargs) {
    generate_args a = {0};
    PyArrayObject *out = NULL, *out_lens = NULL, *logits = NULL;
    PyObject *result = NULL;
    if (parse_args(self, args, kwargs, &a) < 0) goto done;
    npy_intp out_dims[2] = {a.B, a.cfg.max_new_tokens};
    out = gzpy_zeros_i32(2, out_dims);
    out_lens = out ? gzpy_zeros_i32(1, out_dims) : NULL;
    if (!out_lens) goto done;
    if (a.return_logits) {
        npy_intp logit_dims[3] = {a.B, a.cfg.max_new_tokens, gz_model_config(self->model)->vocab_size};
        logits = (PyArrayObject *)PyArray_ZEROS(3, logit_dims, NPY_FLOAT32, 0);
        if (!logits) goto done;
    }
    if (a.cfg.max_new_tokens > 0) {
        gzpy_call c;
        if (gzpy_call_begin(&c, self, GZPY_CALL_INTERRUPTIBLE) < 0) goto done;
        gz_status s = gz_generate(self->model, GZPY_I32(a.prompts), GZPY_I32(a.lens), a.B, a.Tmax, &a.cfg,
                                  GZPY_I32(out), GZPY_I32(out_lens),
                                  logits ? (float *)PyArray_DATA(logits) : NULL);
        if (gzpy_call_end(&c, s) < 0) goto done;
    }
    result = logits ? Py_BuildValue("(OOO)", (PyObject *)out, (PyObject *)out_lens, (PyObject *)logits)
                    : Py_BuildValue("(OO)", (PyObject *)out, (PyObject *)out_lens);
done:
    Py_XDECREF(a.prompts);
    Py_XDECREF(a.lens);
    Py_XDECREF(out);
    Py_XDECREF(out_lens);
    Py_XDECREF(logits);
    return result;
}
