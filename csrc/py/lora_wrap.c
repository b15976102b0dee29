/* lora_wrap.c — LoRA adapters at the boundary: the Model(..., lora=[(name, r, scale), ...]) argument, the
 * Model.lora description and Model.init_lora(seed). Ranges (rank, target kind, duplicates) are the core's. */
#include "pycore.h"

#include <string.h>

#include "args.h"
#include "call.h"

int gzpy_lora_specs(PyObject *obj, const gz_config *cfg, gz_lora_spec **out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    if (!obj || obj == Py_None) return 0;
    PyObject *seq = PySequence_Fast(obj, "lora must be a sequence of (tensor name, r, scale) tuples");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int nt = gz_tensor_count(cfg);
    gz_tensor_spec *table = nt > 0 ? PyMem_Calloc((size_t)nt, sizeof *table) : NULL;
    gz_lora_spec *specs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof *specs);
    int rc = -1;
    if (!table || !specs) {
        PyErr_NoMemory();
        goto done;
    }
    gz_status s = gz_tensor_table(cfg, table, nt);
    if (s != GZ_OK) {
        gzpy_raise_status(s);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_Format(PyExc_TypeError, "lora[%zd] must be a (tensor name, r, scale) tuple", i);
            goto done;
        }
        const char *name = gzpy_str_arg(PyTuple_GET_ITEM(item, 0), "LoRA target", " (a tensor name)");
        if (!name) goto done;
        int idx = -1;
        for (int t = 0; t < nt && idx < 0; t++)
            if (!strcmp(table[t].name, name)) idx = t;
        if (idx < 0) {
            PyErr_Format(PyExc_ValueError, "LoRA target %R is not a tensor of this model (see Model.names)",
                         PyTuple_GET_ITEM(item, 0));
            goto done;
        }
        long long r;
        double scale;
        if (gzpy_int_arg(PyTuple_GET_ITEM(item, 1), "LoRA rank r", -(1LL << 30), 1LL << 30, &r) < 0 ||
            gzpy_float_arg(PyTuple_GET_ITEM(item, 2), "LoRA scale", -1e30, 1e30, 0, &scale) < 0)
            goto done;
        specs[i] = (gz_lora_spec){idx, (int)r, (float)scale};
    }
    *out = specs;
    *n_out = (int)n;
    specs = NULL;
    rc = 0;
done:
    PyMem_Free(table);
    PyMem_Free(specs);
    Py_DECREF(seq);
    return rc;
}

/* Model.lora -> tuple of (target name, r, scale, A name, B name), in table order. */
PyObject *gzpy_model_get_lora(GzModelObject *self, void *closure) {
    (void)closure;
    int n = gz_model_num_lora(self->model);
    PyObject *out = PyTuple_New(n);
    for (int i = 0; out && i < n; i++) {
        gz_lora_spec sp;
        int a, b;
        gz_tensor_info tw, ta, tb;
        gz_status s = gz_model_lora(self->model, i, &sp, &a, &b);
        if (s == GZ_OK) s = gz_model_tensor(self->model, sp.target, &tw);
        if (s == GZ_OK) s = gz_model_tensor(self->model, a, &ta);
        if (s == GZ_OK) s = gz_model_tensor(self->model, b, &tb);
        PyObject *row = s != GZ_OK ? gzpy_raise_status(s)
                                   : Py_BuildValue("(siNss)", tw.name, sp.r, gzpy_float32_obj(sp.scale), ta.name,
                                                   tb.name);
        if (!row) Py_CLEAR(out);
        else PyTuple_SET_ITEM(out, i, row);
    }
    return out;
}

/* Model.init_lora(seed): PEFT's initialisation of every adapter (A uniform, B zero). */
PyObject *gzpy_model_init_lora(GzModelObject *self, PyObject *seed_obj) {
    uint64_t seed;
    if (gzpy_u64_arg(seed_obj, "seed", &seed) < 0) return NULL;
    gzpy_call c;
    if (gzpy_call_begin(&c, self, 0) < 0) return NULL;
    gz_status s = gz_model_init_lora(self->model, seed);
    if (gzpy_call_end(&c, s) < 0) return NULL;
    Py_RETURN_NONE;
}
