/* rope_wrap.c — a model's rotary frequencies from/to Python (gz_model_set_rope, gz_model_rope). */
#include "pycore.h"

#include <float.h>

#include "args.h"
#include "call.h"

/* rope = (inv_freq: float32 [gz_model_rope_size], attention_factor: float); applied before the model is
 * shared, so the busy guard only covers a caller that passes a live model. */
int gzpy_model_apply_rope(GzModelObject *self, PyObject *rope) {
    if (!PyTuple_Check(rope) || PyTuple_GET_SIZE(rope) != 2) {
        PyErr_Format(PyExc_TypeError, "rope must be a tuple (inv_freq float32 array, attention_factor), got %.100s",
                     Py_TYPE(rope)->tp_name);
        return -1;
    }
    npy_intp want[1] = {gz_model_rope_size(self->model)};
    PyArrayObject *freq = gzpy_array(PyTuple_GET_ITEM(rope, 0), "rope inv_freq", NPY_FLOAT32, 1, want, "[rot/2]");
    if (!freq) return -1;
    double af;
    if (gzpy_float_arg(PyTuple_GET_ITEM(rope, 1), "rope attention_factor", 0.0, FLT_MAX, 0, &af) < 0) return -1;
    gzpy_call c;
    if (gzpy_call_begin(&c, self, 0) < 0) return -1;
    gz_status s = gz_model_set_rope(self->model, GZPY_F32(freq), (int)want[0], (float)af);
    return gzpy_call_end(&c, s);
}

PyObject *gzpy_model_get_rope(GzModelObject *self, void *closure) {
    (void)closure;
    const float *f;
    int n;
    float af;
    gz_status s = gz_model_rope(self->model, &f, &n, &af);
    if (s != GZ_OK) return gzpy_raise_status(s);
    npy_intp shape[1] = {n};
    PyArrayObject *a = gzpy_zeros_f32(1, shape);
    if (!a) return NULL;
    for (int i = 0; i < n; i++) GZPY_F32(a)[i] = f[i];
    PyObject *fa = gzpy_float32_obj(af);
    if (!fa) {
        Py_DECREF(a);
        return NULL;
    }
    return Py_BuildValue("(NN)", (PyObject *)a, fa);
}
