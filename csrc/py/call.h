/* call.h — running one core call from a Python entry point.
 *
 * Every compute or IO call runs with the GIL released, so other Python threads go on meanwhile. A call
 * on a Model first marks it busy (a Model and its optimizer are not thread-safe), and long calls
 * (generation, checkpoint IO) route Ctrl-C to the core's interrupt flag:
 *
 *     gzpy_call c;
 *     if (gzpy_call_begin(&c, self, 0) < 0) return NULL;
 *     gz_status s = gz_model_backward(self->model, scale);   (no GIL here: no Python API)
 *     if (gzpy_call_end(&c, s) < 0) return NULL;
 */
#ifndef GOZARU_PY_CALL_H
#define GOZARU_PY_CALL_H

#include "pycore.h"

#define GZPY_CALL_INTERRUPTIBLE 1 /* flag: route SIGINT to gz_request_interrupt() during the call */

typedef struct {
    GzModelObject *model; /* marked busy for the call, or NULL */
    int flags;
    gzpy_sigint_guard guard;
    PyThreadState *saved;
} gzpy_call;

/* Marks model busy (when not NULL), installs the Ctrl-C route when asked, then releases the GIL.
 * -1 with RuntimeError (and the GIL still held) when the model is in use by another thread. */
int gzpy_call_begin(gzpy_call *c, GzModelObject *model, int flags);

/* Takes the GIL back and undoes gzpy_call_begin; 0, or -1 with the exception for status s set. */
int gzpy_call_end(gzpy_call *c, gz_status s);

#endif
