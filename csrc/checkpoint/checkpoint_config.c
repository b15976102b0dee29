/* checkpoint_config.c — the core config stored as attributes of /params, so the C side can
 * check a checkpoint against a model without parsing the JSON config. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include "checkpoint_internal.h"

typedef struct {
    const char *name;
    size_t offset;
    int is_float;
    int optional;     /* added after version 1 files were written: absent means the GPT-NeoX value */
    int64_t absent;
} config_field;

#define INT_FIELD(f) {#f, offsetof(gz_config, f), 0, 0, 0}
#define FLOAT_FIELD(f) {#f, offsetof(gz_config, f), 1, 0, 0}
#define FAMILY_FIELD(f, absent) {#f, offsetof(gz_config, f), 0, 1, absent}

static const config_field k_fields[] = {
    INT_FIELD(vocab_size),        INT_FIELD(hidden_size),
    INT_FIELD(num_hidden_layers), INT_FIELD(num_attention_heads),
    INT_FIELD(intermediate_size), FLOAT_FIELD(rotary_pct),
    FLOAT_FIELD(rotary_emb_base), INT_FIELD(max_position_embeddings),
    FLOAT_FIELD(layer_norm_eps),  INT_FIELD(use_parallel_residual),
    INT_FIELD(tie_word_embeddings),
    FAMILY_FIELD(arch, GZ_ARCH_GPT_NEOX), FAMILY_FIELD(norm_kind, GZ_NORM_LAYERNORM),
    FAMILY_FIELD(mlp_kind, GZ_MLP_GELU),  FAMILY_FIELD(num_key_value_heads, -1),
    FAMILY_FIELD(qkv_bias, 1),
};
#define N_FIELDS ((int)(sizeof k_fields / sizeof k_fields[0]))

gz_status ckpt_write_config(const char *file, hid_t params, const gz_config *cfg) {
    const char *base = (const char *)cfg;
    for (int i = 0; i < N_FIELDS; i++) {
        const config_field *f = &k_fields[i];
        if (f->is_float)
            GZ_TRY(ckpt_write_attr_f32(file, params, "/params", f->name, (const float *)(base + f->offset), 1));
        else
            GZ_TRY(ckpt_write_attr_i64(file, params, "/params", f->name, *(const int *)(base + f->offset)));
    }
    return GZ_OK;
}

gz_status ckpt_check_config(const char *file, hid_t params, const gz_config *cfg) {
    const char *base = (const char *)cfg;
    for (int i = 0; i < N_FIELDS; i++) {
        const config_field *f = &k_fields[i];
        if (f->is_float) {
            float stored, want = *(const float *)(base + f->offset);
            GZ_TRY(ckpt_read_attr_f32(file, params, "/params", f->name, &stored, 1));
            /* Both sides hold the same float32 rounding of the config value: compare exactly. */
            if (stored != want && !(isnan(stored) && isnan(want)))
                return gz_fail(GZ_ERR_FORMAT, "%s: config mismatch: %s is %g in the checkpoint, %g in the model",
                               file, f->name, (double)stored, (double)want);
        } else {
            int64_t stored, want = *(const int *)(base + f->offset);
            if (f->optional && H5Aexists(params, f->name) == 0) /* older file: a GPT-NeoX model */
                stored = f->absent >= 0 ? f->absent : cfg->num_attention_heads;
            else
                GZ_TRY(ckpt_read_attr_i64(file, params, "/params", f->name, &stored));
            if (stored != want)
                return gz_fail(GZ_ERR_FORMAT, "%s: config mismatch: %s is %lld in the checkpoint, %lld in the model",
                               file, f->name, (long long)stored, (long long)want);
        }
    }
    return GZ_OK;
}

/* The rotary frequencies and attention factor (gz_model_set_rope): a model with other RoPE scaling computes
 * other numbers from the same weights, so a checkpoint names them. Files written before RoPE scaling existed
 * have neither attribute and hold default-RoPE models. */
gz_status ckpt_write_rope(const char *file, hid_t params, const gz_model *m) {
    const float *f;
    int n;
    float af;
    GZ_TRY(gz_model_rope(m, &f, &n, &af));
    GZ_TRY(ckpt_write_attr_f32(file, params, "/params", "rope_attention_factor", &af, 1));
    if (n > 0) GZ_TRY(ckpt_write_attr_f32(file, params, "/params", "rope_inv_freq", f, n));
    return GZ_OK;
}

gz_status ckpt_check_rope(const char *file, hid_t params, const gz_model *m) {
    htri_t has = H5Aexists(params, "rope_attention_factor");
    if (has < 0) return gz_fail(GZ_ERR_FORMAT, "%s: reading attributes of /params failed", file);
    if (!has) return GZ_OK;
    const float *f;
    int n;
    float af, stored_af;
    GZ_TRY(gz_model_rope(m, &f, &n, &af));
    GZ_TRY(ckpt_read_attr_f32(file, params, "/params", "rope_attention_factor", &stored_af, 1));
    if (stored_af != af)
        return gz_fail(GZ_ERR_FORMAT, "%s: config mismatch: rope attention factor is %g in the checkpoint, %g in "
                                      "the model (rope_scaling differs)", file, (double)stored_af, (double)af);
    if (n == 0) return GZ_OK;
    float *stored;
    GZ_TRY(gz_calloc((void **)&stored, n, sizeof(float), "rotary frequencies"));
    gz_status st = ckpt_read_attr_f32(file, params, "/params", "rope_inv_freq", stored, n);
    for (int i = 0; i < n && st == GZ_OK; i++)
        if (stored[i] != f[i])
            st = gz_fail(GZ_ERR_FORMAT, "%s: config mismatch: rope inverse frequency %d is %g in the checkpoint, "
                                        "%g in the model (rope_scaling differs)", file, i, (double)stored[i],
                         (double)f[i]);
    free(stored);
    return st;
}
