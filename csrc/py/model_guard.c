/* model_guard.c — one call at a time per Model (the busy guard) and consistent parameter snapshots. */
#include "pycore.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ busy guard */
int gzpy_model_begin(GzModelObject *self) {
    /* A waiting snapshot only gets the GIL while the model is idle: a loop of calls would otherwise starve it. */
    for (int i = 0; self->snapshot_waiting && i < 20000; i++) {
        Py_BEGIN_ALLOW_THREADS
        usleep(50);
        Py_END_ALLOW_THREADS
    }
    if (self->busy) {
        PyErr_SetString(gzpy_ModelBusyError,
                        "this Model is in use by another thread (a Model and its optimizer are not thread-safe)");
        return -1;
    }
    self->busy = 1;
    return 0;
}

void gzpy_model_end(GzModelObject *self) { self->busy = 0; }

PyObject *gzpy_model_snapshot(GzModelObject *self, PyObject *args) {
    double timeout = 10.0;
    if (!PyArg_ParseTuple(args, "|d:snapshot", &timeout)) return NULL;
    /* Wait (GIL released) while another thread is inside a call; the copy below runs with the GIL held and the
     * model idle, so no call can start half-way through it. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    self->snapshot_waiting++;
    while (self->busy) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec) >= timeout) break;
        Py_BEGIN_ALLOW_THREADS
        usleep(50);
        Py_END_ALLOW_THREADS
    }
    self->snapshot_waiting--;
    if (self->busy) {
        gzpy_model_begin(self); /* fails: sets the busy RuntimeError */
        return NULL;
    }
    npy_intp n = (npy_intp)gz_model_num_params(self->model);
    PyObject *out = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (!out) return NULL;
    gz_status s = gz_model_sync_params_to_host(self->model);
    if (s != GZ_OK) {
        Py_DECREF(out);
        gzpy_raise_status(s);
        return NULL;
    }
    memcpy(PyArray_DATA((PyArrayObject *)out), gz_model_params_host(self->model), (size_t)n * sizeof(float));
    return out;
}

