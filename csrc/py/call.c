/* call.c — the begin/end pair declared in call.h. */
#include "call.h"

int gzpy_call_begin(gzpy_call *c, GzModelObject *model, int flags) {
    c->model = model;
    c->flags = flags;
    if (model && gzpy_model_begin(model) < 0) return -1;
    if (flags & GZPY_CALL_INTERRUPTIBLE) gzpy_sigint_begin(&c->guard);
    c->saved = PyEval_SaveThread(); /* what Py_BEGIN_ALLOW_THREADS does */
    return 0;
}

int gzpy_call_end(gzpy_call *c, gz_status s) {
    PyEval_RestoreThread(c->saved);
    if (c->flags & GZPY_CALL_INTERRUPTIBLE) gzpy_sigint_end(&c->guard, s);
    if (c->model) gzpy_model_end(c->model);
    if (s != GZ_OK) {
        gzpy_raise_status(s);
        return -1;
    }
    return 0;
}
