/* block.c — one transformer block (GPT-NeoX or Llama family, by the config), shared by the training forward
 * (model_forward.c) and generation (generate.c). What differs between the two is passed in: the attention step
 * (causal attention over the batch keeping probabilities for backward, or KV-cache append plus cached
 * attention) and the buffers (per-layer activations kept for backward, or shared scratch). */
#include "linear.h"

gz_status gz_norm_forward(gz_model *m, float *out, float *mean, float *rstd, const float *x, int w, int b, int64_t N) {
    gz_backend *be = m->be;
    if (m->cfg.norm_kind == GZ_NORM_RMSNORM)
        return be->rmsnorm_forward(be->ctx, out, rstd, x, GZ_P(m, w), N, m->C, m->cfg.layer_norm_eps);
    return be->layernorm_forward(be->ctx, out, mean, rstd, x, GZ_P(m, w), GZ_P(m, b), N, m->C, m->cfg.layer_norm_eps);
}

gz_status gz_norm_backward(gz_model *m, float *dx, int w, int b, const float *dout, const float *x, const float *mean,
                           const float *rstd, int64_t N) {
    gz_backend *be = m->be;
    float *dw = m->grads[w], *db = b >= 0 ? m->grads[b] : NULL;
    if (m->cfg.norm_kind == GZ_NORM_RMSNORM)
        return be->rmsnorm_backward(be->ctx, dx, dw, dout, x, GZ_P(m, w), rstd, N, m->C);
    return be->layernorm_backward(be->ctx, dx, dw, db, dout, x, GZ_P(m, w), mean, rstd, N, m->C);
}

/* q [B, NH, T, HS], k, v [B, NKV, T, HS] from ln1: the fused GPT-NeoX projection split per head, or Llama's three
 * projections (q | k | v side by side in a->qkv). */
static gz_status qkv_forward(gz_model *m, int l, const gz_block_bufs *a, const gz_attn_step *at) {
    gz_backend *be = m->be;
    const gz_layer_tensors *w = &m->lt[l];
    int64_t N = (int64_t)at->B * at->T;
    int C = m->C, HS = m->HS, KV = m->NKV * HS;
    if (m->cfg.arch == GZ_ARCH_GPT_NEOX) {
        GZ_TRY(gz_model_linear_forward(m, w->qkv_w, w->qkv_b, a->qkv, a->ln1, N));
        return be->rotary_split_forward(be->ctx, a->q, a->k, a->v, a->qkv, at->pos, m->cos_t, m->sin_t, at->B, at->T,
                                        m->NH, HS, m->rot);
    }
    float *qp = a->qkv, *kp = qp + N * C, *vp = kp + N * KV;
    GZ_TRY(gz_model_linear_forward(m, w->q_w, w->q_b, qp, a->ln1, N));
    GZ_TRY(gz_model_linear_forward(m, w->k_w, w->k_b, kp, a->ln1, N));
    GZ_TRY(gz_model_linear_forward(m, w->v_w, w->v_b, vp, a->ln1, N));
    GZ_TRY(be->rotary_heads_forward(be->ctx, a->q, qp, at->pos, m->cos_t, m->sin_t, at->B, at->T, m->NH, HS,
                                    m->rot));
    GZ_TRY(be->rotary_heads_forward(be->ctx, a->k, kp, at->pos, m->cos_t, m->sin_t, at->B, at->T, m->NKV, HS,
                                    m->rot));
    return be->rotary_heads_forward(be->ctx, a->v, vp, at->pos, m->cos_t, m->sin_t, at->B, at->T, m->NKV, HS,
                                    0);
}

static gz_status attention_step(gz_model *m, int l, const gz_block_bufs *a, const gz_attn_step *at) {
    gz_backend *be = m->be;
    if (at->mode == GZ_ATTN_CAUSAL) {
        GZ_TRY(qkv_forward(m, l, a, at));
        return be->attention_forward(be->ctx, a->atty, at->lse, a->q, a->k, a->v, at->doc_start, at->B, at->T, m->NH,
                                     m->NKV, m->HS);
    }
    int n = at->B * at->T;
    GZ_TRY(qkv_forward(m, l, a, at));
    GZ_TRY(be->kv_append(be->ctx, at->kcache[l], at->vcache[l], a->k, a->v, at->row, at->pos, n, m->NKV, m->HS,
                         at->S));
    if (at->mode == GZ_ATTN_PREFILL) /* the prompts' own k/v are all here: tiles of GEMMs, not one row at a time */
        return be->attention_forward(be->ctx, a->atty, at->lse, a->q, a->k, a->v, at->doc_start, 1, n, m->NH,
                                     m->NKV, m->HS);
    return be->attention_cached(be->ctx, a->atty, at->scores, a->q, at->kcache[l], at->vcache[l], at->row, at->pos, n,
                                m->NH, m->NKV, m->HS, at->S);
}

/* fcg = act(ln2 ...): GELU of the up projection, or SwiGLU silu(gate) * up */
static gz_status mlp_hidden(gz_model *m, int l, const gz_block_bufs *a, int64_t N) {
    const gz_layer_tensors *w = &m->lt[l];
    int I = m->I;
    int swiglu = m->cfg.mlp_kind == GZ_MLP_SWIGLU;
    GZ_TRY(gz_model_linear_forward(m, swiglu ? w->gate_w : w->fc_w, swiglu ? -1 : w->fc_b, a->fch, a->ln2, N));
    if (!swiglu) return m->be->gelu_forward(m->be->ctx, a->fcg, a->fch, N * I);
    GZ_TRY(gz_model_linear_forward(m, w->fc_w, w->fc_b, a->fcu, a->ln2, N));
    return m->be->swiglu_forward(m->be->ctx, a->fcg, a->fch, a->fcu, N * I);
}

gz_status gz_block_forward(gz_model *m, int l, const float *x, float *y, const gz_block_bufs *a,
                           const gz_attn_step *at) {
    gz_backend *be = m->be;
    const gz_layer_tensors *w = &m->lt[l];
    int64_t N = (int64_t)at->B * at->T;
    int C = m->C;

    GZ_TRY(gz_norm_forward(m, a->ln1, a->ln1_mean, a->ln1_rstd, x, w->ln1_w, w->ln1_b, N));
    GZ_TRY(attention_step(m, l, a, at));
    GZ_TRY(gz_model_linear_forward(m, w->dense_w, w->dense_b, a->attn_out, a->atty, N));
    /* Sequential: y = h + mlp(ln2(h)), h = x + attn(ln1(x)). Parallel: y = x + attn(ln1(x)) + mlp(ln2(x)).
     * y may be x (generation updates its hidden state in place): x is last read before y is written. */
    const float *mlp_in = x;
    if (!m->cfg.use_parallel_residual) {
        GZ_TRY(be->add(be->ctx, a->h, x, a->attn_out, N * C));
        mlp_in = a->h;
    }
    GZ_TRY(gz_norm_forward(m, a->ln2, a->ln2_mean, a->ln2_rstd, mlp_in, w->ln2_w, w->ln2_b, N));
    GZ_TRY(mlp_hidden(m, l, a, N));
    GZ_TRY(gz_model_linear_forward(m, w->proj_w, w->proj_b, a->mlp_out, a->fcg, N));
    if (m->cfg.use_parallel_residual) {
        GZ_TRY(be->add(be->ctx, y, x, a->attn_out, N * C));
        GZ_TRY(be->add(be->ctx, y, y, a->mlp_out, N * C));
    } else {
        GZ_TRY(be->add(be->ctx, y, a->h, a->mlp_out, N * C));
    }
    return GZ_OK;
}
