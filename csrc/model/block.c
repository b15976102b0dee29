/* block.c — one GPT-NeoX transformer block, shared by the training forward (model_forward.c) and
 * generation (generate.c). What differs between the two is passed in: the attention step
 * (causal attention over the batch keeping probabilities for backward, or KV-cache append plus
 * cached attention) and the buffers (per-layer activations kept for backward, or shared scratch). */
#include "linear.h"

static gz_status attention_step(gz_model *m, int l, const gz_block_bufs *a, const gz_attn_step *at) {
    gz_backend *be = m->be;
    if (at->mode == GZ_ATTN_CAUSAL)
        return be->attention_forward(be->ctx, a->atty, at->lse, a->q, a->k, a->v, at->B, at->T, m->NH, m->NH, m->HS);
    int n = at->B * at->T;
    GZ_TRY(be->kv_append(be->ctx, at->kcache[l], at->vcache[l], a->k, a->v, at->row, at->pos, n, m->NH, m->HS, at->S));
    return be->attention_cached(be->ctx, a->atty, at->scores, a->q, at->kcache[l], at->vcache[l], at->row, at->pos, n,
                                m->NH, m->HS, at->S);
}

gz_status gz_block_forward(gz_model *m, int l, const float *x, float *y, const gz_block_bufs *a,
                           const gz_attn_step *at) {
    gz_backend *be = m->be;
    const gz_layer_tensors *w = &m->lt[l];
    int64_t N = (int64_t)at->B * at->T;
    int C = m->C, I = m->I;
    float eps = m->cfg.layer_norm_eps;

    GZ_TRY(be->layernorm_forward(be->ctx, a->ln1, a->ln1_mean, a->ln1_rstd, x, GZ_P(m, w->ln1_w), GZ_P(m, w->ln1_b), N,
                                 C, eps));
    GZ_TRY(gz_model_linear_forward(m, w->qkv_w, w->qkv_b, a->qkv, a->ln1, N));
    GZ_TRY(be->rotary_split_forward(be->ctx, a->q, a->k, a->v, a->qkv, at->pos, m->cos_t, m->sin_t, at->B, at->T,
                                    m->NH, m->HS, m->rot));
    GZ_TRY(attention_step(m, l, a, at));
    GZ_TRY(gz_model_linear_forward(m, w->dense_w, w->dense_b, a->attn_out, a->atty, N));
    /* Sequential: y = h + mlp(ln2(h)), h = x + attn(ln1(x)). Parallel: y = x + attn(ln1(x)) + mlp(ln2(x)).
     * y may be x (generation updates its hidden state in place): x is last read before y is written. */
    const float *mlp_in = x;
    if (!m->cfg.use_parallel_residual) {
        GZ_TRY(be->add(be->ctx, a->h, x, a->attn_out, N * C));
        mlp_in = a->h;
    }
    GZ_TRY(be->layernorm_forward(be->ctx, a->ln2, a->ln2_mean, a->ln2_rstd, mlp_in, GZ_P(m, w->ln2_w),
                                 GZ_P(m, w->ln2_b), N, C, eps));
    GZ_TRY(gz_model_linear_forward(m, w->fc_w, w->fc_b, a->fch, a->ln2, N));
    GZ_TRY(be->gelu_forward(be->ctx, a->fcg, a->fch, N * I));
    GZ_TRY(gz_model_linear_forward(m, w->proj_w, w->proj_b, a->mlp_out, a->fcg, N));
    if (m->cfg.use_parallel_residual) {
        GZ_TRY(be->add(be->ctx, y, x, a->attn_out, N * C));
        GZ_TRY(be->add(be->ctx, y, y, a->mlp_out, N * C));
    } else {
        GZ_TRY(be->add(be->ctx, y, a->h, a->mlp_out, N * C));
    }
    return GZ_OK;
}
