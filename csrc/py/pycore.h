/* pycore.h — declarations shared by the translation units of the gozaru._core extension.
 *
 * Every file includes this first: it pulls in Python.h before any system header (as the C API
 * requires) and sets up the NumPy C API so that one table, imported in module.c, serves all files.
 *
 * Files: module.c (init, exceptions, threads), args.c (every boundary check), call.c (running a core
 * call: busy guard, GIL release, status to exception), model_config.c (config dict), model_type.c
 * (Model), adamw_type.c (AdamW), generate_wrap.c, checkpoint_wrap.c, interrupt.c (Ctrl-C).
 * The test-only module csrc/testops (_gozaru_testops) reuses args.c and this header.
 */
#ifndef GOZARU_PYCORE_H
#define GOZARU_PYCORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL gozaru_core_ARRAY_API
#ifndef GZPY_IMPORTS_ARRAY /* only module.c calls import_array() */
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include <signal.h>

#include "gozaru.h"

/* ---- errors (module.c) */
extern PyObject *gzpy_CheckpointError;
extern PyObject *gzpy_ModelBusyError; /* a RuntimeError: the model is in a call from another thread */

/* Raises the Python exception for a failed core call (message from gz_last_error()); returns NULL. */
PyObject *gzpy_raise_status(gz_status s);

/* _core.build_info() (build_info.c) */
PyObject *gzpy_build_info(PyObject *module, PyObject *unused);

/* "cpu" / "cuda" -> backend kind (TypeError / ValueError otherwise). */
int gzpy_backend_kind(PyObject *name, gz_backend_kind *out);

/* ---- the Model object (model_type.c) */
typedef struct {
    PyObject_HEAD
    gz_model *model;
    PyObject *names; /* tuple of str, core order */
    int busy;        /* 1 while a call runs with the GIL released; guards against concurrent use */
    int snapshot_waiting; /* a snapshot() waits for the model: new calls let it go first (no starvation) */
} GzModelObject;

extern PyTypeObject GzModel_Type;

/* Marks the model busy (RuntimeError when another thread is already using it). Call with the GIL. */
int gzpy_model_begin(GzModelObject *self);
void gzpy_model_end(GzModelObject *self);

/* Methods of Model defined outside model_type.c: model_train.c and model_guard.c. */
PyObject *gzpy_model_forward(GzModelObject *self, PyObject *args, PyObject *kwargs);
PyObject *gzpy_model_backward(GzModelObject *self, PyObject *args, PyObject *kwargs);
PyObject *gzpy_model_zero_grad(GzModelObject *self, PyObject *unused);
PyObject *gzpy_model_grad(GzModelObject *self, PyObject *name);
PyObject *gzpy_model_grad_norms(GzModelObject *self, PyObject *unused);
PyObject *gzpy_model_snapshot(GzModelObject *self, PyObject *args);
/* Runs a core call that takes only the model, with the busy guard and the GIL released; None or NULL. */
/* rope_wrap.c */
int gzpy_model_apply_rope(GzModelObject *self, PyObject *rope);
PyObject *gzpy_model_get_rope(GzModelObject *self, void *closure);
PyObject *gzpy_run_model_call(GzModelObject *self, gz_status (*fn)(gz_model *));

/* Index of the tensor named by `name` (a str); -1 with TypeError / ValueError set otherwise. */
int gzpy_tensor_index(GzModelObject *self, PyObject *name);

/* ---- LoRA adapters (lora_wrap.c) */
/* A sequence of (base tensor name, r, scale) -> PyMem-allocated specs (*out NULL and *n 0 for None). */
int gzpy_lora_specs(PyObject *obj, const gz_config *cfg, gz_lora_spec **out, int *n);
PyObject *gzpy_model_get_lora(GzModelObject *self, void *closure);
PyObject *gzpy_model_init_lora(GzModelObject *self, PyObject *seed);

/* ---- the AdamW object (adamw_type.c) */
typedef struct {
    PyObject_HEAD
    gz_adamw *opt;
    GzModelObject *model; /* strong reference: the optimizer must not outlive its model */
} GzAdamWObject;

extern PyTypeObject GzAdamW_Type;

/* ---- checkpoint wrappers (checkpoint_wrap.c): methods of Model and a module function */
PyObject *gzpy_model_save_checkpoint(GzModelObject *self, PyObject *args, PyObject *kwargs);
PyObject *gzpy_model_load_checkpoint(GzModelObject *self, PyObject *args, PyObject *kwargs);
PyObject *gzpy_read_checkpoint_meta(PyObject *module, PyObject *arg);

/* ---- generation (generate_wrap.c): a Model method */
PyObject *gzpy_model_generate(GzModelObject *self, PyObject *args, PyObject *kwargs);

/* ---- Ctrl-C during long calls (interrupt.c) */
typedef struct {
    int installed;
    struct sigaction old_action;
} gzpy_sigint_guard;

/* Routes SIGINT to gz_request_interrupt() until gzpy_sigint_end (main thread only; a no-op
 * elsewhere or when SIGINT is ignored). Both are called with the GIL held. */
void gzpy_sigint_begin(gzpy_sigint_guard *g);
/* Restores the previous handler and clears the core's flag. When a Ctrl-C arrived but the call
 * finished anyway (status GZ_OK), the interrupt is handed on to Python so it is not lost. */
void gzpy_sigint_end(gzpy_sigint_guard *g, gz_status status);

#endif
