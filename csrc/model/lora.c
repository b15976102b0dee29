/* lora.c — LoRA adapters on Linear weights: their rows of the tensor table, PEFT's initialisation, the adapter
 * table of a model and the term each adapter adds to its Linear (gz_lora_term_of; the math is the one linear
 * op's, linear.c, which training, evaluation and generation share). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "linear.h"

static int adaptable(const char *kind) {
    return !strcmp(kind, "qkv") || !strcmp(kind, "attn_out") || !strcmp(kind, "mlp_gate") || !strcmp(kind, "mlp_up") ||
           !strcmp(kind, "mlp_down") || !strcmp(kind, "head");
}

/* PEFT's saved name: base_model.model.<W's name without ".weight">.lora_A.weight */
static gz_status adapter_name(char *out, size_t size, const char *w_name, char which) {
    size_t len = strlen(w_name), suffix = strlen(".weight");
    if (len <= suffix || strcmp(w_name + len - suffix, ".weight"))
        return gz_fail(GZ_ERR_VALUE, "LoRA target %s is not a weight", w_name);
    int k = snprintf(out, size, "base_model.model.%.*s.lora_%c.weight", (int)(len - suffix), w_name, which);
    if (k < 0 || (size_t)k >= size) return gz_fail(GZ_ERR_VALUE, "LoRA adapter name for %s is too long", w_name);
    return GZ_OK;
}

gz_status gz_lora_build_specs(const gz_config *cfg, const gz_tensor_spec *base, int nbase, const gz_lora_spec *ls,
                              int n, gz_tensor_spec *specs) {
    (void)cfg;
    if (n < 0 || n > nbase) return gz_fail(GZ_ERR_VALUE, "LoRA: %d adapters for %d tensors", n, nbase);
    if (n > 0 && !ls) return gz_fail(GZ_ERR_VALUE, "LoRA: adapter specs are NULL");
    for (int i = 0; i < n; i++) {
        int t = ls[i].target;
        if (t < 0 || t >= nbase)
            return gz_fail(GZ_ERR_VALUE, "LoRA adapter %d: target tensor index %d is out of range (0..%d)", i, t,
                           nbase - 1);
        const gz_tensor_spec *w = &base[t];
        if (w->ndim != 2 || !adaptable(w->kind))
            return gz_fail(GZ_ERR_VALUE, "LoRA target %s (kind %s) is not a Linear weight: adapters go on "
                                         "Linear weights (attention, MLP or the untied LM head)",
                           w->name, w->kind);
        int64_t out_f = w->shape[0], in_f = w->shape[1], lim = out_f < in_f ? out_f : in_f;
        if (ls[i].r <= 0 || ls[i].r > lim)
            return gz_fail(GZ_ERR_VALUE, "LoRA rank r = %d for %s is out of range (1..%lld, the smaller dimension "
                                         "of its shape [%lld, %lld])", ls[i].r, w->name, (long long)lim,
                           (long long)out_f, (long long)in_f);
        if (!isfinite(ls[i].scale))
            return gz_fail(GZ_ERR_VALUE, "LoRA scale %g for %s is not finite", ls[i].scale, w->name);
        for (int j = 0; j < i; j++)
            if (ls[j].target == t) return gz_fail(GZ_ERR_VALUE, "LoRA: two adapters on %s", w->name);
        if (!specs) continue;
        gz_tensor_spec *a = &specs[2 * i], *b = &specs[2 * i + 1];
        *a = *w;
        *b = *w;
        GZ_TRY(adapter_name(a->name, sizeof a->name, w->name, 'A'));
        GZ_TRY(adapter_name(b->name, sizeof b->name, w->name, 'B'));
        a->shape[0] = ls[i].r; /* A [r, in] */
        b->shape[1] = ls[i].r; /* B [out, r] */
        a->kind = "lora_A";
        b->kind = "lora_B";
    }
    return GZ_OK;
}

gz_status gz_lora_setup(gz_model *m, const gz_lora_spec *ls, int n, int nbase) {
    GZ_TRY(gz_calloc((void **)&m->lora_at, (size_t)m->ntensors, sizeof(int), "LoRA table"));
    for (int i = 0; i < m->ntensors; i++) m->lora_at[i] = -1;
    if (n == 0) return GZ_OK;
    GZ_TRY(gz_calloc((void **)&m->lora, (size_t)n, sizeof *m->lora, "LoRA adapters"));
    m->nlora = n;
    for (int i = 0; i < n; i++) {
        m->lora[i] = (gz_lora){ls[i].target, nbase + 2 * i, nbase + 2 * i + 1, ls[i].r, ls[i].scale};
        m->lora_at[ls[i].target] = i;
    }
    return GZ_OK;
}

void gz_lora_free(gz_model *m) {
    if (m->be) {
        if (m->lora_xa) m->be->release(m->be->ctx, m->lora_xa);
        if (m->lora_tmp) m->be->release(m->be->ctx, m->lora_tmp);
    }
    m->lora_xa = m->lora_tmp = NULL;
    m->lora_cap_N = 0;
    free(m->lora);
    free(m->lora_at);
    m->lora = NULL;
    m->lora_at = NULL;
    m->nlora = 0;
}

/* Scratch for N tokens, grown on demand (training batches and generation steps share it). */
static gz_status ensure_scratch(gz_model *m, int64_t N) {
    if (N <= m->lora_cap_N) return GZ_OK;
    int64_t rmax = 0, wmax = 0;
    for (int i = 0; i < m->nlora; i++) {
        const gz_tensor_info *w = &m->tensors[m->lora[i].target];
        if (m->lora[i].r > rmax) rmax = m->lora[i].r;
        if (w->shape[0] > wmax) wmax = w->shape[0];
        if (w->shape[1] > wmax) wmax = w->shape[1];
    }
    gz_backend *be = m->be;
    if (m->lora_xa) be->release(be->ctx, m->lora_xa);
    if (m->lora_tmp) be->release(be->ctx, m->lora_tmp);
    m->lora_xa = m->lora_tmp = NULL;
    m->lora_cap_N = 0;
    GZ_TRY(be->alloc(be->ctx, (void **)&m->lora_xa, (size_t)(2 * N * rmax) * sizeof(float), "LoRA scratch"));
    GZ_TRY(be->alloc(be->ctx, (void **)&m->lora_tmp, (size_t)(N * wmax) * sizeof(float), "LoRA scratch"));
    m->lora_cap_N = N;
    return GZ_OK;
}

gz_status gz_lora_term_of(gz_model *m, int w, int64_t N, gz_lora_term *out) {
    *out = (gz_lora_term){0};
    int i = m->lora_at ? m->lora_at[w] : -1;
    if (i < 0) return GZ_OK;
    const gz_lora *ad = &m->lora[i];
    GZ_TRY(ensure_scratch(m, N));
    *out = (gz_lora_term){.A = GZ_P(m, ad->a), .B = GZ_P(m, ad->b), .dA = m->grads[ad->a], .dB = m->grads[ad->b],
                          .r = ad->r, .scale = ad->scale, .xa = m->lora_xa, .tmp = m->lora_tmp};
    return GZ_OK;
}

/* ---------------------------------------------------------------- public */
gz_status gz_model_init_lora(gz_model *m, uint64_t seed) {
    gz_rng rng;
    gz_rng_seed(&rng, seed);
    for (int i = 0; i < m->nlora; i++) {
        const gz_tensor_info *a = &m->tensors[m->lora[i].a], *b = &m->tensors[m->lora[i].b];
        float bound = 1.0f / sqrtf((float)a->shape[1]);
        float *pa = m->params_host + a->offset, *pb = m->params_host + b->offset;
        for (int64_t j = 0; j < a->numel; j++) pa[j] = bound * (2.0f * gz_rng_uniform(&rng) - 1.0f);
        memset(pb, 0, (size_t)b->numel * sizeof(float));
    }
    if (m->nlora == 0) return GZ_OK;
    if (m->params != m->params_host) { /* write only the adapters: the base on the device may be newer */
        for (int i = 0; i < m->nlora; i++)
            for (int k = 0; k < 2; k++) {
                const gz_tensor_info *t = &m->tensors[k ? m->lora[i].b : m->lora[i].a];
                GZ_TRY(m->be->upload(m->be->ctx, m->params + t->offset, m->params_host + t->offset,
                                     (size_t)t->numel * sizeof(float)));
            }
    }
    m->have_acts = 0;
    return GZ_OK;
}

int gz_model_num_lora(const gz_model *m) { return m->nlora; }

gz_status gz_model_lora(const gz_model *m, int i, gz_lora_spec *spec, int *a_index, int *b_index) {
    if (i < 0 || i >= m->nlora) return gz_fail(GZ_ERR_VALUE, "LoRA adapter index %d is out of range", i);
    if (spec) *spec = (gz_lora_spec){m->lora[i].target, m->lora[i].r, m->lora[i].scale};
    if (a_index) *a_index = m->lora[i].a;
    if (b_index) *b_index = m->lora[i].b;
    return GZ_OK;
}
