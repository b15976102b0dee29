/* model_forward.c — the forward pass (loss or logits) over a batch of token rows. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include "linear.h"

/* The layer below which backward never goes for the current trainable set. */
static int backward_stop_layer(const gz_model *m) {
    int p = gz_model_min_trainable_pos(m);
    if (p == INT_MAX || p >= GZ_POS_FINAL_LN(m->L)) return m->L;
    if (p == GZ_POS_EMBED) return 0;
    return (p - 1) / 6;
}

static gz_status check_tokens(const gz_model *m, const int32_t *tokens, const int32_t *targets, int B, int T) {
    if (B <= 0 || T <= 0) return gz_fail(GZ_ERR_VALUE, "empty batch: B = %d, T = %d (both must be >= 1)", B, T);
    if (T > m->cfg.max_position_embeddings)
        return gz_fail(GZ_ERR_VALUE, "sequence length T = %d exceeds max_position_embeddings = %d", T,
                       m->cfg.max_position_embeddings);
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->V)
            return gz_fail(GZ_ERR_VALUE, "tokens[%lld, %lld] = %d is outside the vocabulary [0, %d)",
                           (long long)(i / T), (long long)(i % T), tokens[i], m->V);
        if (targets && targets[i] != GZ_IGNORE_INDEX && (targets[i] < 0 || targets[i] >= m->V))
            return gz_fail(GZ_ERR_VALUE, "targets[%lld, %lld] = %d is neither %d nor inside the vocabulary [0, %d)",
                           (long long)(i / T), (long long)(i % T), targets[i], GZ_IGNORE_INDEX, m->V);
    }
    return GZ_OK;
}

static gz_status forward(gz_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                         float *logits_out, float *loss_out, int64_t *n_counted_out, int keep) {
    if (!m || !tokens) return gz_fail(GZ_ERR_VALUE, "model or tokens is NULL");
    GZ_TRY(check_tokens(m, tokens, targets, B, T));
    int with_backward = targets != NULL && keep;
    int stop = with_backward ? backward_stop_layer(m) : m->L;
    m->have_acts = 0;
    GZ_TRY(gz_model_ensure_activations(m, B, T, stop, with_backward));
    gz_backend *be = m->be;
    int64_t N = (int64_t)B * T;

    if (m->pos_B != B || m->pos_T != T) { /* positions 0..T-1 per row: rebuilt only when the shape changes */
        int32_t *pos_host;
        GZ_TRY(gz_calloc((void **)&pos_host, (size_t)N, sizeof(int32_t), "positions"));
        for (int64_t i = 0; i < N; i++) pos_host[i] = (int32_t)(i % T);
        gz_status st = be->upload(be->ctx, m->pos, pos_host, (size_t)N * sizeof(int32_t));
        free(pos_host);
        GZ_TRY(st);
        m->pos_B = B;
        m->pos_T = T;
    }
    GZ_TRY(be->upload(be->ctx, m->tokens, tokens, (size_t)N * sizeof(int32_t)));
    if (targets) GZ_TRY(be->upload(be->ctx, m->targets, targets, (size_t)N * sizeof(int32_t)));

    /* residual stream l: kept from the stop layer up, alternating buffers below it */
#define RES(l) ((l) >= stop ? m->res[l] : m->res_frozen[(l) & 1])
    GZ_TRY(be->embedding_forward(be->ctx, RES(0), m->tokens, GZ_P(m, m->embed), N, m->C));
    for (int l = 0; l < m->L; l++) {
        gz_layer_acts *a = l >= stop ? &m->acts[l] : &m->scratch_acts;
        gz_block_bufs bb = {a->ln1, a->ln1_mean, a->ln1_rstd, m->qkv, a->q, a->k, a->v, a->atty, m->attn_out, a->h,
                            a->ln2, a->ln2_mean, a->ln2_rstd, a->fch, a->fcg, m->mlp_out, a->fcu};
        gz_attn_step at = {.mode = GZ_ATTN_CAUSAL, .B = B, .T = T, .pos = m->pos, .lse = a->attn_lse};
        GZ_TRY(gz_block_forward(m, l, RES(l), RES(l + 1), &bb, &at));
    }
    GZ_TRY(gz_norm_forward(m, m->lnf, m->lnf_mean, m->lnf_rstd, m->res[m->L], m->lnf_w, m->lnf_b, N));
#undef RES
    int64_t counted = 0;
    for (int64_t i = 0; targets && i < N; i++) counted += targets[i] != GZ_IGNORE_INDEX;
    double sum;
    int64_t count;
    GZ_TRY(gz_head_loss_forward(m, N, targets, counted, logits_out, &sum, &count, with_backward));
    if (targets) {
        if (loss_out) *loss_out = count ? (float)(sum / (double)count) : NAN;
        if (n_counted_out) *n_counted_out = count;
        m->fwd_B = B;
        m->fwd_T = T;
        m->fwd_stop_layer = stop;
        m->fwd_count = count;
        m->have_acts = with_backward;
    } else {
        if (loss_out) *loss_out = NAN;
        if (n_counted_out) *n_counted_out = 0;
    }
    return be->synchronize(be->ctx);
}

gz_status gz_model_forward(gz_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float *logits_out, float *loss_out, int64_t *n_counted_out) {
    return forward(m, tokens, targets, B, T, logits_out, loss_out, n_counted_out, 1);
}

gz_status gz_model_evaluate(gz_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                            float *logits_out, float *loss_out, int64_t *n_counted_out) {
    return forward(m, tokens, targets, B, T, logits_out, loss_out, n_counted_out, 0);
}
