/* generate.c — autoregressive generation with a KV cache.
 *
 * Every step is a forward over a flat list of tokens, each tagged with its cache row and position:
 * the prefill is all prompt tokens of all rows at once, a decode step is one token per unfinished
 * row. Rows keep their own positions, so prompts of different lengths need no padding. The prefill's
 * prompts lie end to end, each its own document for the blocked causal attention (as packed training
 * rows do); a decode step attends over the cache.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "linear.h"
#include "sample.h"

typedef struct {
    gz_model *m;
    int rows, S, cap;           /* cache rows, positions per row, tokens per step */
    float **kc, **vc;           /* per layer [rows, NKV, S, HS]: the kv heads only */
    float *x, *ln, *qkv, *q, *k, *v, *atty, *attn_out, *h, *ln2, *fch, *fcg, *fcu, *mlp, *mean, *rstd, *scores;
    float *last, *logits;       /* [rows, C], [rows, V] */
    float *lse;                 /* prefill attention's row statistics [NH, cap] */
    int32_t *tok, *row, *pos;   /* backend [cap] */
    int32_t *doc_start;         /* backend [cap]: each prefill token's prompt start */
} gen_state;

static void gen_free(gen_state *g) {
    gz_backend *be = g->m->be;
    float **bufs[] = {&g->x, &g->ln, &g->qkv, &g->q, &g->k, &g->v, &g->atty, &g->attn_out, &g->h, &g->ln2,
                      &g->fch, &g->fcg, &g->fcu, &g->mlp, &g->mean, &g->rstd, &g->scores, &g->last, &g->logits,
                      &g->lse};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (*bufs[i]) be->release(be->ctx, *bufs[i]);
    if (g->tok) be->release(be->ctx, g->tok);
    if (g->row) be->release(be->ctx, g->row);
    if (g->pos) be->release(be->ctx, g->pos);
    if (g->doc_start) be->release(be->ctx, g->doc_start);
    for (int l = 0; g->kc && l < g->m->L; l++) {
        if (g->kc[l]) be->release(be->ctx, g->kc[l]);
        if (g->vc[l]) be->release(be->ctx, g->vc[l]);
    }
    free(g->kc);
    free(g->vc);
}

static gz_status gen_alloc(gen_state *g) {
    gz_model *m = g->m;
    gz_backend *be = m->be;
    int64_t N = g->cap, C = m->C, I = m->I;
    struct { float **p; int64_t n; const char *what; } bufs[] = {
        {&g->x, N * C, "generation hidden state"}, {&g->ln, N * C, "generation layernorm"},
        {&g->qkv, N * 3 * C, "generation qkv"}, {&g->q, N * C, "generation queries"}, {&g->k, N * C, "generation keys"},
        {&g->v, N * C, "generation values"}, {&g->atty, N * C, "generation attention"},
        {&g->attn_out, N * C, "generation attention projection"}, {&g->h, N * C, "generation residual"},
        {&g->ln2, N * C, "generation layernorm"}, {&g->fch, N * I, "generation MLP"}, {&g->fcg, N * I, "generation MLP"},
        {&g->fcu, m->cfg.mlp_kind == GZ_MLP_SWIGLU ? N * I : 1, "generation MLP"},
        {&g->mlp, N * C, "generation MLP output"}, {&g->mean, N, "generation layernorm stats"},
        {&g->rstd, N, "generation layernorm stats"}, {&g->scores, (int64_t)g->rows * m->NH * g->S, "generation scores"},
        {&g->last, (int64_t)g->rows * C, "generation last hidden"}, {&g->logits, (int64_t)g->rows * m->V, "logits"},
        {&g->lse, N * m->NH, "generation attention statistics"},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        GZ_TRY(be->alloc(be->ctx, (void **)bufs[i].p, (size_t)bufs[i].n * sizeof(float), bufs[i].what));
    GZ_TRY(be->alloc(be->ctx, (void **)&g->tok, (size_t)N * sizeof(int32_t), "generation tokens"));
    GZ_TRY(be->alloc(be->ctx, (void **)&g->row, (size_t)N * sizeof(int32_t), "generation rows"));
    GZ_TRY(be->alloc(be->ctx, (void **)&g->pos, (size_t)N * sizeof(int32_t), "generation positions"));
    GZ_TRY(be->alloc(be->ctx, (void **)&g->doc_start, (size_t)N * sizeof(int32_t), "generation prompt starts"));
    GZ_TRY(gz_calloc((void **)&g->kc, m->L, sizeof(float *), "KV cache table"));
    GZ_TRY(gz_calloc((void **)&g->vc, m->L, sizeof(float *), "KV cache table"));
    size_t cache = (size_t)g->rows * m->NKV * g->S * m->HS * sizeof(float);
    for (int l = 0; l < m->L; l++) {
        GZ_TRY(be->alloc(be->ctx, (void **)&g->kc[l], cache, "KV cache (keys)"));
        GZ_TRY(be->alloc(be->ctx, (void **)&g->vc[l], cache, "KV cache (values)"));
    }
    return GZ_OK;
}

/* Forward over n tokens (host arrays tok/row/pos); logits of the tokens flagged in want[] (at most
 * one per row) land in g->logits[row]. doc_start (host, or NULL for a decode step): the prefill's prompt
 * starts, the prompts lying end to end from position 0. */
static gz_status gen_forward(gen_state *g, const int32_t *tok, const int32_t *row, const int32_t *pos,
                             const int32_t *doc_start, int n, const int *want) {
    gz_model *m = g->m;
    gz_backend *be = m->be;
    int C = m->C;
    size_t bytes = (size_t)n * sizeof(int32_t);
    GZ_TRY(be->upload(be->ctx, g->tok, tok, bytes));
    GZ_TRY(be->upload(be->ctx, g->row, row, bytes));
    GZ_TRY(be->upload(be->ctx, g->pos, pos, bytes));
    if (doc_start) GZ_TRY(be->upload(be->ctx, g->doc_start, doc_start, bytes));
    GZ_TRY(be->embedding_forward(be->ctx, g->x, g->tok, GZ_P(m, m->embed), n, C));
    gz_block_bufs bb = {g->ln, g->mean, g->rstd, g->qkv, g->q, g->k, g->v, g->atty, g->attn_out, g->h,
                        g->ln2, g->mean, g->rstd, g->fch, g->fcg, g->mlp, g->fcu};
    gz_attn_step at = {.mode = doc_start ? GZ_ATTN_PREFILL : GZ_ATTN_CACHED, .B = 1, .T = n, .pos = g->pos,
                       .doc_start = g->doc_start, .lse = g->lse, .kcache = g->kc, .vcache = g->vc, .row = g->row,
                       .scores = g->scores, .S = g->S};
    for (int l = 0; l < m->L; l++) GZ_TRY(gz_block_forward(m, l, g->x, g->x, &bb, &at));
    /* final norm + head only for the tokens whose next token is sampled */
    int nw = 0;
    for (int i = 0; i < n; i++) {
        if (!want[i]) continue;
        GZ_TRY(be->copy(be->ctx, g->last + (size_t)row[i] * C, g->x + (size_t)i * C, C * sizeof(float)));
        nw++;
    }
    if (nw == 0) return GZ_OK;
    GZ_TRY(gz_norm_forward(m, g->ln, g->mean, g->rstd, g->last, m->lnf_w, m->lnf_b, g->rows));
    return gz_model_linear_forward(m, m->head, -1, g->logits, g->ln, g->rows);
}

static gz_status check_args(const gz_model *m, const int32_t *prompts, const int32_t *lens, int B, int Tmax,
                            const gz_generate_config *cfg) {
    if (B <= 0) return gz_fail(GZ_ERR_VALUE, "generate: empty batch (B = %d)", B);
    if (Tmax <= 0) return gz_fail(GZ_ERR_VALUE, "generate: prompts have no columns (Tmax = %d)", Tmax);
    if (cfg->max_new_tokens < 0) return gz_fail(GZ_ERR_VALUE, "max_new_tokens = %d must be >= 0", cfg->max_new_tokens);
    if (cfg->top_k < 0) return gz_fail(GZ_ERR_VALUE, "top_k = %d must be >= 0", cfg->top_k);
    if (!(cfg->top_p > 0.0f)) return gz_fail(GZ_ERR_VALUE, "top_p = %g must be > 0", cfg->top_p);
    if (isnan(cfg->temperature)) return gz_fail(GZ_ERR_VALUE, "temperature is NaN");
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || lens[b] > Tmax)
            return gz_fail(GZ_ERR_VALUE, "prompt %d has length %d (must be 1..%d)", b, lens[b], Tmax);
        if ((int64_t)lens[b] + cfg->max_new_tokens > m->cfg.max_position_embeddings)
            return gz_fail(GZ_ERR_VALUE, "prompt %d: %d prompt tokens + max_new_tokens %d exceed max_position_embeddings %d",
                           b, lens[b], cfg->max_new_tokens, m->cfg.max_position_embeddings);
        for (int t = 0; t < lens[b]; t++) {
            int id = prompts[(int64_t)b * Tmax + t];
            if (id < 0 || id >= m->V)
                return gz_fail(GZ_ERR_VALUE, "prompts[%d, %d] = %d is outside the vocabulary [0, %d)", b, t, id, m->V);
        }
    }
    return GZ_OK;
}

gz_status gz_generate(gz_model *m, const int32_t *prompts, const int32_t *prompt_lens, int B, int Tmax,
                      const gz_generate_config *cfg, int32_t *out, int32_t *out_lens, float *step_logits) {
    if (!m || !prompts || !prompt_lens || !cfg || !out || !out_lens) return gz_fail(GZ_ERR_VALUE, "generate: NULL argument");
    GZ_TRY(check_args(m, prompts, prompt_lens, B, Tmax, cfg));
    int maxlen = 0;
    int64_t total = 0;
    for (int b = 0; b < B; b++) {
        maxlen = prompt_lens[b] > maxlen ? prompt_lens[b] : maxlen;
        total += prompt_lens[b];
    }
    int NEW = cfg->max_new_tokens;
    for (int64_t i = 0; i < (int64_t)B * NEW; i++) out[i] = -1;
    for (int b = 0; b < B; b++) out_lens[b] = 0;
    if (NEW == 0) return GZ_OK;

    gen_state g = {.m = m, .rows = B, .S = maxlen + NEW, .cap = (int)(total > B ? total : B)};
    int32_t *tok = NULL, *row = NULL, *pos = NULL, *starts = NULL, *cur = NULL;
    int *want = NULL, *done = NULL;
    gz_scored *buf = NULL;
    float *lg = NULL;
    gz_status st;
    if ((st = gz_calloc((void **)&tok, g.cap, sizeof *tok, "generation tokens")) ||
        (st = gz_calloc((void **)&row, g.cap, sizeof *row, "generation rows")) ||
        (st = gz_calloc((void **)&pos, g.cap, sizeof *pos, "generation positions")) ||
        (st = gz_calloc((void **)&starts, g.cap, sizeof *starts, "generation prompt starts")) ||
        (st = gz_calloc((void **)&want, g.cap, sizeof *want, "generation flags")) ||
        (st = gz_calloc((void **)&cur, B, sizeof *cur, "generation lengths")) ||
        (st = gz_calloc((void **)&done, B, sizeof *done, "generation flags")) ||
        (st = gz_calloc((void **)&buf, m->V, sizeof *buf, "sampling buffer")) ||
        (st = gz_calloc((void **)&lg, (size_t)B * m->V, sizeof *lg, "logits (host)")) || (st = gen_alloc(&g)))
        goto out;
    gz_rng rng;
    gz_rng_seed(&rng, cfg->seed);

    /* prefill: all prompt tokens at once; logits of each row's last prompt token */
    int n = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < prompt_lens[b]; t++, n++) {
            tok[n] = prompts[(int64_t)b * Tmax + t];
            row[n] = b;
            pos[n] = t;
            starts[n] = n - t;
            want[n] = t == prompt_lens[b] - 1;
        }
    if ((st = gen_forward(&g, tok, row, pos, starts, n, want))) goto out;
    for (int b = 0; b < B; b++) cur[b] = prompt_lens[b];

    for (int step = 0; step < NEW; step++) {
        if (gz_interrupt_requested()) {
            st = gz_fail(GZ_ERR_INTERRUPTED, "generation interrupted");
            goto out;
        }
        if ((st = m->be->download(m->be->ctx, lg, g.logits, (size_t)B * m->V * sizeof(float)))) goto out;
        n = 0;
        for (int b = 0; b < B; b++) {
            if (done[b]) continue;
            if (step_logits)
                memcpy(step_logits + ((size_t)b * NEW + step) * m->V, lg + (size_t)b * m->V, sizeof(float) * m->V);
            int id;
            if ((st = gz_sample_token(lg + (size_t)b * m->V, m->V, cfg, buf, &rng, b, step, &id))) goto out;
            out[(int64_t)b * NEW + step] = id;
            out_lens[b] = step + 1;
            if (id == cfg->eos_token_id || step == NEW - 1) {
                done[b] = 1;
                continue;
            }
            tok[n] = id;
            row[n] = b;
            pos[n] = cur[b]++;
            want[n] = 1;
            n++;
        }
        if (n == 0) break;
        if ((st = gen_forward(&g, tok, row, pos, NULL, n, want))) goto out;
    }
    st = m->be->synchronize(m->be->ctx);
out:
    gen_free(&g);
    free(tok), free(row), free(pos), free(starts), free(want), free(cur), free(done), free(buf), free(lg);
    return st;
}
