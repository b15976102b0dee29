/* module.c — gozaru._core: module init, exception mapping, threads and backend queries. */
#define GZPY_IMPORTS_ARRAY
#include "pycore.h"

#include <string.h>

#include "args.h"
#include "model_config.h"
#include "../blas.h"
#include "../backend.h" /* gz_cpu_allow_bf16_without_instructions */
#include "../precision.h"

PyObject *gzpy_CheckpointError = NULL;
PyObject *gzpy_ModelBusyError = NULL;

PyObject *gzpy_raise_status(gz_status s) {
    const char *msg = gz_last_error();
    if (!msg || !msg[0]) msg = "unknown error in the gozaru core";
    PyObject *type;
    switch (s) {
    case GZ_ERR_VALUE: type = PyExc_ValueError; break;
    case GZ_ERR_NOMEM: type = PyExc_MemoryError; break;
    case GZ_ERR_IO: type = PyExc_OSError; break;
    case GZ_ERR_FORMAT: type = gzpy_CheckpointError; break;
    case GZ_ERR_INTERRUPTED: type = PyExc_KeyboardInterrupt; break;
    case GZ_ERR_BACKEND:
    case GZ_ERR_STATE:
    default: type = PyExc_RuntimeError; break;
    }
    PyErr_SetString(type, msg);
    return NULL;
}

static PyObject *set_num_threads(PyObject *module, PyObject *arg) {
    (void)module;
    long long n;
    if (gzpy_int_arg(arg, "n", 1, GZ_MAX_THREADS, &n) < 0) return NULL;
    gz_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *get_num_threads(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyLong_FromLong(gz_get_num_threads());
}

/* "cpu" / "cuda" -> kind; ValueError otherwise. Shared with the Model constructor. */
int gzpy_backend_kind(PyObject *name, gz_backend_kind *out) {
    const char *s = gzpy_str_arg(name, "backend", " ('cpu' or 'cuda')");
    if (!s) return -1;
    if (strcmp(s, "cpu") == 0) *out = GZ_BACKEND_CPU;
    else if (strcmp(s, "cuda") == 0) *out = GZ_BACKEND_CUDA;
    else {
        PyErr_Format(PyExc_ValueError, "unknown backend %R: choose 'cpu' or 'cuda'", name);
        return -1;
    }
    return 0;
}

static PyObject *backend_available(PyObject *module, PyObject *arg) {
    (void)module;
    gz_backend_kind kind;
    if (gzpy_backend_kind(arg, &kind) < 0) return NULL;
    return PyBool_FromLong(gz_backend_available(kind));
}

/* gz_adamw_check_lr for Python's AdamW (constructor, lr setter): the lr as a float, or TypeError / ValueError. */
static PyObject *check_lr(PyObject *module, PyObject *arg) {
    (void)module;
    double lr;
    if (gzpy_real_arg(arg, "lr", &lr) < 0) return NULL;
    gz_status s = gz_adamw_check_lr(lr);
    if (s != GZ_OK) return gzpy_raise_status(s);
    return PyFloat_FromDouble(lr);
}

/* The one switch behind GOZARU_BF16_ANY_CPU, which Python reads (gozaru/engine/placement.py): the core reads no
 * environment. */
static PyObject *allow_bf16_without_instructions(PyObject *module, PyObject *arg) {
    (void)module;
    int allow = PyObject_IsTrue(arg);
    if (allow < 0) return NULL;
    gz_cpu_allow_bf16_without_instructions(allow);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_num_threads", set_num_threads, METH_O,
     "set_num_threads(n)\n--\n\nThreads used by OpenMP loops and BLAS on the CPU backend."},
    {"get_num_threads", get_num_threads, METH_NOARGS, "get_num_threads()\n--\n\nThreads used on the CPU backend."},
    {"backend_available", backend_available, METH_O,
     "backend_available(name)\n--\n\nTrue when the backend ('cpu' or 'cuda') is compiled in and usable."},
    {"check_lr", check_lr, METH_O,
     "check_lr(lr)\n--\n\nlr as a float when it is a learning rate the core accepts (0 <= lr <= FLT_MAX); "
     "TypeError or ValueError otherwise. The one check: AdamW.step applies the same."},
    {"allow_bf16_without_instructions", allow_bf16_without_instructions, METH_O,
     "allow_bf16_without_instructions(allow)\n--\n\nLet precision 'bf16' run through the bf16 GEMM library on a CPU "
     "without AVX512-BF16/AMX-BF16 (the library converts to fp32: same results, no faster). For tests."},
    {"build_info", gzpy_build_info, METH_NOARGS,
     "build_info()\n--\n\nBLAS (name, version, kernel, threads), OpenMP, CPU features and backends, as a dict."},
    {"read_checkpoint_meta", (PyCFunction)gzpy_read_checkpoint_meta, METH_O,
     "read_checkpoint_meta(path)\n--\n\nThe metadata of a gozaru HDF5 checkpoint as a dict."},
    {"tensor_table", gzpy_tensor_table, METH_O,
     "tensor_table(config)\n--\n\nEvery tensor of a model of this config (a core_dict), in core order, as\n"
     "(name, shape, layer, kind, is_matrix_weight) tuples; validates the config, allocates no weights."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "gozaru._core",
    "The gozaru C core: GPT-NeoX forward/backward, selective training, AdamW, generation, checkpoints.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

/* Adds obj under name, stealing the reference (also on failure). */
static int add_object(PyObject *m, const char *name, PyObject *obj) {
    if (!obj) return -1;
    if (PyModule_AddObject(m, name, obj) < 0) {
        Py_DECREF(obj);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    gz_blas_init(); /* blas.c: BLAS threads on gozaru's OpenMP pool */
    if (PyType_Ready(&GzModel_Type) < 0 || PyType_Ready(&GzAdamW_Type) < 0) return NULL;

    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (!gzpy_CheckpointError) {
        gzpy_CheckpointError = PyErr_NewExceptionWithDoc(
            "gozaru._core.CheckpointError",
            "A checkpoint file is malformed or does not match the model (a ValueError).", PyExc_ValueError, NULL);
        if (!gzpy_CheckpointError) goto fail;
    }
    Py_INCREF(gzpy_CheckpointError);
    if (add_object(m, "CheckpointError", gzpy_CheckpointError) < 0) goto fail;
    if (!gzpy_ModelBusyError) {
        gzpy_ModelBusyError = PyErr_NewExceptionWithDoc(
            "gozaru._core.ModelBusyError",
            "The Model is inside a call from another thread (a RuntimeError).", PyExc_RuntimeError, NULL);
        if (!gzpy_ModelBusyError) goto fail;
    }
    Py_INCREF(gzpy_ModelBusyError);
    if (add_object(m, "ModelBusyError", gzpy_ModelBusyError) < 0) goto fail;
    Py_INCREF(&GzModel_Type);
    if (add_object(m, "Model", (PyObject *)&GzModel_Type) < 0) goto fail;
    Py_INCREF(&GzAdamW_Type);
    if (add_object(m, "AdamW", (PyObject *)&GzAdamW_Type) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "IGNORE_INDEX", GZ_IGNORE_INDEX) < 0) goto fail;
    /* the vocabulary of gz_model_set_precision (csrc/precision.h), in enum order: Python's one list of names */
    PyObject *names = PyTuple_New(GZ_PRECISION_COUNT);
    if (!names) goto fail;
    for (int p = 0; p < GZ_PRECISION_COUNT; p++) {
        PyObject *name = PyUnicode_FromString(gz_precision_name((gz_precision)p));
        if (!name) {
            Py_DECREF(names);
            goto fail;
        }
        PyTuple_SET_ITEM(names, p, name);
    }
    if (add_object(m, "PRECISIONS", names) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
