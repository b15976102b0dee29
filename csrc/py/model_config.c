/* model_config.c — gz_config <-> Python dict (keys: gozaru.config.CORE_FIELDS). */
#include "pycore.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "args.h"
#include "model_config.h"

typedef enum { FIELD_INT, FIELD_FLOAT, FIELD_BOOL, FIELD_ENUM } field_kind; /* ENUM: an int >= 0 */

typedef struct {
    const char *key;
    field_kind kind;
    size_t offset;
} config_field;

#define FIELD(name, kind) {#name, kind, offsetof(gz_config, name)}
static const config_field fields[] = {
    FIELD(vocab_size, FIELD_INT),
    FIELD(hidden_size, FIELD_INT),
    FIELD(num_hidden_layers, FIELD_INT),
    FIELD(num_attention_heads, FIELD_INT),
    FIELD(intermediate_size, FIELD_INT),
    FIELD(rotary_pct, FIELD_FLOAT),
    FIELD(rotary_emb_base, FIELD_FLOAT),
    FIELD(max_position_embeddings, FIELD_INT),
    FIELD(layer_norm_eps, FIELD_FLOAT),
    FIELD(use_parallel_residual, FIELD_BOOL),
    FIELD(tie_word_embeddings, FIELD_BOOL),
    FIELD(arch, FIELD_ENUM),
    FIELD(norm_kind, FIELD_ENUM),
    FIELD(mlp_kind, FIELD_ENUM),
    FIELD(num_key_value_heads, FIELD_INT),
    FIELD(qkv_bias, FIELD_BOOL),
};
#undef FIELD
#define NUM_FIELDS ((int)(sizeof fields / sizeof fields[0]))
#define FIRST_FAMILY_FIELD 11 /* arch and after: optional, GPT-NeoX when absent */

static int is_known_key(PyObject *key) {
    if (!PyUnicode_Check(key)) return 0;
    const char *s = PyUnicode_AsUTF8(key);
    if (!s) {
        PyErr_Clear();
        return 0;
    }
    for (int i = 0; i < NUM_FIELDS; i++)
        if (strcmp(s, fields[i].key) == 0) return 1;
    return 0;
}

static int read_field(PyObject *value, const config_field *f, gz_config *cfg) {
    char name[64]; /* "config['<field>']" */
    snprintf(name, sizeof name, "config['%s']", f->key);
    char *slot = (char *)cfg + f->offset;
    if (f->kind == FIELD_INT || f->kind == FIELD_ENUM) {
        long long v;
        if (gzpy_int_arg(value, name, f->kind == FIELD_ENUM ? 0 : 1, INT_MAX, &v) < 0) return -1;
        *(int *)slot = (int)v;
    } else if (f->kind == FIELD_FLOAT) {
        double v;
        if (gzpy_float_arg(value, name, -FLT_MAX, FLT_MAX, 0, &v) < 0) return -1;
        *(float *)slot = (float)v;
    } else {
        if (!PyBool_Check(value) && !PyLong_Check(value)) {
            PyErr_Format(PyExc_TypeError, "%s must be a bool, got %.100s", name, Py_TYPE(value)->tp_name);
            return -1;
        }
        int v = PyObject_IsTrue(value);
        if (v < 0) return -1;
        *(int *)slot = v;
    }
    return 0;
}

int gzpy_config_from_dict(PyObject *d, gz_config *cfg) {
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "config must be a dict (GPTNeoXConfig.core_dict()), got %.100s",
                     Py_TYPE(d)->tp_name);
        return -1;
    }
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < NUM_FIELDS; i++) {
        PyObject *value = PyDict_GetItemString(d, fields[i].key); /* borrowed */
        if (!value && i >= FIRST_FAMILY_FIELD) { /* a dict without family keys describes a GPT-NeoX model */
            cfg->num_key_value_heads = cfg->num_attention_heads;
            cfg->qkv_bias = 1;
            continue;
        }
        if (!value) {
            PyErr_Format(PyExc_ValueError, "config is missing the key '%s'", fields[i].key);
            return -1;
        }
        if (read_field(value, &fields[i], cfg) < 0) return -1;
    }
    /* A misspelt key would otherwise be silently replaced by nothing. */
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &key, &value)) {
        if (!is_known_key(key)) {
            PyErr_Format(PyExc_ValueError, "config has an unknown key %R (the core takes: vocab_size, hidden_size, "
                         "num_hidden_layers, num_attention_heads, intermediate_size, rotary_pct, rotary_emb_base, "
                         "max_position_embeddings, layer_norm_eps, use_parallel_residual, tie_word_embeddings, arch, "
                         "norm_kind, mlp_kind, num_key_value_heads, qkv_bias)", key);
            return -1;
        }
    }
    gz_status s = gz_config_validate(cfg);
    if (s != GZ_OK) {
        gzpy_raise_status(s);
        return -1;
    }
    return 0;
}

PyObject *gzpy_config_to_dict(const gz_config *cfg) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < NUM_FIELDS; i++) {
        const char *slot = (const char *)cfg + fields[i].offset;
        PyObject *v;
        if (fields[i].kind == FIELD_INT || fields[i].kind == FIELD_ENUM) v = PyLong_FromLong(*(const int *)slot);
        else if (fields[i].kind == FIELD_FLOAT) v = gzpy_float32_obj(*(const float *)slot);
        else v = PyBool_FromLong(*(const int *)slot);
        if (!v || PyDict_SetItemString(d, fields[i].key, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

/* _core.tensor_table(config) -> tuple of (name, shape, layer, kind, is_matrix_weight), from the config alone. */
PyObject *gzpy_tensor_table(PyObject *module, PyObject *config) {
    (void)module;
    gz_config cfg;
    if (gzpy_config_from_dict(config, &cfg) < 0) return NULL;
    int n = gz_tensor_count(&cfg);
    gz_tensor_spec *specs = PyMem_Calloc((size_t)n, sizeof *specs);
    if (!specs) return PyErr_NoMemory();
    PyObject *out = NULL;
    gz_status s = gz_tensor_table(&cfg, specs, n);
    if (s != GZ_OK) {
        gzpy_raise_status(s);
        goto done;
    }
    out = PyTuple_New(n);
    for (int i = 0; out && i < n; i++) {
        const gz_tensor_spec *t = &specs[i];
        PyObject *row = t->ndim == 1
            ? Py_BuildValue("(s(L)isO)", t->name, (long long)t->shape[0], t->layer, t->kind,
                            t->is_matrix_weight ? Py_True : Py_False)
            : Py_BuildValue("(s(LL)isO)", t->name, (long long)t->shape[0], (long long)t->shape[1], t->layer,
                            t->kind, t->is_matrix_weight ? Py_True : Py_False);
        if (!row) Py_CLEAR(out);
        else PyTuple_SET_ITEM(out, i, row);
    }
done:
    PyMem_Free(specs);
    return out;
}
