/* model.c — a model instance: creation from a config (config.c has the tensor table), initialisation, parameter
 * views and trainable flags. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"

gz_status gz_model_create(const gz_config *cfg, gz_backend_kind backend, gz_model **out) {
    return gz_model_create_lora(cfg, backend, NULL, 0, out);
}

gz_status gz_model_create_lora(const gz_config *cfg, gz_backend_kind backend, const gz_lora_spec *lora, int nlora,
                               gz_model **out) {
    if (!out) return gz_fail(GZ_ERR_VALUE, "output pointer is NULL");
    *out = NULL;
    GZ_TRY(gz_config_validate(cfg));
    {   /* adapters checked before anything is allocated */
        int nb = gz_build_specs(cfg, NULL, NULL, NULL);
        gz_tensor_spec *base;
        GZ_TRY(gz_calloc((void **)&base, nb, sizeof *base, "tensor specs"));
        gz_build_specs(cfg, base, NULL, NULL);
        gz_status vs = gz_lora_build_specs(cfg, base, nb, lora, nlora, NULL);
        free(base);
        GZ_TRY(vs);
    }
    gz_backend *be;
    GZ_TRY(gz_backend_create(backend, &be));
    gz_model *m;
    gz_status cst = gz_calloc((void **)&m, 1, sizeof *m, "model");
    if (cst != GZ_OK) {
        gz_backend_free(be);
        return cst;
    }
    m->cfg = *cfg;
    m->kind = backend;
    m->be = be;
    m->L = cfg->num_hidden_layers;
    m->C = cfg->hidden_size;
    m->NH = cfg->num_attention_heads;
    m->NKV = cfg->num_key_value_heads;
    m->HS = m->C / m->NH;
    m->I = cfg->intermediate_size;
    m->V = cfg->vocab_size;
    /* HF: rotary_ndims = int(head_size * rotary_pct); an odd count d rotates d + 1 dims with
     * frequencies base^(-2i/d) (its cos/sin tables have 2 * ceil(d/2) columns). */
    m->rot_freq_dim = (int)(m->HS * cfg->rotary_pct);
    m->rot = m->rot_freq_dim + (m->rot_freq_dim % 2);

    gz_status st;
    int nbase = gz_build_specs(cfg, NULL, NULL, NULL), n = nbase + 2 * nlora;
    gz_tensor_spec *specs = NULL;
    if ((st = gz_calloc((void **)&specs, n, sizeof *specs, "tensor specs")) ||
        (st = gz_calloc((void **)&m->lt, m->L, sizeof *m->lt, "layer table")) ||
        (st = gz_calloc((void **)&m->tensors, n, sizeof *m->tensors, "tensor table")) ||
        (st = gz_calloc((void **)&m->tensor_pos, n, sizeof *m->tensor_pos, "tensor positions")) ||
        (st = gz_calloc((void **)&m->grads, n, sizeof *m->grads, "gradient table")) ||
        (st = gz_calloc((void **)&m->name_storage, n, GZ_MAX_NAME, "tensor names")) ||
        (st = gz_calloc((void **)&m->acts, m->L, sizeof *m->acts, "activation table")) ||
        (st = gz_calloc((void **)&m->res, m->L + 1, sizeof *m->res, "residual table")))
        goto fail;
    gz_global_tensors gt;
    gz_build_specs(cfg, specs, m->lt, &gt);
    if ((st = gz_lora_build_specs(cfg, specs, nbase, lora, nlora, specs + nbase))) goto fail;
    m->ntensors = n;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        char *nm = m->name_storage + (size_t)i * GZ_MAX_NAME;
        memcpy(nm, specs[i].name, GZ_MAX_NAME);
        gz_tensor_info *t = &m->tensors[i];
        t->name = nm;
        t->ndim = specs[i].ndim;
        t->shape[0] = specs[i].shape[0];
        t->shape[1] = specs[i].ndim == 2 ? specs[i].shape[1] : 0;
        t->numel = specs[i].shape[0] * (specs[i].ndim == 2 ? specs[i].shape[1] : 1);
        t->offset = off;
        t->layer = specs[i].layer;
        t->is_matrix_weight = specs[i].is_matrix_weight;
        t->kind = specs[i].kind;
        t->trainable = 0;
        m->tensor_pos[i] = specs[i].pos;
        off += t->numel;
    }
    m->nparams = off;
    m->embed = gt.embed;
    m->lnf_w = gt.lnf_w;
    m->lnf_b = gt.lnf_b;
    m->head = gt.head;
    free(specs);
    specs = NULL;
    if ((st = gz_lora_setup(m, lora, nlora, nbase))) goto fail;

    if ((st = gz_calloc((void **)&m->params_host, (size_t)m->nparams, sizeof(float), "parameters (host)")))
        goto fail;
    if (backend == GZ_BACKEND_CPU) {
        m->params = m->params_host;
    } else if ((st = be->alloc(be->ctx, (void **)&m->params, (size_t)m->nparams * sizeof(float), "parameters"))) {
        goto fail;
    }
    if ((st = gz_model_rope_init_default(m))) goto fail;
    *out = m;
    return GZ_OK;
fail:
    free(specs);
    gz_model_free(m);
    return st;
}

void gz_model_free(gz_model *m) {
    if (!m) return;
    gz_model_free_activations(m);
    if (m->grads)
        for (int i = 0; i < m->ntensors; i++) m->be->release(m->be->ctx, m->grads[i]);
    if (m->params && m->params != m->params_host) m->be->release(m->be->ctx, m->params);
    if (m->cos_t) m->be->release(m->be->ctx, m->cos_t);
    if (m->sin_t) m->be->release(m->be->ctx, m->sin_t);
    free(m->rope_inv_freq);
    gz_lora_free(m);
    free(m->params_host);
    free(m->grads);
    free(m->tensors);
    free(m->tensor_pos);
    free(m->name_storage);
    free(m->lt);
    free(m->acts);
    free(m->res);
    gz_backend_free(m->be);
    free(m);
}

const gz_config *gz_model_config(const gz_model *m) { return &m->cfg; }
gz_backend_kind gz_model_backend(const gz_model *m) { return m->kind; }
const char *gz_model_precision(const gz_model *m) { return gz_precision_name(m->be->precision(m->be->ctx)); }

gz_status gz_model_set_precision(gz_model *m, const char *precision) {
    gz_precision p;
    if (gz_precision_parse(precision, &p) != 0) {
        char list[GZ_PRECISION_LIST];
        return gz_fail(GZ_ERR_VALUE, "unknown precision '%s': choose one of %s", precision ? precision : "(null)",
                       gz_precision_list(list, sizeof list, GZ_PRECISION_ALL));
    }
    GZ_TRY(m->be->set_precision(m->be->ctx, p));
    m->have_acts = 0; /* saved activations were computed in the old precision */
    return GZ_OK;
}
int gz_model_num_tensors(const gz_model *m) { return m->ntensors; }
int64_t gz_model_num_params(const gz_model *m) { return m->nparams; }

gz_status gz_model_tensor(const gz_model *m, int index, gz_tensor_info *out) {
    if (index < 0 || index >= m->ntensors)
        return gz_fail(GZ_ERR_VALUE, "tensor index %d is out of range (0..%d)", index, m->ntensors - 1);
    *out = m->tensors[index];
    return GZ_OK;
}

int gz_model_find_tensor(const gz_model *m, const char *name) {
    if (!name) return -1;
    for (int i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return i;
    return -1;
}

gz_status gz_model_init_random(gz_model *m, uint64_t seed, float std) {
    if (!(std >= 0.0f) || !isfinite(std)) return gz_fail(GZ_ERR_VALUE, "init std = %g must be >= 0", std);
    gz_rng rng;
    gz_rng_seed(&rng, seed);
    for (int i = 0; i < m->ntensors; i++) {
        const gz_tensor_info *t = &m->tensors[i];
        float *p = m->params_host + t->offset;
        int is_ln_weight = !t->is_matrix_weight && strstr(t->name, "layernorm.weight") != NULL;
        int is_final_ln_weight = i == m->lnf_w;
        for (int64_t j = 0; j < t->numel; j++)
            p[j] = t->is_matrix_weight ? std * gz_rng_normal(&rng) : (is_ln_weight || is_final_ln_weight) ? 1.0f : 0.0f;
    }
    m->host_stale = 0; /* every parameter was just written on the host */
    GZ_TRY(gz_model_params_changed(m));
    return gz_model_init_lora(m, seed); /* adapters (after every base tensor): PEFT's init instead */
}

float *gz_model_params_host(gz_model *m) { return m->params_host; }

gz_status gz_model_params_changed(gz_model *m) {
    m->have_acts = 0; /* saved activations no longer match the weights */
    if (m->be->weights_written) m->be->weights_written(m->be->ctx, NULL, 0); /* bf16 copies: precision.h */
    if (m->params == m->params_host) return GZ_OK;
    /* Uploading a stale mirror would silently undo the training steps it has not seen. */
    if (m->host_stale)
        return gz_fail(GZ_ERR_STATE, "params_changed(): the host copy of the parameters is older than the device's "
                                     "(a training step ran since it was last read); call sync_to_host() before "
                                     "writing into parameter views");
    return m->be->upload(m->be->ctx, m->params, m->params_host, (size_t)m->nparams * sizeof(float));
}

gz_status gz_model_sync_params_to_host(gz_model *m) {
    if (m->params == m->params_host || !m->host_stale) return GZ_OK;
    GZ_TRY(m->be->download(m->be->ctx, m->params_host, m->params, (size_t)m->nparams * sizeof(float)));
    m->host_stale = 0;
    return GZ_OK;
}

int gz_model_min_trainable_pos(const gz_model *m) {
    int p = INT_MAX;
    for (int i = 0; i < m->ntensors; i++)
        if (m->tensors[i].trainable && m->tensor_pos[i] < p) p = m->tensor_pos[i];
    return p;
}

gz_status gz_model_set_trainable(gz_model *m, int index, int trainable) {
    if (index < 0 || index >= m->ntensors)
        return gz_fail(GZ_ERR_VALUE, "tensor index %d is out of range (0..%d)", index, m->ntensors - 1);
    gz_tensor_info *t = &m->tensors[index];
    trainable = trainable ? 1 : 0;
    if (t->trainable == trainable) return GZ_OK;
    if (trainable) {
        char what[GZ_MAX_WHAT];
        snprintf(what, sizeof what, "gradient of %s", t->name);
        GZ_TRY(m->be->alloc(m->be->ctx, (void **)&m->grads[index], (size_t)t->numel * sizeof(float), what));
    } else {
        m->be->release(m->be->ctx, m->grads[index]);
        m->grads[index] = NULL;
    }
    t->trainable = trainable;
    /* the backward stop may have moved below what the last forward kept */
    m->have_acts = 0;
    return GZ_OK;
}

int gz_model_is_trainable(const gz_model *m, int index) {
    return index >= 0 && index < m->ntensors && m->tensors[index].trainable;
}

gz_status gz_model_zero_grad(gz_model *m) {
    for (int i = 0; i < m->ntensors; i++)
        if (m->grads[i]) GZ_TRY(m->be->zero(m->be->ctx, m->grads[i], (size_t)m->tensors[i].numel * sizeof(float)));
    return GZ_OK;
}

gz_status gz_model_grad(gz_model *m, int index, float *out) {
    if (index < 0 || index >= m->ntensors)
        return gz_fail(GZ_ERR_VALUE, "tensor index %d is out of range (0..%d)", index, m->ntensors - 1);
    if (!m->grads[index])
        return gz_fail(GZ_ERR_VALUE, "%s is frozen: it has no gradient", m->tensors[index].name);
    return m->be->download(m->be->ctx, out, m->grads[index], (size_t)m->tensors[index].numel * sizeof(float));
}

gz_status gz_model_grad_norms(gz_model *m, float *out) {
    for (int i = 0; i < m->ntensors; i++) {
        if (!m->grads[i]) {
            out[i] = NAN;
            continue;
        }
        double ss;
        GZ_TRY(m->be->sum_squares(m->be->ctx, m->grads[i], m->tensors[i].numel, &ss));
        out[i] = (float)sqrt(ss);
    }
    return GZ_OK;
}
