/* config.c — what is a valid model config, and the tensor table it implies (GPT-NeoX or Llama family). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "model_internal.h"

gz_status gz_config_validate(const gz_config *c) {
    if (!c) return gz_fail(GZ_ERR_VALUE, "config is NULL");
#define POSITIVE(f, lim)                                                                         \
    if (c->f <= 0 || c->f > (lim)) return gz_fail(GZ_ERR_VALUE, "config." #f " = %d is out of range (1..%d)", \
                                                  c->f, (int)(lim))
    POSITIVE(vocab_size, GZ_MAX_VOCAB);
    POSITIVE(hidden_size, GZ_MAX_HIDDEN);
    POSITIVE(num_hidden_layers, GZ_MAX_LAYERS);
    POSITIVE(num_attention_heads, GZ_MAX_HEADS);
    POSITIVE(intermediate_size, GZ_MAX_INTERMEDIATE);
    POSITIVE(max_position_embeddings, GZ_MAX_POSITIONS);
#undef POSITIVE
    if (c->hidden_size % c->num_attention_heads)
        return gz_fail(GZ_ERR_VALUE, "config.hidden_size = %d is not divisible by num_attention_heads = %d",
                       c->hidden_size, c->num_attention_heads);
    if (!(c->rotary_pct >= 0.0f && c->rotary_pct <= 1.0f))
        return gz_fail(GZ_ERR_VALUE, "config.rotary_pct = %g is outside [0, 1]", c->rotary_pct);
    if (!(c->rotary_emb_base > 0.0f) || !isfinite(c->rotary_emb_base))
        return gz_fail(GZ_ERR_VALUE, "config.rotary_emb_base = %g must be positive", c->rotary_emb_base);
    if (!(c->layer_norm_eps > 0.0f) || !isfinite(c->layer_norm_eps))
        return gz_fail(GZ_ERR_VALUE, "config.layer_norm_eps = %g must be positive", c->layer_norm_eps);
    {
        int hs = c->hidden_size / c->num_attention_heads, rot = (int)(hs * c->rotary_pct);
        if (rot % 2 && rot + 1 > hs)
            return gz_fail(GZ_ERR_VALUE, "config: head size %d with rotary_pct = %g gives an odd rotary dimension %d "
                                         "that cannot be rounded up within the head", hs, c->rotary_pct, rot);
    }
    if (c->num_key_value_heads <= 0 || c->num_key_value_heads > c->num_attention_heads ||
        c->num_attention_heads % c->num_key_value_heads)
        return gz_fail(GZ_ERR_VALUE, "config.num_key_value_heads = %d must divide num_attention_heads = %d",
                       c->num_key_value_heads, c->num_attention_heads);
    if (c->arch == GZ_ARCH_GPT_NEOX) {
        if (c->tie_word_embeddings)
            return gz_fail(GZ_ERR_VALUE, "config.tie_word_embeddings is not supported: GPT-NeoX keeps embed_out separate");
        if (c->norm_kind != GZ_NORM_LAYERNORM || c->mlp_kind != GZ_MLP_GELU)
            return gz_fail(GZ_ERR_VALUE, "config: a GPT-NeoX model has LayerNorm (norm_kind %d) and a GELU MLP (mlp_kind "
                                         "%d); got norm_kind %d, mlp_kind %d", GZ_NORM_LAYERNORM, GZ_MLP_GELU,
                           c->norm_kind, c->mlp_kind);
        if (c->num_key_value_heads != c->num_attention_heads || !c->qkv_bias)
            return gz_fail(GZ_ERR_VALUE, "config: a GPT-NeoX model's fused query_key_value has every head and a bias "
                                         "(num_key_value_heads = num_attention_heads, qkv_bias = 1)");
    } else if (c->arch == GZ_ARCH_LLAMA) {
        if (c->norm_kind != GZ_NORM_RMSNORM || c->mlp_kind != GZ_MLP_SWIGLU)
            return gz_fail(GZ_ERR_VALUE, "config: a Llama-family model has RMSNorm (norm_kind %d) and a SwiGLU MLP "
                                         "(mlp_kind %d); got norm_kind %d, mlp_kind %d", GZ_NORM_RMSNORM, GZ_MLP_SWIGLU,
                           c->norm_kind, c->mlp_kind);
        if (c->use_parallel_residual)
            return gz_fail(GZ_ERR_VALUE, "config.use_parallel_residual: Llama-family blocks are sequential");
    } else {
        return gz_fail(GZ_ERR_VALUE, "config.arch = %d is unknown (%d GPT-NeoX, %d Llama)", c->arch, GZ_ARCH_GPT_NEOX,
                       GZ_ARCH_LLAMA);
    }
    return GZ_OK;
}

/* ---------------------------------------------------------------- tensor table */
/* The one description of the model's structure: names, shapes, layer index and kind of every tensor.
 * Python reads it through _core.tensor_table (no weights allocated), so nothing re-parses names. */
static void spec(gz_tensor_spec *s, const char *name, int64_t d0, int64_t d1, int layer, int pos, const char *kind,
                 int is_matrix) {
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = d1 ? 2 : 1;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->layer = layer;
    s->pos = pos;
    s->kind = kind;
    s->is_matrix_weight = is_matrix;
}

int gz_build_specs(const gz_config *c, gz_tensor_spec *specs, gz_layer_tensors *lt, gz_global_tensors *gt) {
    int n = 0, L = c->num_hidden_layers, llama = c->arch == GZ_ARCH_LLAMA;
    int64_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int64_t HS = C / c->num_attention_heads, KV = (int64_t)c->num_key_value_heads * HS;
    const char *prefix = llama ? "model" : "gpt_neox";
    char buf[GZ_MAX_NAME];
    gz_global_tensors g = {0, -1, -1, -1};
#define GLOBAL(field, suffix, d0, d1, layer, pos, kind, mat)                                    \
    do {                                                                                          \
        snprintf(buf, sizeof buf, "%s", suffix);                                                  \
        if (specs) spec(&specs[n], buf, d0, d1, layer, pos, kind, mat);                           \
        g.field = n++;                                                                            \
    } while (0)
    GLOBAL(embed, llama ? "model.embed_tokens.weight" : "gpt_neox.embed_in.weight", V, C, -1, GZ_POS_EMBED, "embed", 1);
    for (int l = 0; l < L; l++) {
        gz_layer_tensors t;
        memset(&t, -1, sizeof t); /* every index -1: absent unless listed below */
#define LAYER(field, suffix, d0, d1, k, kind, mat)                                              \
    do {                                                                                          \
        snprintf(buf, sizeof buf, "%s.layers.%d.%s", prefix, l, suffix);                          \
        if (specs) spec(&specs[n], buf, d0, d1, l, GZ_POS_LAYER(l, k), kind, mat);                \
        t.field = n++;                                                                            \
    } while (0)
        if (llama) {
            LAYER(q_w, "self_attn.q_proj.weight", C, C, 1, "qkv", 1);
            if (c->qkv_bias) LAYER(q_b, "self_attn.q_proj.bias", C, 0, 1, "qkv", 0);
            LAYER(k_w, "self_attn.k_proj.weight", KV, C, 1, "qkv", 1);
            if (c->qkv_bias) LAYER(k_b, "self_attn.k_proj.bias", KV, 0, 1, "qkv", 0);
            LAYER(v_w, "self_attn.v_proj.weight", KV, C, 1, "qkv", 1);
            if (c->qkv_bias) LAYER(v_b, "self_attn.v_proj.bias", KV, 0, 1, "qkv", 0);
            LAYER(dense_w, "self_attn.o_proj.weight", C, C, 2, "attn_out", 1);
            LAYER(gate_w, "mlp.gate_proj.weight", I, C, 4, "mlp_gate", 1);
            LAYER(fc_w, "mlp.up_proj.weight", I, C, 4, "mlp_up", 1);
            LAYER(proj_w, "mlp.down_proj.weight", C, I, 5, "mlp_down", 1);
            LAYER(ln1_w, "input_layernorm.weight", C, 0, 0, "norm", 0);
            LAYER(ln2_w, "post_attention_layernorm.weight", C, 0, 3, "norm", 0);
        } else {
            LAYER(ln1_w, "input_layernorm.weight", C, 0, 0, "norm", 0);
            LAYER(ln1_b, "input_layernorm.bias", C, 0, 0, "norm", 0);
            LAYER(ln2_w, "post_attention_layernorm.weight", C, 0, 3, "norm", 0);
            LAYER(ln2_b, "post_attention_layernorm.bias", C, 0, 3, "norm", 0);
            LAYER(qkv_w, "attention.query_key_value.weight", 3 * C, C, 1, "qkv", 1);
            LAYER(qkv_b, "attention.query_key_value.bias", 3 * C, 0, 1, "qkv", 0);
            LAYER(dense_w, "attention.dense.weight", C, C, 2, "attn_out", 1);
            LAYER(dense_b, "attention.dense.bias", C, 0, 2, "attn_out", 0);
            LAYER(fc_w, "mlp.dense_h_to_4h.weight", I, C, 4, "mlp_up", 1);
            LAYER(fc_b, "mlp.dense_h_to_4h.bias", I, 0, 4, "mlp_up", 0);
            LAYER(proj_w, "mlp.dense_4h_to_h.weight", C, I, 5, "mlp_down", 1);
            LAYER(proj_b, "mlp.dense_4h_to_h.bias", C, 0, 5, "mlp_down", 0);
        }
#undef LAYER
        if (lt) lt[l] = t;
    }
    if (llama) {
        GLOBAL(lnf_w, "model.norm.weight", C, 0, L, GZ_POS_FINAL_LN(L), "norm", 0);
        if (c->tie_word_embeddings) g.head = g.embed;
        else GLOBAL(head, "lm_head.weight", V, C, L + 1, GZ_POS_HEAD(L), "head", 1);
    } else {
        GLOBAL(lnf_w, "gpt_neox.final_layer_norm.weight", C, 0, L, GZ_POS_FINAL_LN(L), "norm", 0);
        GLOBAL(lnf_b, "gpt_neox.final_layer_norm.bias", C, 0, L, GZ_POS_FINAL_LN(L), "norm", 0);
        GLOBAL(head, "embed_out.weight", V, C, L + 1, GZ_POS_HEAD(L), "head", 1);
    }
#undef GLOBAL
    if (gt) *gt = g;
    return n;
}

int gz_tensor_count(const gz_config *cfg) {
    return gz_config_validate(cfg) == GZ_OK ? gz_build_specs(cfg, NULL, NULL, NULL) : -1;
}

gz_status gz_tensor_table(const gz_config *cfg, gz_tensor_spec *out, int capacity) {
    GZ_TRY(gz_config_validate(cfg));
    if (!out || capacity < gz_build_specs(cfg, NULL, NULL, NULL))
        return gz_fail(GZ_ERR_VALUE, "tensor table: room for %d entries is too small", capacity);
    gz_build_specs(cfg, out, NULL, NULL);
    return GZ_OK;
}
