/* activations.c — a model's activation memory: the buffers the forward pass writes and backward reads, sized for
 * the largest batch seen, and given back for layers backward will not reach. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "model_internal.h"

#define RELEASE(ptr)                          \
    do {                                      \
        if (ptr) m->be->release(m->be->ctx, ptr);         \
        (ptr) = NULL;                         \
    } while (0)

static void free_layer_acts(gz_model *m, gz_layer_acts *a) {
    RELEASE(a->ln1); RELEASE(a->ln1_mean); RELEASE(a->ln1_rstd);
    RELEASE(a->q); RELEASE(a->k); RELEASE(a->v); RELEASE(a->attn_lse); RELEASE(a->atty); RELEASE(a->h);
    RELEASE(a->ln2); RELEASE(a->ln2_mean); RELEASE(a->ln2_rstd); RELEASE(a->fch); RELEASE(a->fcg); RELEASE(a->fcu);
}

void gz_model_free_activations(gz_model *m) {
    if (!m || !m->be) return;
    if (m->acts)
        for (int l = 0; l < m->L; l++) free_layer_acts(m, &m->acts[l]);
    free_layer_acts(m, &m->scratch_acts);
    if (m->res)
        for (int l = 0; l <= m->L; l++) RELEASE(m->res[l]);
    RELEASE(m->res_frozen[0]); RELEASE(m->res_frozen[1]);
    RELEASE(m->dlnf_pending); RELEASE(m->head_grad_pending);
    m->cap_logit_rows = 0;
    RELEASE(m->qkv); RELEASE(m->attn_out); RELEASE(m->mlp_out);
    RELEASE(m->lnf); RELEASE(m->lnf_mean); RELEASE(m->lnf_rstd); RELEASE(m->logits); RELEASE(m->lse);
    RELEASE(m->head_x); RELEASE(m->head_dx); RELEASE(m->head_targets);
    RELEASE(m->tokens); RELEASE(m->targets); RELEASE(m->pos); RELEASE(m->doc_start);
    m->pos_B = m->pos_T = 0;
    RELEASE(m->dres_a); RELEASE(m->dres_b); RELEASE(m->dh); RELEASE(m->dln); RELEASE(m->dqkv);
    RELEASE(m->dq); RELEASE(m->dk); RELEASE(m->dv); RELEASE(m->datt); RELEASE(m->datty);
    RELEASE(m->dfcg); RELEASE(m->dfch); RELEASE(m->dln_part); RELEASE(m->dfcu);
    m->cap_N = 0;
    m->have_acts = 0;
}

typedef struct {
    void **ptr;
    int64_t count;
    size_t elem;
    const char *what;
} alloc_item;

static gz_status alloc_all(gz_model *m, alloc_item *items, int n) {
    for (int i = 0; i < n; i++) {
        if (*items[i].ptr) continue;
        if (items[i].count > (int64_t)(SIZE_MAX / 8 / items[i].elem))
            return gz_fail(GZ_ERR_NOMEM, "activation buffer %s is too large", items[i].what);
        GZ_TRY(m->be->alloc(m->be->ctx, items[i].ptr, (size_t)items[i].count * items[i].elem, items[i].what));
    }
    return GZ_OK;
}

static gz_status alloc_layer_acts(gz_model *m, gz_layer_acts *a) {
    int64_t N = m->cap_N, C = m->C, I = m->I;
    alloc_item items[] = {
        {(void **)&a->ln1, N * C, 4, "layernorm-1 output"}, {(void **)&a->ln1_mean, N, 4, "layernorm-1 mean"},
        {(void **)&a->ln1_rstd, N, 4, "layernorm-1 rstd"},  {(void **)&a->q, N * C, 4, "queries"},
        {(void **)&a->k, N * C, 4, "keys"},                   {(void **)&a->v, N * C, 4, "values"},
        {(void **)&a->attn_lse, N * m->NH, 4, "attention log-sum-exp"},
        {(void **)&a->atty, N * C, 4, "attention output"},   {(void **)&a->h, N * C, 4, "attention residual"},
        {(void **)&a->ln2, N * C, 4, "layernorm-2 output"}, {(void **)&a->ln2_mean, N, 4, "layernorm-2 mean"},
        {(void **)&a->ln2_rstd, N, 4, "layernorm-2 rstd"},  {(void **)&a->fch, N * I, 4, "MLP hidden"},
        {(void **)&a->fcg, N * I, 4, "MLP activation output"},
    };
    GZ_TRY(alloc_all(m, items, (int)(sizeof items / sizeof *items)));
    if (m->cfg.mlp_kind != GZ_MLP_SWIGLU) return GZ_OK;
    alloc_item up = {(void **)&a->fcu, N * I, 4, "MLP up projection"};
    return alloc_all(m, &up, 1);
}

/* Rough activation footprint in bytes, so an impossible batch is a MemoryError up front rather than
 * a process killed by the kernel's OOM killer after overcommitted allocations. */
static double activation_bytes(const gz_model *m, int64_t N, int stop_layer, int with_backward) {
    double C = m->C, I = m->I, kept = m->L - stop_layer + (stop_layer > 0);
    double per_layer = N * (7 * C + 3 * I + 4 + m->NH);
    double logits = (double)gz_head_chunk_rows(m, N, with_backward) * m->V;
    double shared = N * (C * (m->L - stop_layer + 3) + 6 * C + 6) + logits + (with_backward ? N * C : 0);
    double back = with_backward ? N * (11 * C + 3 * I + m->NH) : 0;
    return 4.0 * (kept * per_layer + shared + back);
}

static gz_status ensure_activations_inner(gz_model *m, int B, int T, int stop_layer, int with_backward);

gz_status gz_model_ensure_activations(gz_model *m, int B, int T, int stop_layer, int with_backward) {
    int64_t N = (int64_t)B * T;
    if (m->kind == GZ_BACKEND_CPU) {
        double need = activation_bytes(m, N, stop_layer, with_backward);
        double phys = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
        if (phys > 0 && need > phys)
            return gz_fail(GZ_ERR_NOMEM, "batch B = %d, T = %d needs about %.1f GiB of activations, more than the "
                                         "%.1f GiB of memory of this machine", B, T, need / 1073741824.0,
                           phys / 1073741824.0);
    }
    gz_status st = ensure_activations_inner(m, B, T, stop_layer, with_backward);
    if (st != GZ_OK) gz_model_free_activations(m); /* no half-sized buffers left behind: the next call starts clean */
    return st;
}

static gz_status ensure_activations_inner(gz_model *m, int B, int T, int stop_layer, int with_backward) {
    int64_t N = (int64_t)B * T;
    if (N > m->cap_N) {
        gz_model_free_activations(m);
        m->cap_N = N;
    }
    N = m->cap_N;
    int64_t C = m->C, I = m->I, V = m->V;
    alloc_item shared[] = {
        {(void **)&m->qkv, N * 3 * C, 4, "fused qkv"},       {(void **)&m->attn_out, N * C, 4, "attention projection"},
        {(void **)&m->mlp_out, N * C, 4, "MLP output"},     {(void **)&m->lnf, N * C, 4, "final layernorm output"},
        {(void **)&m->lnf_mean, N, 4, "final layernorm mean"}, {(void **)&m->lnf_rstd, N, 4, "final layernorm rstd"},
        {(void **)&m->lse, N, 4, "log-sum-exp"},
        {(void **)&m->tokens, N, 4, "tokens"},               {(void **)&m->targets, N, 4, "targets"},
        {(void **)&m->pos, N, 4, "positions"},               {(void **)&m->doc_start, N, 4, "document starts"},
    };
    GZ_TRY(alloc_all(m, shared, (int)(sizeof shared / sizeof *shared)));
    int64_t logit_rows = gz_head_chunk_rows(m, N, with_backward);
    if (logit_rows > m->cap_logit_rows) {
        RELEASE(m->logits); RELEASE(m->head_x); RELEASE(m->head_dx); RELEASE(m->head_targets);
        m->cap_logit_rows = logit_rows;
    }
    alloc_item lg[] = {{(void **)&m->logits, m->cap_logit_rows * V, 4, "logits"},
                       {(void **)&m->head_x, m->cap_logit_rows * C, 4, "head input rows"},
                       {(void **)&m->head_dx, m->cap_logit_rows * C, 4, "head input gradient rows"},
                       {(void **)&m->head_targets, m->cap_logit_rows, 4, "head target rows"}};
    GZ_TRY(alloc_all(m, lg, (int)(sizeof lg / sizeof *lg)));
    for (int l = 0; l <= m->L; l++) {
        if (l < stop_layer) { /* nothing below the stop reads it again: two alternating buffers serve */
            RELEASE(m->res[l]);
            continue;
        }
        char what[64];
        snprintf(what, sizeof what, "residual stream %d", l);
        alloc_item r = {(void **)&m->res[l], N * C, 4, what};
        GZ_TRY(alloc_all(m, &r, 1));
    }
    if (stop_layer > 0) {
        alloc_item f[] = {{(void **)&m->res_frozen[0], N * C, 4, "residual stream"},
                          {(void **)&m->res_frozen[1], N * C, 4, "residual stream"}};
        GZ_TRY(alloc_all(m, f, 2));
    }
    if (with_backward && m->grads[m->head] && !(m->lora_at && m->lora_at[m->head] >= 0)) { /* head_loss.c */
        alloc_item h = {(void **)&m->head_grad_pending, (int64_t)V * C, 4, "head gradient"};
        GZ_TRY(alloc_all(m, &h, 1));
    }
    if (stop_layer > 0) GZ_TRY(alloc_layer_acts(m, &m->scratch_acts));
    for (int l = 0; l < m->L; l++) {
        if (l >= stop_layer) GZ_TRY(alloc_layer_acts(m, &m->acts[l]));
        else free_layer_acts(m, &m->acts[l]); /* not needed for this selection: give the memory back */
    }
    if (with_backward) {
        alloc_item back[] = {
            {(void **)&m->dres_a, N * C, 4, "residual gradient"}, {(void **)&m->dres_b, N * C, 4, "residual gradient"},
            {(void **)&m->dh, N * C, 4, "residual gradient"},
            {(void **)&m->dln, N * C, 4, "layernorm gradient"},   {(void **)&m->dqkv, N * 3 * C, 4, "qkv gradient"},
            {(void **)&m->dq, N * C, 4, "query gradient"},        {(void **)&m->dk, N * C, 4, "key gradient"},
            {(void **)&m->dv, N * C, 4, "value gradient"},        {(void **)&m->datt, N * m->NH, 4, "attention scratch"},
            {(void **)&m->datty, N * C, 4, "attention output gradient"},
            {(void **)&m->dlnf_pending, N * C, 4, "final layernorm gradient"},
            {(void **)&m->dfcg, N * I, 4, "MLP gradient"},        {(void **)&m->dfch, N * I, 4, "MLP gradient"},
        };
        GZ_TRY(alloc_all(m, back, (int)(sizeof back / sizeof *back)));
        if (m->cfg.arch == GZ_ARCH_LLAMA) { /* separate projections: input gradients summed; SwiGLU's d(up) */
            alloc_item llama[] = {
                {(void **)&m->dln_part, N * C, 4, "projection input gradient"},
                {(void **)&m->dfcu, N * I, 4, "MLP up gradient"},
            };
            GZ_TRY(alloc_all(m, llama, 2));
        }
    }
    return GZ_OK;
}
