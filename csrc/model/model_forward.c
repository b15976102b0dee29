/* model_forward.c — the forward pass (loss or logits) over a batch of token rows, each one document or several
 * packed ones. */
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

/* Packed rows, on the host: every token's document start and position (start[] and pos[], [B, T]) from doc_ids,
 * checked (a document's tokens are contiguous in its row). *packed: some row holds more than one document. */
typedef struct {
    int32_t id, t; /* a run of equal ids in one row: its id and first token */
} id_run;

static int run_order(const void *a, const void *b) {
    const id_run *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->t > y->t) - (x->t < y->t);
}

static gz_status document_layout(const int32_t *doc_ids, int B, int T, int32_t *start, int32_t *pos, int *packed) {
    id_run *runs;
    GZ_TRY(gz_calloc((void **)&runs, (size_t)T, sizeof *runs, "document runs"));
    gz_status st = GZ_OK;
    *packed = 0;
    for (int b = 0; b < B && st == GZ_OK; b++) {
        const int32_t *ids = doc_ids + (int64_t)b * T;
        int32_t *s = start + (int64_t)b * T, *p = pos + (int64_t)b * T;
        int n = 0;
        for (int t = 0; t < T; t++) {
            if (t == 0 || ids[t] != ids[t - 1]) runs[n++] = (id_run){ids[t], t};
            s[t] = runs[n - 1].t;
            p[t] = t - s[t];
        }
        if (n == 1) continue;
        *packed = 1;
        qsort(runs, (size_t)n, sizeof *runs, run_order);
        for (int i = 1; i < n; i++)
            if (runs[i].id == runs[i - 1].id) {
                st = gz_fail(GZ_ERR_VALUE, "doc_ids[%d, %d] = %d comes back to the document that begins at [%d, %d] "
                             "after another one: a document's tokens must be contiguous in its row (give each "
                             "document of a row its own id)", b, runs[i].t, runs[i].id, b, runs[i - 1].t);
                break;
            }
    }
    free(runs);
    return st;
}

static gz_status forward(gz_model *m, const int32_t *tokens, const int32_t *targets, const int32_t *doc_ids, int B,
                         int T, float *logits_out, float *loss_out, int64_t *n_counted_out, int keep);

/* With doc_ids: the layout is checked before anything changes, and uploaded once the buffers exist. */
static gz_status forward_docs(gz_model *m, const int32_t *tokens, const int32_t *targets, const int32_t *doc_ids,
                              int B, int T, float *logits_out, float *loss_out, int64_t *n_counted_out, int keep) {
    if (!doc_ids) return forward(m, tokens, targets, NULL, B, T, logits_out, loss_out, n_counted_out, keep);
    if (!m || !tokens) return gz_fail(GZ_ERR_VALUE, "model or tokens is NULL");
    GZ_TRY(check_tokens(m, tokens, targets, B, T));
    int64_t N = (int64_t)B * T;
    int32_t *layout;
    GZ_TRY(gz_calloc((void **)&layout, (size_t)(2 * N), sizeof(int32_t), "document starts and positions"));
    int packed = 0;
    gz_status st = document_layout(doc_ids, B, T, layout, layout + N, &packed);
    /* one document in every row: the plain path (the same bits as without doc_ids) */
    if (st == GZ_OK) st = forward(m, tokens, targets, packed ? layout : NULL, B, T, logits_out, loss_out,
                                  n_counted_out, keep);
    free(layout);
    return st;
}

/* doc_layout: NULL, or start [N] then positions [N] of packed rows (document_layout). */
static gz_status forward(gz_model *m, const int32_t *tokens, const int32_t *targets, const int32_t *doc_layout, int B,
                         int T, float *logits_out, float *loss_out, int64_t *n_counted_out, int keep) {
    if (!m || !tokens) return gz_fail(GZ_ERR_VALUE, "model or tokens is NULL");
    GZ_TRY(check_tokens(m, tokens, targets, B, T));
    int with_backward = targets != NULL && keep;
    int stop = with_backward ? backward_stop_layer(m) : m->L;
    m->have_acts = 0;
    GZ_TRY(gz_model_ensure_activations(m, B, T, stop, with_backward));
    gz_backend *be = m->be;
    int64_t N = (int64_t)B * T;

    m->fwd_docs = doc_layout != NULL;
    if (doc_layout) { /* packed rows: their starts, and positions restarting at each */
        m->pos_B = m->pos_T = 0;
        GZ_TRY(be->upload(be->ctx, m->doc_start, doc_layout, (size_t)N * sizeof(int32_t)));
        GZ_TRY(be->upload(be->ctx, m->pos, doc_layout + N, (size_t)N * sizeof(int32_t)));
    } else if (m->pos_B != B || m->pos_T != T) { /* positions 0..T-1 per row: rebuilt only when the shape changes */
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
        gz_attn_step at = {.mode = GZ_ATTN_CAUSAL, .B = B, .T = T, .pos = m->pos,
                           .doc_start = doc_layout ? m->doc_start : NULL, .lse = a->attn_lse};
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
    return forward(m, tokens, targets, NULL, B, T, logits_out, loss_out, n_counted_out, 1);
}

gz_status gz_model_evaluate(gz_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                            float *logits_out, float *loss_out, int64_t *n_counted_out) {
    return forward(m, tokens, targets, NULL, B, T, logits_out, loss_out, n_counted_out, 0);
}

gz_status gz_model_forward_docs(gz_model *m, const int32_t *tokens, const int32_t *targets, const int32_t *doc_ids,
                                int B, int T, float *logits_out, float *loss_out, int64_t *n_counted_out) {
    return forward_docs(m, tokens, targets, doc_ids, B, T, logits_out, loss_out, n_counted_out, 1);
}

gz_status gz_model_evaluate_docs(gz_model *m, const int32_t *tokens, const int32_t *targets, const int32_t *doc_ids,
                                 int B, int T, float *logits_out, float *loss_out, int64_t *n_counted_out) {
    return forward_docs(m, tokens, targets, doc_ids, B, T, logits_out, loss_out, n_counted_out, 0);
}
