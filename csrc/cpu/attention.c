/* attention.c — causal softmax attention, blocked with an online softmax (FlashAttention-2's schedule).
 *
 * q [B, NH, T, HS]; k, v [B, NKV, T, HS] (query head h reads key/value head h / (NH / NKV)); fp32 scores
 * scaled by 1/sqrt(HS). Nothing T x T is stored: a task takes BQ queries and walks the keys in tiles of BK,
 * keeping a running max and sum per query row (elementwise.h's gz_attn_*), so its working set (a BQ x BK
 * score tile, the BQ x HS accumulator and the K/V tile) stays in L2 and attention needs O(T * HS) memory per
 * head. Key tiles wholly after a query block are never visited (causality). Backward recomputes each tile's
 * probabilities from the saved per-row log-sum-exp.
 *
 * Packed rows (doc_start non-NULL, [B, T]): query t sees keys doc_start[t] .. t, the tokens of its own document
 * so far. Starts never decrease along a row, so a query block needs the key tiles from the one holding its first
 * row's start on (earlier tiles are skipped), and of a tile only the rows whose document starts before the tile
 * ends: a prefix of the block, the only rows its products are formed for. Every such row has a key in the tile.
 *
 * Tile products go through cblas_sgemm, called from inside the OpenMP loop with BLAS set to one thread
 * (gz_blas_serial_begin): each task is a sequence of sequential sgemms in a fixed order, so results do not
 * depend on scheduling or thread count. The per-row loops around them are plain arithmetic in
 * GZ_VECTOR_CLONES functions (AVX-512 / AVX2 / baseline picked at load time, same bits on each). */
#include "blas.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../elementwise.h"
#include "cpu_ops.h"

#define BQ 64  /* queries per task */
#define BK 128 /* keys per tile (a multiple of BQ: every tile a query block visits has a key at or before each row) */

_Static_assert(BK % BQ == 0, "key tiles must start at or before the first query of every block they meet");

static int min_int(int a, int b) { return a < b ? a : b; }

/* Per-thread tiles: scores / probabilities and their gradient (forward: [BK, BQ], transposed; backward:
 * [BQ, BK]), the output accumulator [BQ, HS], row statistics [BQ] x 3 (m, l and the forward's rescale factors,
 * or the backward's D). */
typedef struct {
    float *s, *dp, *acc, *m, *l, *d;
} attn_tiles;

static int tiles_alloc(attn_tiles *w, int HS) {
    size_t n = (size_t)2 * BQ * BK + (size_t)BQ * HS + 3 * BQ;
    float *p = malloc(n * sizeof(float));
    w->s = p;
    if (!p) return -1;
    w->dp = p + BQ * BK;
    w->acc = w->dp + BQ * BK;
    w->m = w->acc + (size_t)BQ * HS;
    w->l = w->m + BQ;
    w->d = w->l + BQ;
    return 0;
}

/* The online softmax of one run of query rows r0..r1-1 against the keys klo..khi-1 of a tile, its scores held
 * transposed (st[j * BQ + i]: key j, query i) so that every step runs down the key rows with the queries as the
 * vector lanes: no row reductions, and each query's max and sum taken in key order, the same bits from every
 * clone. Key j is at or before query i when i >= j - qoff (qoff = t0 - s0 >= 0). Updates the running max m[i]
 * and sum l[i], leaves p = exp(s - m_new) (0 after the query), and puts in corr[i] the factor the accumulator
 * row must be rescaled by. */
GZ_VECTOR_CLONES static void online_softmax_run(float *st, int klo, int khi, int r0, int r1, int qoff, float *m,
                                                float *l, float *corr) {
    float mx[BQ], sum[BQ];
    for (int i = r0; i < r1; i++) mx[i] = m[i];
    for (int j = klo; j < khi; j++) {
        const float *row = st + (int64_t)j * BQ;
        for (int i = j - qoff > r0 ? j - qoff : r0; i < r1; i++) mx[i] = row[i] > mx[i] ? row[i] : mx[i];
    }
    for (int i = r0; i < r1; i++) {
        corr[i] = gz_attn_rescale(m[i], mx[i]);
        sum[i] = 0.0f;
    }
    for (int j = klo; j < khi; j++) {
        float *row = st + (int64_t)j * BQ;
        int i0 = j - qoff > r0 ? j - qoff : r0;
        for (int i = r0; i < i0; i++) row[i] = 0.0f;
        for (int i = i0; i < r1; i++) { /* vectorises */
            row[i] = gz_attn_prob(row[i], mx[i]);
            sum[i] += row[i];
        }
    }
    for (int i = r0; i < r1; i++) {
        m[i] = mx[i];
        l[i] = l[i] * corr[i] + sum[i];
    }
}

GZ_VECTOR_CLONES static void scale_row(float *x, float s, int n) {
    for (int j = 0; j < n; j++) x[j] *= s;
}

GZ_VECTOR_CLONES static void scale_row_to(float *y, const float *x, float s, int n) {
    for (int j = 0; j < n; j++) y[j] = x[j] * s;
}

/* Backward of one row of a tile: p = exp(s - lse) (0 outside lo..hi-1), ds = p (dp - D) scale in place of dp. */
GZ_VECTOR_CLONES static void softmax_backward_row(float *p, float *dp, int nk, int lo, int hi, float lse, float D,
                                                  float scale) {
    for (int j = 0; j < lo; j++) p[j] = dp[j] = 0.0f;
    for (int j = lo; j < hi; j++) {
        p[j] = gz_attn_prob(p[j], lse);
        dp[j] = gz_attn_dscore(p[j], dp[j], D, scale);
    }
    for (int j = hi; j < nk; j++) p[j] = dp[j] = 0.0f;
}

/* The first key tile query block t0.. visits: 0, or with documents (ds: the row's starts) the one holding the
 * block's first start. */
static int first_tile(const int32_t *ds, int t0) { return ds ? ds[t0] / BK * BK : 0; }

/* How many rows of the block t0.., nq rows, take part in the key tile ending before `end`: all of them, or with
 * documents the prefix whose document starts before the tile ends. At least one on every tile visited. */
static int tile_rows(const int32_t *ds, int t0, int nq, int end) {
    if (!ds) return nq;
    while (nq > 1 && ds[t0 + nq - 1] >= end) nq--;
    return nq;
}

/* The end of the run of rows r0.. (of the block t0.., rows rows) in r0's document: rows without documents. */
static int run_end(const int32_t *ds, int t0, int r0, int rows) {
    if (!ds) return rows;
    int r1 = r0 + 1;
    while (r1 < rows && ds[t0 + r1] == ds[t0 + r0]) r1++;
    return r1;
}

/* Row t's first key in the tile starting at s0 (0 without documents). */
static int tile_lo(const int32_t *ds, int t, int s0) { return ds && ds[t] > s0 ? ds[t] - s0 : 0; }

GZ_VECTOR_CLONES static float dot_row(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += a[j] * b[j];
    return s;
}

/* Queries t0..t1-1 of head (b, h): out rows and their log-sum-exp. ds: the row's document starts [T] or NULL. */
static void forward_block(attn_tiles *w, float *out, float *lse, const float *qh, const float *kh, const float *vh,
                          const int32_t *ds, int t0, int t1, int HS, int C, float scale) {
    int nq = t1 - t0;
    memset(w->acc, 0, (size_t)nq * HS * sizeof(float));
    for (int i = 0; i < nq; i++) {
        w->m[i] = -INFINITY;
        w->l[i] = 0.0f;
    }
    const int first = first_tile(ds, t0);
    for (int s0 = first; s0 < t1; s0 += BK) {
        int nk = min_int(BK, t1 - s0), rows = tile_rows(ds, t0, nq, s0 + nk);
        /* Per run of rows sharing a document, both products span only that document's keys klo..khi-1 (up to
         * the run's last row): a zero probability times another document's value is not always 0 (0 * NaN),
         * so nothing, not even a non-finite value, crosses documents. One run without documents. */
        for (int r0 = 0, r1; r0 < rows; r0 = r1) {
            r1 = run_end(ds, t0, r0, rows);
            int klo = tile_lo(ds, t0 + r0, s0), khi = min_int(nk, t0 + r1 - s0);
            float *st = w->s + (int64_t)klo * BQ + r0; /* S^T = K Q^T: key rows klo.., query columns r0.. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, khi - klo, r1 - r0, HS, scale,
                        kh + (int64_t)(s0 + klo) * HS, HS, qh + (int64_t)(t0 + r0) * HS, HS, 0.0f, st, BQ);
            online_softmax_run(w->s, klo, khi, r0, r1, t0 - s0, w->m, w->l, w->d);
            if (s0 > first) /* a row's first tile: acc is 0 */
                for (int i = r0; i < r1; i++) scale_row(w->acc + (int64_t)i * HS, w->d[i], HS);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, HS, khi - klo, 1.0f, st, BQ,
                        vh + (int64_t)(s0 + klo) * HS, HS, 1.0f, w->acc + (int64_t)r0 * HS, HS);
        }
    }
    for (int i = 0; i < nq; i++) {
        scale_row_to(out + (int64_t)(t0 + i) * C, w->acc + (int64_t)i * HS, 1.0f / w->l[i], HS);
        lse[t0 + i] = gz_attn_lse(w->m[i], w->l[i]);
    }
}

/* A pass's shape and what both passes derive from it. */
typedef struct {
    int T, NH, NKV, HS;
    float scale;       /* 1 / sqrt(HS) */
    int C, nqb, group; /* NH * HS, query blocks, query heads per key/value head */
} attn_dims;

static gz_status dims_of(int T, int NH, int NKV, int HS, attn_dims *d) {
    if (NKV <= 0 || NH % NKV != 0)
        return gz_fail(GZ_ERR_VALUE, "attention: %d key/value heads do not divide %d query heads", NKV, NH);
    *d = (attn_dims){.T = T, .NH = NH, .NKV = NKV, .HS = HS, .scale = 1.0f / sqrtf((float)HS), .C = NH * HS,
                     .nqb = (T + BQ - 1) / BQ, .group = NH / NKV};
    return GZ_OK;
}

/* This thread's tiles, inside a parallel region; on failure *failed is set and the thread computes nothing. */
static int thread_tiles(attn_tiles *w, int HS, int *failed) {
    if (tiles_alloc(w, HS) == 0) return 1;
#pragma omp atomic write
    *failed = 1;
    return 0;
}

/* Runs tasks 0..n-1 of a pass (task(tiles, args, i)) on the threads, each thread with its own tiles and BLAS
 * serial inside; dynamic: tasks differ in size, and each writes its own outputs in a fixed order. */
static gz_status run_tasks(int64_t n, int HS, void (*task)(attn_tiles *, const void *, int64_t), const void *args) {
    int failed = 0;
    int blas_saved = gz_blas_serial_begin();
#pragma omp parallel
    {
        attn_tiles w = {0};
        int ok = thread_tiles(&w, HS, &failed);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n; i++)
            if (ok) task(&w, args, i);
        free(w.s);
    }
    gz_blas_serial_end(blas_saved);
    return failed ? gz_fail(GZ_ERR_NOMEM, "attention: out of memory for the per-thread tiles") : GZ_OK;
}

typedef struct {
    attn_dims d;
    float *out, *lse;
    const float *q, *k, *v;
    const int32_t *doc_start; /* [B, T] or NULL (one document per row) */
} forward_args;

/* Task (b, h, query block): later blocks see more keys; every output is written by exactly one task. */
static void forward_task(attn_tiles *w, const void *args, int64_t i) {
    const forward_args *a = args;
    const attn_dims *d = &a->d;
    int T = d->T, HS = d->HS, qb = (int)(i % d->nqb);
    int64_t bh = i / d->nqb, b = bh / d->NH;
    int h = (int)(bh % d->NH), t0 = qb * BQ;
    int64_t bkv = b * d->NKV + h / d->group;
    forward_block(w, a->out + b * T * d->C + (int64_t)h * HS, a->lse + bh * T, a->q + bh * T * HS,
                  a->k + bkv * T * HS, a->v + bkv * T * HS, a->doc_start ? a->doc_start + b * T : NULL, t0,
                  min_int(t0 + BQ, T), HS, d->C, d->scale);
}

gz_status gz_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                   const int32_t *doc_start, int B, int T, int NH, int NKV, int HS) {
    forward_args a = {.out = out, .lse = lse, .q = q, .k = k, .v = v, .doc_start = doc_start};
    GZ_TRY(dims_of(T, NH, NKV, HS, &a.d));
    return run_tasks((int64_t)B * NH * a.d.nqb, HS, forward_task, &a);
}

/* Query block t0..t1-1 of query head h against all its keys: dq rows (owned by this task) and the shares of
 * dk, dv of key/value head (accumulated, += ). */
static void backward_block(attn_tiles *w, float *dqh, float *dkh, float *dvh, const float *doh, const float *oh,
                           const float *lseh, const float *qh, const float *kh, const float *vh, const int32_t *ds,
                           int t0, int t1, int HS, int C, float scale) {
    int nq = t1 - t0;
    for (int i = 0; i < nq; i++)
        w->d[i] = dot_row(doh + (int64_t)(t0 + i) * C, oh + (int64_t)(t0 + i) * C, HS);
    for (int s0 = first_tile(ds, t0); s0 < t1; s0 += BK) {
        int nk = min_int(BK, t1 - s0), rows = tile_rows(ds, t0, nq, s0 + nk);
        const float *ks = kh + (int64_t)s0 * HS, *vs = vh + (int64_t)s0 * HS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, HS, scale, qh + (int64_t)t0 * HS, HS, ks, HS,
                    0.0f, w->s, BK);
        /* dP = dO V^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, HS, 1.0f, doh + (int64_t)t0 * C, C, vs, HS,
                    0.0f, w->dp, BK);
        for (int i = 0; i < rows; i++)
            softmax_backward_row(w->s + (int64_t)i * BK, w->dp + (int64_t)i * BK, nk, tile_lo(ds, t0 + i, s0),
                                 min_int(nk, t0 + i - s0 + 1), lseh[t0 + i], w->d[i], scale);
        /* dQ += dS K, dK += dS^T Q, dV += P^T dO */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, HS, nk, 1.0f, w->dp, BK, ks, HS, 1.0f,
                    dqh + (int64_t)t0 * HS, HS);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, rows, 1.0f, w->dp, BK, qh + (int64_t)t0 * HS, HS,
                    1.0f, dkh + (int64_t)s0 * HS, HS);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, rows, 1.0f, w->s, BK, doh + (int64_t)t0 * C, C,
                    1.0f, dvh + (int64_t)s0 * HS, HS);
    }
}

typedef struct {
    attn_dims d;
    float *dq, *dk, *dv;
    const float *dout, *out, *lse, *q, *k, *v;
    const int32_t *doc_start; /* [B, T] or NULL */
} backward_args;

/* Task (b, key/value head): it owns dk, dv of that head and dq of the query heads reading it, and adds their
 * contributions in a fixed order. */
static void backward_task(attn_tiles *w, const void *args, int64_t i) {
    const backward_args *a = args;
    const attn_dims *d = &a->d;
    int T = d->T, HS = d->HS, C = d->C;
    int64_t b = i / d->NKV;
    int kvh = (int)(i % d->NKV);
    float *dkh = a->dk + i * T * HS, *dvh = a->dv + i * T * HS;
    memset(dkh, 0, (size_t)T * HS * sizeof(float));
    memset(dvh, 0, (size_t)T * HS * sizeof(float));
    for (int h = kvh * d->group; h < (kvh + 1) * d->group; h++) {
        int64_t bh = b * d->NH + h, hoff = b * T * C + (int64_t)h * HS;
        float *dqh = a->dq + bh * T * HS;
        memset(dqh, 0, (size_t)T * HS * sizeof(float));
        for (int qb = 0; qb < d->nqb; qb++)
            backward_block(w, dqh, dkh, dvh, a->dout + hoff, a->out + hoff, a->lse + bh * T, a->q + bh * T * HS,
                           a->k + i * T * HS, a->v + i * T * HS, a->doc_start ? a->doc_start + b * T : NULL, qb * BQ,
                           min_int(qb * BQ + BQ, T), HS, C, d->scale);
    }
}

/* scratch is not needed on the CPU (D lives in the tiles). */
gz_status gz_cpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                    const float *out, const float *lse, const float *q, const float *k, const float *v,
                                    const int32_t *doc_start, int B, int T, int NH, int NKV, int HS) {
    (void)scratch;
    backward_args a = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .out = out, .lse = lse, .q = q, .k = k, .v = v,
                       .doc_start = doc_start};
    GZ_TRY(dims_of(T, NH, NKV, HS, &a.d));
    return run_tasks((int64_t)B * NKV, HS, backward_task, &a);
}
