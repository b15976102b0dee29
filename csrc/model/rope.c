/* rope.c — the model's rotary frequencies and the cos/sin tables every backend's rotary op reads.
 *
 * The frequencies are per model, not a formula of the kernels: a caller that knows the config's RoPE type
 * (linear, llama3, YaRN, ...) computes them once (gozaru/engine/rope.py mirrors transformers' rope init
 * functions) and hands them over with gz_model_set_rope. Until then a model uses HF's default
 * base^(-2i/d), so a C caller without scaling needs nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model_internal.h"

int gz_model_rope_size(const gz_model *m) { return m->rot / 2; }

/* cos/sin [max_position_embeddings, rot/2], times the attention factor (HF multiplies both by
 * attention_scaling), float32 in the order of HF's GPTNeoXRotaryEmbedding: angle = float(p) * inv_freq. */
static gz_status build_tables(gz_model *m) {
    int half = m->rot / 2, P = m->cfg.max_position_embeddings;
    size_t count = (size_t)P * (half > 0 ? half : 1);
    float *c, *s, af = m->rope_attention_factor;
    GZ_TRY(gz_calloc((void **)&c, count, sizeof(float), "rotary cos table"));
    if (gz_calloc((void **)&s, count, sizeof(float), "rotary sin table") != GZ_OK) {
        free(c);
        return GZ_ERR_NOMEM;
    }
    for (int i = 0; i < half; i++)
        for (int p = 0; p < P; p++) {
            float f = (float)p * m->rope_inv_freq[i];
            c[(size_t)p * half + i] = cosf(f) * af;
            s[(size_t)p * half + i] = sinf(f) * af;
        }
    gz_status st = GZ_OK;
    if (!m->cos_t) st = m->be->alloc(m->be->ctx, (void **)&m->cos_t, count * sizeof(float), "rotary cos table");
    if (st == GZ_OK && !m->sin_t)
        st = m->be->alloc(m->be->ctx, (void **)&m->sin_t, count * sizeof(float), "rotary sin table");
    if (st == GZ_OK) st = m->be->upload(m->be->ctx, m->cos_t, c, count * sizeof(float));
    if (st == GZ_OK) st = m->be->upload(m->be->ctx, m->sin_t, s, count * sizeof(float));
    free(c);
    free(s);
    return st;
}

gz_status gz_model_rope_init_default(gz_model *m) {
    int half = m->rot / 2;
    GZ_TRY(gz_calloc((void **)&m->rope_inv_freq, half > 0 ? half : 1, sizeof(float), "rotary frequencies"));
    /* HF's default: 1 / base^(2i/d) in float32, d = rotary_ndims */
    for (int i = 0; i < half; i++)
        m->rope_inv_freq[i] = 1.0f / powf(m->cfg.rotary_emb_base, (float)(2 * i) / (float)m->rot_freq_dim);
    m->rope_attention_factor = 1.0f;
    return build_tables(m);
}

gz_status gz_model_set_rope(gz_model *m, const float *inv_freq, int n, float attention_factor) {
    if (!m) return gz_fail(GZ_ERR_VALUE, "model is NULL");
    int half = m->rot / 2;
    if (n != half || (n > 0 && !inv_freq))
        return gz_fail(GZ_ERR_VALUE, "rope: %d inverse frequencies given, the model rotates %d dims per head and "
                                     "needs %d", n, m->rot, half);
    for (int i = 0; i < n; i++)
        if (!isfinite(inv_freq[i]) || !(inv_freq[i] >= 0.0f))
            return gz_fail(GZ_ERR_VALUE, "rope: inverse frequency %d is %g (must be finite and >= 0)", i,
                           (double)inv_freq[i]);
    if (!isfinite(attention_factor) || !(attention_factor > 0.0f))
        return gz_fail(GZ_ERR_VALUE, "rope: attention factor %g must be finite and positive",
                       (double)attention_factor);
    float saved_af = m->rope_attention_factor;
    float *saved = NULL;
    GZ_TRY(gz_calloc((void **)&saved, half > 0 ? half : 1, sizeof(float), "rotary frequencies"));
    memcpy(saved, m->rope_inv_freq, sizeof(float) * (size_t)half);
    memcpy(m->rope_inv_freq, inv_freq, sizeof(float) * (size_t)n);
    m->rope_attention_factor = attention_factor;
    gz_status st = build_tables(m);
    if (st != GZ_OK) { /* keep the old frequencies with the old tables */
        memcpy(m->rope_inv_freq, saved, sizeof(float) * (size_t)half);
        m->rope_attention_factor = saved_af;
    }
    free(saved);
    return st;
}

gz_status gz_model_rope(const gz_model *m, const float **inv_freq, int *n, float *attention_factor) {
    if (!m || !inv_freq || !n || !attention_factor) return gz_fail(GZ_ERR_VALUE, "rope: NULL argument");
    *inv_freq = m->rope_inv_freq;
    *n = m->rot / 2;
    *attention_factor = m->rope_attention_factor;
    return GZ_OK;
}
