/* model_type.c — gozaru._core.Model: owns a gz_model, exposes parameters as zero-copy views,
 * runs forward/backward with the GIL released. Generation and checkpoints live in their own files. */
#include "pycore.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "call.h"
#include "model_config.h"

/* ------------------------------------------------------------------ tensor lookup */
int gzpy_tensor_index(GzModelObject *self, PyObject *name) {
    const char *s = gzpy_str_arg(name, "tensor name", "");
    if (!s) return -1;
    int idx = gz_model_find_tensor(self->model, s);
    if (idx < 0) {
        PyErr_Format(PyExc_ValueError, "unknown tensor name %R (see Model.names)", name);
        return -1;
    }
    return idx;
}

static int tensor_info(GzModelObject *self, int idx, gz_tensor_info *info) {
    gz_status s = gz_model_tensor(self->model, idx, info);
    if (s != GZ_OK) {
        gzpy_raise_status(s);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ lifetime */
static void model_dealloc(GzModelObject *self) {
    /* Views and optimizers hold references, so none of them is alive here. */
    if (self->model) gz_model_free(self->model);
    Py_XDECREF(self->names);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *make_names(gz_model *m) {
    int n = gz_model_num_tensors(m);
    PyObject *names = PyTuple_New(n);
    if (!names) return NULL;
    for (int i = 0; i < n; i++) {
        gz_tensor_info info;
        gz_status s = gz_model_tensor(m, i, &info);
        PyObject *name = s == GZ_OK ? PyUnicode_FromString(info.name) : gzpy_raise_status(s);
        if (!name) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    return names;
}

static PyObject *model_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"config", "backend", "seed", "init_std", "lora", "rope", NULL};
    PyObject *config, *backend_obj = NULL, *seed_obj = Py_None, *std_obj = NULL, *lora_obj = NULL, *rope = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOOOO:Model", kwlist, &config, &backend_obj, &seed_obj,
                                     &std_obj, &lora_obj, &rope))
        return NULL;
    gz_config cfg;
    if (gzpy_config_from_dict(config, &cfg) < 0) return NULL;
    gz_backend_kind kind = GZ_BACKEND_CPU;
    if (backend_obj && gzpy_backend_kind(backend_obj, &kind) < 0) return NULL;
    int init = seed_obj != Py_None;
    uint64_t seed = 0;
    if (init && gzpy_u64_arg(seed_obj, "seed", &seed) < 0) return NULL;
    double init_std = 0.02;
    if (std_obj && gzpy_float_arg(std_obj, "init_std", 0.0, 1e30, 0, &init_std) < 0) return NULL;

    gz_lora_spec *lora;
    int nlora;
    if (gzpy_lora_specs(lora_obj, &cfg, &lora, &nlora) < 0) return NULL;
    GzModelObject *self = (GzModelObject *)type->tp_alloc(type, 0);
    if (!self) {
        PyMem_Free(lora);
        return NULL;
    }
    gz_model *m = NULL;
    gzpy_call c;
    gzpy_call_begin(&c, NULL, 0); /* cannot fail without a model to mark busy */
    gz_status s = gz_model_create_lora(&cfg, kind, lora, nlora, &m);
    if (s == GZ_OK && init) s = gz_model_init_random(m, seed, (float)init_std);
    int failed = gzpy_call_end(&c, s) < 0;
    PyMem_Free(lora); /* with the GIL again */
    if (failed) { /* raised before freeing: the message lives in the core */
        if (m) gz_model_free(m);
        Py_DECREF(self);
        return NULL;
    }
    self->model = m;
    self->names = make_names(m);
    if (!self->names || (rope != Py_None && gzpy_model_apply_rope(self, rope) < 0)) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *model_repr(GzModelObject *self) {
    const gz_config *c = gz_model_config(self->model);
    return PyUnicode_FromFormat("<gozaru._core.Model %s: %d layers, hidden %d, %d heads, vocab %d, %lld params>",
                                gz_model_backend(self->model) == GZ_BACKEND_CUDA ? "cuda" : "cpu",
                                c->num_hidden_layers, c->hidden_size, c->num_attention_heads, c->vocab_size,
                                (long long)gz_model_num_params(self->model));
}

/* ------------------------------------------------------------------ properties */
static PyObject *get_names(GzModelObject *self, void *closure) {
    (void)closure;
    Py_INCREF(self->names);
    return self->names;
}

static PyObject *get_num_params(GzModelObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong((long long)gz_model_num_params(self->model));
}

static PyObject *get_backend(GzModelObject *self, void *c) {
    return PyUnicode_FromString(gz_model_backend(self->model) == GZ_BACKEND_CUDA ? "cuda" : "cpu");
}

static PyObject *get_precision(GzModelObject *self, void *c) {
    return PyUnicode_FromString(gz_model_precision(self->model));
}

static PyObject *get_config(GzModelObject *self, void *closure) {
    (void)closure;
    return gzpy_config_to_dict(gz_model_config(self->model));
}

static PyGetSetDef model_getset[] = {
    {"names", (getter)get_names, NULL, "HF tensor names in core order (tuple of str).", NULL},
    {"num_params", (getter)get_num_params, NULL, "Number of parameters.", NULL},
    {"backend", (getter)get_backend, NULL, "'cpu' or 'cuda'.", NULL},
    {"precision", (getter)get_precision, NULL, "The Linear layers' precision, one of PRECISIONS (csrc/precision.h).",
     NULL},
    {"config", (getter)get_config, NULL, "The core config as a dict (CORE_FIELDS).", NULL},
    {"rope", (getter)gzpy_model_get_rope, NULL, "Rotary (inv_freq float32 array, attention_factor).", NULL},
    {"lora", (getter)gzpy_model_get_lora, NULL, "LoRA adapters: tuple of (target, r, scale, A name, B name).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ------------------------------------------------------------------ tensors */
static PyObject *model_tensor_info(GzModelObject *self, PyObject *name) {
    int idx = gzpy_tensor_index(self, name);
    gz_tensor_info info;
    if (idx < 0 || tensor_info(self, idx, &info) < 0) return NULL;
    PyObject *shape = info.ndim == 1 ? Py_BuildValue("(L)", (long long)info.shape[0])
                                     : Py_BuildValue("(LL)", (long long)info.shape[0], (long long)info.shape[1]);
    if (!shape) return NULL;
    return Py_BuildValue("{s:s,s:N,s:L,s:L,s:i,s:s,s:O,s:O}", "name", info.name, "shape", shape, "numel",
                         (long long)info.numel, "offset", (long long)info.offset, "layer", info.layer, "kind",
                         info.kind,
                         "is_matrix_weight", info.is_matrix_weight ? Py_True : Py_False, "trainable",
                         gz_model_is_trainable(self->model, idx) ? Py_True : Py_False);
}

/* A writable float32 view of `count` parameters at `offset`, shaped `dims`; its base is the model. */
static PyObject *param_view(GzModelObject *self, int ndim, npy_intp *dims, int64_t offset) {
    gzpy_call c; /* device backends: refresh the host mirror if a training step left it stale */
    if (gz_model_backend(self->model) != GZ_BACKEND_CPU &&
        (gzpy_call_begin(&c, self, 0) < 0 || gzpy_call_end(&c, gz_model_sync_params_to_host(self->model)) < 0))
        return NULL;
    float *host = gz_model_params_host(self->model);
    if (!host) {
        PyErr_SetString(PyExc_RuntimeError, "the model has no host copy of its parameters");
        return NULL;
    }
    PyObject *arr = PyArray_SimpleNewFromData(ndim, dims, NPY_FLOAT32, host + offset);
    if (!arr) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)self) < 0) { /* steals self even on failure */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *model_param(GzModelObject *self, PyObject *name) {
    int idx = gzpy_tensor_index(self, name);
    gz_tensor_info info;
    if (idx < 0 || tensor_info(self, idx, &info) < 0) return NULL;
    npy_intp dims[2] = {(npy_intp)info.shape[0], (npy_intp)info.shape[1]};
    return param_view(self, info.ndim, dims, info.offset);
}

static PyObject *model_flat_params(GzModelObject *self, PyObject *unused) {
    (void)unused;
    npy_intp n = (npy_intp)gz_model_num_params(self->model);
    return param_view(self, 1, &n, 0);
}

/* A copy of every parameter from one consistent step; RuntimeError (nothing copied) while another thread is
 * inside a call on this model. The copy keeps the GIL instead of marking the model busy: no other thread can
 * start a call meanwhile (that needs the GIL), and a thread about to train waits for the GIL rather than
 * failing on a busy model. */
/* Runs a core call that takes only the model, with the busy guard and the GIL released. */
PyObject *gzpy_run_model_call(GzModelObject *self, gz_status (*fn)(gz_model *)) {
    gzpy_call c;
    if (gzpy_call_begin(&c, self, 0) < 0) return NULL;
    gz_status s = fn(self->model);
    if (gzpy_call_end(&c, s) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *model_params_changed(GzModelObject *self, PyObject *unused) {
    (void)unused;
    return gzpy_run_model_call(self, gz_model_params_changed);
}

static PyObject *model_sync_to_host(GzModelObject *self, PyObject *unused) {
    (void)unused;
    return gzpy_run_model_call(self, gz_model_sync_params_to_host);
}

static PyObject *model_set_trainable(GzModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", "flag", NULL};
    PyObject *name;
    int flag;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Op:set_trainable", kwlist, &name, &flag)) return NULL;
    int idx = gzpy_tensor_index(self, name);
    if (idx < 0 || gzpy_model_begin(self) < 0) return NULL;
    gz_status s = gz_model_set_trainable(self->model, idx, flag);
    gzpy_model_end(self);
    if (s != GZ_OK) return gzpy_raise_status(s);
    Py_RETURN_NONE;
}

static PyObject *model_set_precision(GzModelObject *self, PyObject *name) {
    if (!PyUnicode_Check(name))
        return PyErr_Format(PyExc_TypeError, "precision must be a str, got %s", Py_TYPE(name)->tp_name);
    const char *s8 = PyUnicode_AsUTF8(name);
    if (!s8 || gzpy_model_begin(self) < 0) return NULL;
    gz_status s = gz_model_set_precision(self->model, s8);
    gzpy_model_end(self);
    if (s != GZ_OK) return gzpy_raise_status(s);
    Py_RETURN_NONE;
}

static PyObject *model_is_trainable(GzModelObject *self, PyObject *name) {
    int idx = gzpy_tensor_index(self, name);
    if (idx < 0) return NULL;
    return PyBool_FromLong(gz_model_is_trainable(self->model, idx));
}

/* ------------------------------------------------------------------ type */
static PyMethodDef model_methods[] = {
    {"tensor_info", (PyCFunction)model_tensor_info, METH_O,
     "tensor_info(name)\n--\n\ndict(name, shape, numel, offset, layer, is_matrix_weight, trainable)."},
    {"param", (PyCFunction)model_param, METH_O,
     "param(name)\n--\n\nA writable zero-copy float32 view of one tensor (keeps the model alive)."},
    {"flat_params", (PyCFunction)model_flat_params, METH_NOARGS,
     "flat_params()\n--\n\nA writable 1-D view of the whole parameter buffer."},
    {"snapshot", (PyCFunction)gzpy_model_snapshot, METH_VARARGS,
     "snapshot(timeout=10.0)\n--\n\nA copy of the whole parameter buffer from one consistent step: waits up to "
     "timeout seconds while another thread uses the model (then RuntimeError)."},
    {"set_precision", (PyCFunction)model_set_precision, METH_O,
     "set_precision(name)\n--\n\nThe Linear layers' precision, one of PRECISIONS that this backend runs "
     "(build_info()['backend_precisions']); ValueError for an unknown name, RuntimeError for one the backend, CPU "
     "or build cannot run."},
    {"params_changed", (PyCFunction)model_params_changed, METH_NOARGS,
     "params_changed()\n--\n\nCall after writing into views (uploads on device backends; no-op on CPU)."},
    {"sync_to_host", (PyCFunction)model_sync_to_host, METH_NOARGS,
     "sync_to_host()\n--\n\nRefresh the host copy from the device (no-op on CPU)."},
    {"set_trainable", (PyCFunction)(void (*)(void))model_set_trainable, METH_VARARGS | METH_KEYWORDS,
     "set_trainable(name, flag)\n--\n\nMark one tensor trainable or frozen."},
    {"is_trainable", (PyCFunction)model_is_trainable, METH_O, "is_trainable(name)\n--\n\n"},
    {"init_lora", (PyCFunction)gzpy_model_init_lora, METH_O, "init_lora(seed)\n--\n\nPEFT's adapter init."},
    {"forward", (PyCFunction)(void (*)(void))gzpy_model_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(tokens, targets=None, return_logits=False, keep_activations=True, doc_ids=None)\n--\n\n"
     "tokens/targets: int32 C-contiguous [B, T] (targets may hold -100 = ignore).\n"
     "doc_ids: int32 [B, T] or None; packed rows, each run of equal ids one document (gz_model_forward_docs).\n"
     "Returns (loss or None, n_counted, logits [B, T, V] or None)."},
    {"backward", (PyCFunction)(void (*)(void))gzpy_model_backward, METH_VARARGS | METH_KEYWORDS,
     "backward(loss_scale=1.0)\n--\n\nAccumulate gradients of the last forward with targets."},
    {"zero_grad", (PyCFunction)gzpy_model_zero_grad, METH_NOARGS, "zero_grad()\n--\n\n"},
    {"grad", (PyCFunction)gzpy_model_grad, METH_O, "grad(name)\n--\n\nA copy of a trainable tensor's gradient."},
    {"grad_norms", (PyCFunction)gzpy_model_grad_norms, METH_NOARGS,
     "grad_norms()\n--\n\nL2 norm of each tensor's gradient (NaN for frozen tensors)."},
    {"generate", (PyCFunction)(void (*)(void))gzpy_model_generate, METH_VARARGS | METH_KEYWORDS,
     "generate(prompts, lens, max_new_tokens, temperature=0.0, top_k=0, top_p=1.0, seed=0, eos_token_id=-1)\n--\n\n"
     "prompts int32 [B, Tmax], lens int32 [B] -> (out int32 [B, max_new_tokens], out_lens int32 [B])."},
    {"save_checkpoint", (PyCFunction)(void (*)(void))gzpy_model_save_checkpoint, METH_VARARGS | METH_KEYWORDS,
     "save_checkpoint(path, optimizer=None, lr=0.0, config_json='', step=0, tokens_seen=0, rng=b'', extra=b'')"
     "\n--\n\nAtomic HDF5 checkpoint."},
    {"load_checkpoint", (PyCFunction)(void (*)(void))gzpy_model_load_checkpoint, METH_VARARGS | METH_KEYWORDS,
     "load_checkpoint(path, optimizer=None)\n--\n\nFill parameters, flags and optimizer state from a checkpoint."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject GzModel_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gozaru._core.Model",
    .tp_basicsize = sizeof(GzModelObject),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_repr = (reprfunc)model_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(config, backend='cpu', seed=None, init_std=0.02)\n--\n\n"
              "A GPT-NeoX model in the C core. config: dict with gozaru.config.CORE_FIELDS; "
              "seed=None leaves the parameters zero.",
    .tp_methods = model_methods,
    .tp_getset = model_getset,
    .tp_new = model_new,
};
