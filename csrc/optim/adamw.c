/* adamw.c — AdamW with torch.optim.AdamW semantics, global-norm clipping, lazy per-tensor state. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model/model_internal.h"

typedef struct {
    float *m, *v;       /* backend memory, NULL until the tensor is first stepped */
    int64_t step;
    float last_update_norm;
} tensor_state;

struct gz_adamw {
    gz_model *model;
    gz_adamw_config cfg;
    tensor_state *st;
};

static gz_status check_config(const gz_adamw_config *c) {
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f)) return gz_fail(GZ_ERR_VALUE, "AdamW beta1 = %g is outside [0, 1)", c->beta1);
    if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f)) return gz_fail(GZ_ERR_VALUE, "AdamW beta2 = %g is outside [0, 1)", c->beta2);
    if (!(c->eps >= 0.0f) || !isfinite(c->eps)) return gz_fail(GZ_ERR_VALUE, "AdamW eps = %g must be >= 0", c->eps);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return gz_fail(GZ_ERR_VALUE, "AdamW weight_decay = %g must be >= 0", c->weight_decay);
    return GZ_OK;
}

gz_status gz_adamw_create(gz_model *m, const gz_adamw_config *cfg, gz_adamw **out) {
    *out = NULL;
    if (!m || !cfg) return gz_fail(GZ_ERR_VALUE, "AdamW needs a model and a config");
    GZ_TRY(check_config(cfg));
    gz_adamw *o;
    GZ_TRY(gz_calloc((void **)&o, 1, sizeof *o, "optimizer"));
    if (gz_calloc((void **)&o->st, m->ntensors, sizeof *o->st, "optimizer state table") != GZ_OK) {
        free(o);
        return GZ_ERR_NOMEM;
    }
    for (int i = 0; i < m->ntensors; i++) o->st[i].last_update_norm = NAN;
    o->model = m;
    o->cfg = *cfg;
    *out = o;
    return GZ_OK;
}

void gz_adamw_free(gz_adamw *o) {
    if (!o) return;
    for (int i = 0; i < o->model->ntensors; i++) {
        if (o->st[i].m) o->model->be->release(o->model->be->ctx, o->st[i].m);
        if (o->st[i].v) o->model->be->release(o->model->be->ctx, o->st[i].v);
    }
    free(o->st);
    free(o);
}

const gz_adamw_config *gz_adamw_get_config(const gz_adamw *o) { return &o->cfg; }

static gz_status ensure_state(gz_adamw *o, int i) {
    tensor_state *s = &o->st[i];
    if (s->m) return GZ_OK;
    const gz_tensor_info *t = &o->model->tensors[i];
    char what[GZ_MAX_WHAT];
    snprintf(what, sizeof what, "AdamW moments of %s", t->name);
    size_t bytes = (size_t)t->numel * sizeof(float);
    GZ_TRY(o->model->be->alloc(o->model->be->ctx, (void **)&s->m, bytes, what));
    gz_status st = o->model->be->alloc(o->model->be->ctx, (void **)&s->v, bytes, what);
    if (st != GZ_OK) {
        o->model->be->release(o->model->be->ctx, s->m);
        s->m = NULL;
    }
    return st;
}

gz_status gz_adamw_check_lr(double lr) {
    if (!(lr >= 0.0 && lr <= FLT_MAX)) /* NaN fails both */
        return gz_fail(GZ_ERR_VALUE, "lr = %g must be a finite number in [0, %g] (a float32 >= 0)", lr, FLT_MAX);
    return GZ_OK;
}

gz_status gz_adamw_step(gz_adamw *o, double lr_in, float max_grad_norm, float *grad_norm_out) {
    gz_model *m = o->model;
    gz_backend *be = m->be;
    GZ_TRY(gz_adamw_check_lr(lr_in));
    float lr = (float)lr_in;
    if (isnan(max_grad_norm)) return gz_fail(GZ_ERR_VALUE, "max_grad_norm is NaN");
    /* 1. global norm; refuse non-finite gradients before touching anything */
    double total = 0.0;
    int any = 0;
    for (int i = 0; i < m->ntensors; i++) {
        if (!m->tensors[i].trainable) continue;
        double ss;
        GZ_TRY(be->sum_squares(be->ctx, m->grads[i], m->tensors[i].numel, &ss));
        if (!isfinite(ss))
            return gz_fail(GZ_ERR_VALUE, "non-finite gradient in %s (NaN or Inf); the step was not applied",
                           m->tensors[i].name);
        total += ss;
        any = 1;
    }
    if (!any) return gz_fail(GZ_ERR_STATE, "AdamW step: no tensor is trainable");
    float norm = (float)sqrt(total);
    if (grad_norm_out) *grad_norm_out = norm;
    float grad_scale = 1.0f;
    if (max_grad_norm > 0.0f) { /* torch.nn.utils.clip_grad_norm_ */
        float coef = max_grad_norm / (norm + 1e-6f);
        if (coef < 1.0f) grad_scale = coef;
    }
    /* 2. update every trainable tensor */
    for (int i = 0; i < m->ntensors; i++) {
        const gz_tensor_info *t = &m->tensors[i];
        if (!t->trainable) continue;
        GZ_TRY(ensure_state(o, i));
        tensor_state *s = &o->st[i];
        s->step++;
        double bc1 = 1.0 - pow((double)o->cfg.beta1, (double)s->step);
        double bc2 = 1.0 - pow((double)o->cfg.beta2, (double)s->step);
        float wd = (t->is_matrix_weight || o->cfg.decay_all) ? o->cfg.weight_decay : 0.0f;
        double upd_sq = 0.0;
        GZ_TRY(be->adamw_update(be->ctx, m->params + t->offset, m->grads[i], s->m, s->v, t->numel, lr, o->cfg.beta1,
                                o->cfg.beta2, o->cfg.eps, wd, (float)bc1, (float)bc2, grad_scale, &upd_sq));
        s->last_update_norm = (float)sqrt(upd_sq);
    }
    m->have_acts = 0;
    /* the host mirror is refreshed when next read (gz_model_sync_params_to_host), not every step */
    if (m->params != m->params_host) m->host_stale = 1;
    return be->synchronize(be->ctx);
}

int gz_adamw_has_state(const gz_adamw *o, int i) {
    return i >= 0 && i < o->model->ntensors && o->st[i].m != NULL;
}

gz_status gz_adamw_get_state(const gz_adamw *o, int i, float *m_out, float *v_out, int64_t *step_out) {
    if (i < 0 || i >= o->model->ntensors) return gz_fail(GZ_ERR_VALUE, "tensor index %d is out of range", i);
    const tensor_state *s = &o->st[i];
    if (!s->m) return gz_fail(GZ_ERR_VALUE, "%s has no optimizer state", o->model->tensors[i].name);
    size_t bytes = (size_t)o->model->tensors[i].numel * sizeof(float);
    if (m_out) GZ_TRY(o->model->be->download(o->model->be->ctx, m_out, s->m, bytes));
    if (v_out) GZ_TRY(o->model->be->download(o->model->be->ctx, v_out, s->v, bytes));
    if (step_out) *step_out = s->step;
    return GZ_OK;
}

gz_status gz_adamw_check_moments(const char *tensor, const float *m, const float *v, int64_t numel) {
    for (int64_t j = 0; j < numel; j++) {
        if (!isfinite(m[j]))
            return gz_fail(GZ_ERR_VALUE, "optimizer first moment of %s[%lld] is %g (must be finite)", tensor, (long long)j, (double)m[j]);
        /* sqrt(v) is the update's denominator: a negative or NaN v turns the parameter into NaN. */
        if (!(v[j] >= 0.0f) || !isfinite(v[j]))
            return gz_fail(GZ_ERR_VALUE, "optimizer second moment of %s[%lld] is %g (must be finite and >= 0)",
                           tensor, (long long)j, (double)v[j]);
    }
    return GZ_OK;
}

gz_status gz_adamw_set_state(gz_adamw *o, int i, const float *m_in, const float *v_in, int64_t step) {
    if (i < 0 || i >= o->model->ntensors) return gz_fail(GZ_ERR_VALUE, "tensor index %d is out of range", i);
    if (step < 0) return gz_fail(GZ_ERR_VALUE, "optimizer step = %lld must be >= 0", (long long)step);
    if (!m_in || !v_in) return gz_fail(GZ_ERR_VALUE, "optimizer state buffers are NULL");
    GZ_TRY(gz_adamw_check_moments(o->model->tensors[i].name, m_in, v_in, o->model->tensors[i].numel));
    GZ_TRY(ensure_state(o, i));
    size_t bytes = (size_t)o->model->tensors[i].numel * sizeof(float);
    GZ_TRY(o->model->be->upload(o->model->be->ctx, o->st[i].m, m_in, bytes));
    GZ_TRY(o->model->be->upload(o->model->be->ctx, o->st[i].v, v_in, bytes));
    o->st[i].step = step;
    return GZ_OK;
}

gz_status gz_adamw_update_norms(const gz_adamw *o, float *out) {
    for (int i = 0; i < o->model->ntensors; i++) out[i] = o->st[i].last_update_norm;
    return GZ_OK;
}
