/* adamw_type.c — gozaru._core.AdamW: a gz_adamw bound to one Model, which it keeps alive. */
#include "pycore.h"

#include <math.h>

#include "args.h"
#include "call.h"

static void adamw_dealloc(GzAdamWObject *self) {
    if (self->opt) gz_adamw_free(self->opt); /* before the model it points to can go */
    Py_XDECREF(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *adamw_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"model", "beta1", "beta2", "eps", "weight_decay", "decay_all", NULL};
    PyObject *model_obj, *b1_obj = NULL, *b2_obj = NULL, *eps_obj = NULL, *wd_obj = NULL;
    int decay_all = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!|OOOOp:AdamW", kwlist, &GzModel_Type, &model_obj, &b1_obj,
                                     &b2_obj, &eps_obj, &wd_obj, &decay_all))
        return NULL;
    double b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.0;
    if ((b1_obj && gzpy_float_arg(b1_obj, "beta1", 0.0, 1.0, 1, &b1) < 0) ||
        (b2_obj && gzpy_float_arg(b2_obj, "beta2", 0.0, 1.0, 1, &b2) < 0) ||
        (eps_obj && gzpy_float_arg(eps_obj, "eps", 0.0, 1e30, 0, &eps) < 0) ||
        (wd_obj && gzpy_float_arg(wd_obj, "weight_decay", 0.0, 1e30, 0, &wd) < 0))
        return NULL;
    gz_adamw_config cfg = {(float)b1, (float)b2, (float)eps, (float)wd, decay_all};

    GzAdamWObject *self = (GzAdamWObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    GzModelObject *model = (GzModelObject *)model_obj;
    Py_INCREF(model);
    self->model = model;
    if (gzpy_model_begin(model) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    gz_status s = gz_adamw_create(model->model, &cfg, &self->opt);
    gzpy_model_end(model);
    if (s != GZ_OK) {
        gzpy_raise_status(s); /* before anything else can touch the core's message */
        self->opt = NULL;
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* ------------------------------------------------------------------ step */
static PyObject *adamw_step(GzAdamWObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"lr", "max_grad_norm", NULL};
    PyObject *lr_obj, *clip_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:step", kwlist, &lr_obj, &clip_obj)) return NULL;
    double lr, clip = 0.0;
    if (gzpy_real_arg(lr_obj, "lr", &lr) < 0) return NULL; /* the core checks its range */
    if (clip_obj && clip_obj != Py_None && gzpy_float_arg(clip_obj, "max_grad_norm", 0.0, 1e30, 0, &clip) < 0)
        return NULL;
    float norm = NAN;
    gzpy_call c;
    if (gzpy_call_begin(&c, self->model, 0) < 0) return NULL;
    gz_status s = gz_adamw_step(self->opt, lr, (float)clip, &norm);
    if (gzpy_call_end(&c, s) < 0) return NULL;
    return PyFloat_FromDouble(norm);
}

/* ------------------------------------------------------------------ state */
static PyObject *adamw_has_state(GzAdamWObject *self, PyObject *name) {
    int idx = gzpy_tensor_index(self->model, name);
    if (idx < 0) return NULL;
    return PyBool_FromLong(gz_adamw_has_state(self->opt, idx));
}

/* The tensor's index and shape (as npy dims). */
static int tensor_shape(GzAdamWObject *self, PyObject *name, int *idx, int *ndim, npy_intp dims[2]) {
    *idx = gzpy_tensor_index(self->model, name);
    if (*idx < 0) return -1;
    gz_tensor_info info;
    gz_status s = gz_model_tensor(self->model->model, *idx, &info);
    if (s != GZ_OK) {
        gzpy_raise_status(s);
        return -1;
    }
    *ndim = info.ndim;
    dims[0] = (npy_intp)info.shape[0];
    dims[1] = (npy_intp)info.shape[1];
    return 0;
}

static PyObject *adamw_get_state(GzAdamWObject *self, PyObject *name) {
    int idx, ndim;
    npy_intp dims[2];
    if (tensor_shape(self, name, &idx, &ndim, dims) < 0) return NULL;
    if (!gz_adamw_has_state(self->opt, idx)) {
        PyErr_Format(PyExc_ValueError, "no optimizer state for %R (it has not been trained yet)", name);
        return NULL;
    }
    PyArrayObject *m = gzpy_zeros_f32(ndim, dims);
    PyArrayObject *v = m ? gzpy_zeros_f32(ndim, dims) : NULL;
    if (!v) {
        Py_XDECREF(m);
        return NULL;
    }
    int64_t step = 0;
    gzpy_call c;
    if (gzpy_call_begin(&c, self->model, 0) == 0) {
        gz_status s = gz_adamw_get_state(self->opt, idx, GZPY_F32(m), GZPY_F32(v), &step);
        if (gzpy_call_end(&c, s) == 0) return Py_BuildValue("(NNL)", m, v, (long long)step);
    }
    Py_DECREF(m);
    Py_DECREF(v);
    return NULL;
}

static PyObject *adamw_set_state(GzAdamWObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"name", "m", "v", "step", NULL};
    PyObject *name, *m_obj, *v_obj, *step_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:set_state", kwlist, &name, &m_obj, &v_obj, &step_obj))
        return NULL;
    int idx, ndim;
    npy_intp dims[2];
    if (tensor_shape(self, name, &idx, &ndim, dims) < 0) return NULL;
    const char *dims_text = "(the tensor's shape)";
    PyArrayObject *m = gzpy_array(m_obj, "m", NPY_FLOAT32, ndim, dims, dims_text);
    if (!m) return NULL;
    PyArrayObject *v = gzpy_array(v_obj, "v", NPY_FLOAT32, ndim, dims, dims_text);
    if (!v) return NULL;
    long long step;
    if (gzpy_int_arg(step_obj, "step", 0, INT64_MAX, &step) < 0) return NULL;
    gzpy_call c;
    if (gzpy_call_begin(&c, self->model, 0) < 0) return NULL;
    gz_status s = gz_adamw_set_state(self->opt, idx, GZPY_F32(m), GZPY_F32(v), (int64_t)step);
    if (gzpy_call_end(&c, s) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *adamw_update_norms(GzAdamWObject *self, PyObject *unused) {
    (void)unused;
    npy_intp n = gz_model_num_tensors(self->model->model);
    PyArrayObject *out = gzpy_zeros_f32(1, &n);
    if (!out) return NULL;
    gz_status s = gz_adamw_update_norms(self->opt, GZPY_F32(out));
    if (s != GZ_OK) {
        Py_DECREF(out);
        return gzpy_raise_status(s);
    }
    return (PyObject *)out;
}

/* ------------------------------------------------------------------ properties */
static PyObject *get_config(GzAdamWObject *self, void *closure) {
    (void)closure;
    const gz_adamw_config *c = gz_adamw_get_config(self->opt);
    return Py_BuildValue("{s:N,s:N,s:N,s:N,s:O}", "beta1", gzpy_float32_obj(c->beta1), "beta2",
                         gzpy_float32_obj(c->beta2), "eps", gzpy_float32_obj(c->eps), "weight_decay",
                         gzpy_float32_obj(c->weight_decay), "decay_all", c->decay_all ? Py_True : Py_False);
}

static PyObject *get_model(GzAdamWObject *self, void *closure) {
    (void)closure;
    Py_INCREF(self->model);
    return (PyObject *)self->model;
}

static PyGetSetDef adamw_getset[] = {
    {"config", (getter)get_config, NULL, "dict(beta1, beta2, eps, weight_decay, decay_all)", NULL},
    {"model", (getter)get_model, NULL, "The _core.Model this optimizer updates.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef adamw_methods[] = {
    {"step", (PyCFunction)(void (*)(void))adamw_step, METH_VARARGS | METH_KEYWORDS,
     "step(lr, max_grad_norm=0.0)\n--\n\nOne AdamW step on every trainable tensor; returns the pre-clip grad norm."},
    {"has_state", (PyCFunction)adamw_has_state, METH_O, "has_state(name)\n--\n\n"},
    {"get_state", (PyCFunction)adamw_get_state, METH_O, "get_state(name)\n--\n\n(m, v, step) as copies."},
    {"set_state", (PyCFunction)(void (*)(void))adamw_set_state, METH_VARARGS | METH_KEYWORDS,
     "set_state(name, m, v, step)\n--\n\n"},
    {"update_norms", (PyCFunction)adamw_update_norms, METH_NOARGS,
     "update_norms()\n--\n\nL2 norm of the last update of each tensor (NaN where none)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject GzAdamW_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gozaru._core.AdamW",
    .tp_basicsize = sizeof(GzAdamWObject),
    .tp_dealloc = (destructor)adamw_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AdamW(model, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay_all=False)\n--\n\n"
              "torch.optim.AdamW semantics; no decay on biases and LayerNorm weights unless decay_all.",
    .tp_methods = adamw_methods,
    .tp_getset = adamw_getset,
    .tp_new = adamw_new,
};
