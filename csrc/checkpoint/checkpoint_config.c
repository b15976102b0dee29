/* checkpoint_config.c — the core config stored as attributes of /params, so the C side can
 * check a checkpoint against a model without parsing the JSON config. */
#include <math.h>
#include <stddef.h>
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
