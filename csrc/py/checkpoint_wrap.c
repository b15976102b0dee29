/* checkpoint_wrap.c — thin wrappers over gz_checkpoint_*: argument checks, GIL release, Ctrl-C. */
#include "pycore.h"

#include "args.h"
#include "call.h"

/* None, or an AdamW bound to this model (the checkpoint pairs parameters with their moments). */
static int optimizer_arg(GzModelObject *self, PyObject *obj, gz_adamw **out) {
    *out = NULL;
    if (obj == Py_None) return 0;
    if (!PyObject_TypeCheck(obj, &GzAdamW_Type)) {
        PyErr_Format(PyExc_TypeError, "optimizer must be a gozaru._core.AdamW or None, got %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    GzAdamWObject *opt = (GzAdamWObject *)obj;
    if (opt->model != self) {
        PyErr_SetString(PyExc_ValueError, "optimizer belongs to another Model");
        return -1;
    }
    *out = opt->opt;
    return 0;
}

PyObject *gzpy_model_save_checkpoint(GzModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", "optimizer", "lr", "config_json", "step", "tokens_seen", "rng", "extra", NULL};
    PyObject *path = NULL, *opt_obj = Py_None, *lr_obj = NULL, *step_obj = NULL, *tokens_obj = NULL;
    const char *config_json = "";
    Py_buffer rng = {0}, extra = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|OOsOOy*y*:save_checkpoint", kwlist, PyUnicode_FSConverter,
                                     &path, &opt_obj, &lr_obj, &config_json, &step_obj, &tokens_obj, &rng, &extra))
        return NULL;
    gz_adamw *opt;
    double lr = 0.0;
    long long step = 0, tokens_seen = 0;
    if (optimizer_arg(self, opt_obj, &opt) < 0) goto done;
    if (lr_obj && gzpy_real_arg(lr_obj, "lr", &lr) < 0) goto done;
    if (gz_adamw_check_lr(lr) != GZ_OK) {
        gzpy_raise_status(GZ_ERR_VALUE);
        goto done;
    }
    if (step_obj && gzpy_int_arg(step_obj, "step", 0, INT64_MAX, &step) < 0) goto done;
    if (tokens_obj && gzpy_int_arg(tokens_obj, "tokens_seen", 0, INT64_MAX, &tokens_seen) < 0) goto done;
    const char *cpath = PyBytes_AS_STRING(path);
    gzpy_call c;
    if (gzpy_call_begin(&c, self, GZPY_CALL_INTERRUPTIBLE) < 0) goto done;
    gz_checkpoint_save_args sa = {.optimizer = opt, .lr = (float)lr, .config_json = config_json,
                                  .step = (int64_t)step, .tokens_seen = (int64_t)tokens_seen,
                                  .rng = rng.buf, .rng_len = rng.obj ? (size_t)rng.len : 0,
                                  .extra = extra.buf, .extra_len = extra.obj ? (size_t)extra.len : 0};
    gz_status s = gz_checkpoint_save(cpath, self->model, &sa);
    if (gzpy_call_end(&c, s) < 0) goto done;
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&rng);
    PyBuffer_Release(&extra);
    Py_XDECREF(path);
    return result;
}

PyObject *gzpy_model_load_checkpoint(GzModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", "optimizer", NULL};
    PyObject *path = NULL, *opt_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|O:load_checkpoint", kwlist, PyUnicode_FSConverter, &path,
                                     &opt_obj))
        return NULL;
    gz_adamw *opt;
    const char *cpath = PyBytes_AS_STRING(path);
    gzpy_call c;
    int rc = -1;
    if (optimizer_arg(self, opt_obj, &opt) == 0 && gzpy_call_begin(&c, self, GZPY_CALL_INTERRUPTIBLE) == 0) {
        gz_status s = gz_checkpoint_load(cpath, self->model, opt);
        rc = gzpy_call_end(&c, s);
    }
    Py_DECREF(path);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *bytes_or_empty(const void *p, size_t n) {
    return PyBytes_FromStringAndSize(n ? (const char *)p : "", n ? (Py_ssize_t)n : 0);
}

PyObject *gzpy_read_checkpoint_meta(PyObject *module, PyObject *arg) {
    (void)module;
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path)) return NULL;
    gz_checkpoint_meta meta = {0};
    const char *cpath = PyBytes_AS_STRING(path);
    gzpy_call c;
    gzpy_call_begin(&c, NULL, 0); /* cannot fail without a model to mark busy */
    gz_status s = gz_checkpoint_read_meta(cpath, &meta);
    int rc = gzpy_call_end(&c, s);
    Py_DECREF(path);
    if (rc < 0) {
        gz_checkpoint_meta_free(&meta);
        return NULL;
    }
    PyObject *adamw = Py_BuildValue("{s:N,s:N,s:N,s:N,s:O}", "beta1", gzpy_float32_obj(meta.adamw.beta1), "beta2",
                                    gzpy_float32_obj(meta.adamw.beta2), "eps", gzpy_float32_obj(meta.adamw.eps),
                                    "weight_decay", gzpy_float32_obj(meta.adamw.weight_decay), "decay_all",
                                    meta.adamw.decay_all ? Py_True : Py_False);
    PyObject *rng = adamw ? bytes_or_empty(meta.rng, meta.rng_len) : NULL;
    PyObject *extra = rng ? bytes_or_empty(meta.extra, meta.extra_len) : NULL;
    PyObject *d = NULL;
    if (extra)
        d = Py_BuildValue("{s:s,s:i,s:s,s:L,s:L,s:N,s:N,s:O,s:N,s:N}", "format", meta.format ? meta.format : "",
                          "version", meta.version, "config_json", meta.config_json ? meta.config_json : "", "step",
                          (long long)meta.step, "tokens_seen", (long long)meta.tokens_seen, "rng", rng, "extra",
                          extra, "has_optimizer", meta.has_optimizer ? Py_True : Py_False, "adamw", adamw, "lr",
                          gzpy_float32_obj(meta.lr));
    else {
        Py_XDECREF(adamw);
        Py_XDECREF(rng);
    }
    gz_checkpoint_meta_free(&meta);
    return d;
}
