/* model_internal.h — the gz_model struct and the functions the files of csrc/model/ share (and optim/adamw.c). */
#ifndef GOZARU_MODEL_INTERNAL_H
#define GOZARU_MODEL_INTERNAL_H

#include "backend.h"

/* Tensor indices of one transformer layer; -1 where the family has no such tensor. GPT-NeoX: fused qkv_w/qkv_b,
 * dense (attention output), fc (dense_h_to_4h), proj (dense_4h_to_h). Llama: q/k/v, dense = o_proj, gate,
 * fc = up_proj, proj = down_proj. */
typedef struct {
    int ln1_w, ln1_b, qkv_w, qkv_b, dense_w, dense_b, ln2_w, ln2_b, fc_w, fc_b, proj_w, proj_b;
    int q_w, q_b, k_w, k_b, v_w, v_b, gate_w;
} gz_layer_tensors;

/* Activations one layer keeps for backward (N = B*T tokens). */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; /* [N,C], [N], [N] */
    float *q, *k, *v;                 /* q [B,NH,T,HS], k, v [B,NKV,T,HS], after rotary */
    float *attn_lse;                  /* [B,NH,T] attention log-sum-exp per query row */
    float *atty;                      /* [N,C] attention output, heads merged */
    float *h;                         /* [N,C] x + attention (sequential residual) */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fcg;                 /* [N,I] pre- and post-GELU (SwiGLU: the gate's pre-activation, the product) */
    float *fcu;                       /* [N,I] SwiGLU's up projection (NULL for GELU) */
} gz_layer_acts;

/* Backward order of parameters: a tensor's "position" is where it sits in the forward chain.
 * Backward only has to reach the lowest position that is trainable. */
#define GZ_POS_EMBED 0
#define GZ_POS_LAYER(l, k) (1 + 6 * (l) + (k)) /* k: 0 ln1, 1 qkv, 2 dense, 3 ln2, 4 fc, 5 proj */
#define GZ_POS_FINAL_LN(L) (1 + 6 * (L))
#define GZ_POS_HEAD(L) (2 + 6 * (L))

struct gz_model {
    gz_config cfg;
    gz_backend_kind kind;
    gz_backend *be;          /* this model's own backend instance (owned) */
    int L, C, NH, HS, I, V;
    int NKV;          /* key/value heads (== NH without grouped-query attention) */
    int rot;          /* dims rotated per head (even) */
    int rot_freq_dim; /* HF's rotary_ndims: the frequency denominator (odd values round rot up) */
    float *rope_inv_freq;        /* [rot/2] host copy of the rotary frequencies (rope.c) */
    float rope_attention_factor; /* cos/sin scale (YaRN's mscale; 1 for most RoPE types) */

    int ntensors;
    gz_tensor_info *tensors; /* names owned by name_storage */
    char *name_storage;
    int *tensor_pos;         /* backward position of each tensor */
    int64_t nparams;
    float *params_host;      /* host master (CPU) / mirror (device backends) */
    float *params;           /* backend memory; == params_host on CPU */
    int host_stale;          /* device backends: params changed on the device since params_host was refreshed */
    float **grads;           /* per tensor, backend memory, NULL when frozen */

    gz_layer_tensors *lt;
    int embed, lnf_w, lnf_b, head;

    float *cos_t, *sin_t;    /* [max_pos, rot/2] backend memory */

    /* activations, sized for cap_N tokens and cap_BT rows of (B, T) */
    int64_t cap_N;
    gz_layer_acts *acts;     /* per layer; NULL members for layers below the backward stop */
    gz_layer_acts scratch_acts;
    float **res;             /* L+1 residual stream buffers [N,C]; NULL below the backward stop layer */
    float *res_frozen[2];    /* the residual stream below the stop layer, alternating (nothing there is kept) */
    float *qkv, *attn_out, *mlp_out; /* qkv: the fused projection, or q | k | v projections side by side */
    float *lnf, *lnf_mean, *lnf_rstd, *lse;
    float *logits;                   /* [cap_logit_rows, V]: one chunk of rows (head_loss.c) */
    int64_t cap_logit_rows;
    float *head_x, *head_dx;         /* [cap_logit_rows, C]: counted rows gathered for the head (head_loss.c) */
    int32_t *head_targets;           /* [cap_logit_rows]: their targets */
    float *dlnf_pending;             /* [N, C] d(loss)/d(final LayerNorm output), formed in the forward */
    float *head_grad_pending;        /* [V, C] the head's weight gradient, formed in the forward */
    int32_t *tokens, *targets, *pos; /* backend copies [N] */
    int pos_B, pos_T;                /* the (B, T) that pos currently holds as 0..T-1 per row (0: none) */
    int32_t *doc_start;              /* backend [N]: packed rows' document starts (attention step doc_start) */
    /* backward scratch */
    float *dres_a, *dres_b, *dh, *dln, *dqkv, *dq, *dk, *dv, *datt, *datty, *dfcg, *dfch;
    float *dln_part, *dfcu;  /* Llama: one projection's input gradient before it is added; SwiGLU's d(up) */

    /* LoRA adapters (lora.c): lora_at[tensor] is the adapter on that tensor or -1 */
    int nlora;
    struct gz_lora *lora;
    int *lora_at;
    float *lora_xa;          /* [2 * lora_cap_N * max r] scratch: x A^T and its gradient */
    float *lora_tmp;         /* [lora_cap_N * max(out, in)] scratch: the adapter's output or input gradient */
    int64_t lora_cap_N;

    int have_acts;           /* last forward kept activations for backward */
    int fwd_B, fwd_T, fwd_stop_layer;
    int fwd_docs;            /* the last forward packed documents: pos and doc_start hold them */
    int fwd_fused_head;      /* the forward formed dlnf_pending / head_grad_pending (head_loss.c) */
    int64_t fwd_count;
};

/* Buffers of one block call (block.c). Training points the kept members (ln*, q/k/v, atty, h, fch/fcg)
 * at a layer's gz_layer_acts; generation points everything at shared scratch (mean/rstd may alias). */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *q, *k, *v, *atty, *attn_out, *h;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fcg, *mlp_out, *fcu;
} gz_block_bufs;

/* The attention step of a block, over N = B * T tokens whose positions are pos [N] (backend memory). */
typedef enum {
    GZ_ATTN_CAUSAL, /* full causal attention within each row of a [B, T] batch; lse kept for backward */
    GZ_ATTN_CACHED, /* B = 1, T = n tokens: append k/v to the cache, attend over cache row row[i] up to pos[i] */
    GZ_ATTN_PREFILL /* cached, for whole prompts laid end to end (doc_start: each token's prompt start): append
                     * k/v to the cache and attend with the blocked causal attention, one document per prompt */
} gz_attn_mode;
typedef struct {
    gz_attn_mode mode;
    int B, T;
    const int32_t *pos;
    const int32_t *doc_start;    /* causal: [B, T] document starts of packed rows, or NULL (backend.h); prefill */
    float *lse;                  /* causal, prefill: [B, NH, T] */
    float **kcache, **vcache;    /* cached: per layer [rows, NKV, S, HS] */
    const int32_t *row;          /* cached: [n] */
    float *scores;               /* cached: [n, NH, S] scratch */
    int S;
} gz_attn_step;

/* One transformer block of layer l: x [N, C] -> y [N, C] (y may equal x). */
gz_status gz_block_forward(gz_model *m, int l, const float *x, float *y, const gz_block_bufs *a,
                           const gz_attn_step *at);

/* One adapter of the model (lora.c). */
typedef struct gz_lora {
    int target, a, b, r; /* tensor indices of W, A, B */
    float scale;
} gz_lora;

/* lora.c: appends the adapter rows to a base table of nbase specs (specs may be NULL to validate only). */
gz_status gz_lora_build_specs(const gz_config *cfg, const gz_tensor_spec *base, int nbase, const gz_lora_spec *ls,
                              int n, gz_tensor_spec *specs);
gz_status gz_lora_setup(gz_model *m, const gz_lora_spec *ls, int n, int nbase);
/* rope.c: HF's default frequencies and the cos/sin tables (called once by gz_model_create_lora) */
gz_status gz_model_rope_init_default(gz_model *m);
void gz_lora_free(gz_model *m);
/* activations.c: room for B*T tokens, layers >= stop_layer with their own saved activations (and backward's
 * scratch when with_backward); on failure every activation buffer is freed. */
gz_status gz_model_ensure_activations(gz_model *m, int B, int T, int stop_layer, int with_backward);
void gz_model_free_activations(gz_model *m);

/* Tensors outside the layers (-1 where the family has none: a Llama model's final norm has no bias; tied
 * embeddings make the head the embedding). */
typedef struct {
    int embed, lnf_w, lnf_b, head;
} gz_global_tensors;

/* config.c: the config's tensors in HF state-dict order; returns the count. specs, lt and gt may be NULL. */
int gz_build_specs(const gz_config *c, gz_tensor_spec *specs, gz_layer_tensors *lt, gz_global_tensors *gt);

/* head_loss.c: the LM head and the loss over chunks of rows (the head's backward fused into the forward when
 * with_backward). counted: targets that are not GZ_IGNORE_INDEX. */
int64_t gz_head_chunk_rows(const gz_model *m, int64_t N, int with_backward);
gz_status gz_head_loss_forward(gz_model *m, int64_t N, const int32_t *targets, int64_t counted, float *logits_out,
                               double *loss_sum, int64_t *count, int with_backward);
/* The head's share of backward for loss_scale: its gradients accumulated, *dlnf the gradient w.r.t. the final
 * LayerNorm output (NULL unless need_lnf). */
gz_status gz_head_loss_backward(gz_model *m, float loss_scale, int need_lnf, float **dlnf);

/* Lowest backward position with a trainable tensor (INT_MAX when none). */
int gz_model_min_trainable_pos(const gz_model *m);
#define GZ_P(m, idx) ((m)->params + (m)->tensors[idx].offset)

/* The block's norm (LayerNorm or RMSNorm by the config); RMSNorm ignores b and mean (block.c). */
gz_status gz_norm_forward(gz_model *m, float *out, float *mean, float *rstd, const float *x, int w, int b, int64_t N);
gz_status gz_norm_backward(gz_model *m, float *dx, int w, int b, const float *dout, const float *x, const float *mean,
                           const float *rstd, int64_t N);

#endif
