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

/* Per-thread tiles: scores / probabilities and their gradient [BQ, BK], the output accumulator [BQ, HS],
 * row statistics [BQ] x 3. */
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

/* One row of a score tile: keys 0..nk-1 of the tile, of which lo..hi-1 (lo < hi) are in the query's document
 * and at or before it. Updates the running max *m and sum *l, leaves p = exp(s - m_new) (0 outside lo..hi-1),
 * returns the factor the accumulator row must be rescaled by. */
GZ_VECTOR_CLONES static float online_softmax_row(float *p, int nk, int lo, int hi, float *m, float *l) {
    float mx = *m;
    for (int j = lo; j < hi; j++) mx = p[j] > mx ? p[j] : mx; /* stays scalar: a max reduction needs -ffast-math */
    float corr = gz_attn_rescale(*m, mx), sum = 0.0f;
    for (int j = 0; j < lo; j++) p[j] = 0.0f;
    for (int j = lo; j < hi; j++) p[j] = gz_attn_prob(p[j], mx); /* vectorises */
    for (int j = lo; j < hi; j++) sum += p[j]; /* in order: the same bits at every vector width */
    for (int j = hi; j < nk; j++) p[j] = 0.0f;
    *m = mx;
    *l = *l * corr + sum;
    return corr;
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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, HS, scale, qh + (int64_t)t0 * HS, HS,
                    kh + (int64_t)s0 * HS, HS, 0.0f, w->s, BK);
        for (int i = 0; i < rows; i++) {
            int hi = min_int(nk, t0 + i - s0 + 1);
            float corr = online_softmax_row(w->s + (int64_t)i * BK, nk, tile_lo(ds, t0 + i, s0), hi, &w->m[i],
                                            &w->l[i]);
            if (s0 > first) scale_row(w->acc + (int64_t)i * HS, corr, HS); /* 0 on a row's first tile: acc is 0 */
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, HS, nk, 1.0f, w->s, BK, vh + (int64_t)s0 * HS,
                    HS, 1.0f, w->acc, HS);
    }
    for (int i = 0; i < nq; i++) {
        scale_row_to(out + (int64_t)(t0 + i) * C, w->acc + (int64_t)i * HS, 1.0f / w->l[i], HS);
        lse[t0 + i] = gz_attn_lse(w->m[i], w->l[i]);
    }
}

/* What both passes derive from the shape. */
typedef struct {
    float scale; /* 1 / sqrt(HS) */
    int C, nqb, group; /* NH * HS, query blocks, query heads per key/value head */
} attn_dims;

static gz_status dims_of(int T, int NH, int NKV, int HS, attn_dims *d) {
    if (NKV <= 0 || NH % NKV != 0)
        return gz_fail(GZ_ERR_VALUE, "attention: %d key/value heads do not divide %d query heads", NKV, NH);
    d->scale = 1.0f / sqrtf((float)HS);
    d->C = NH * HS;
    d->nqb = (T + BQ - 1) / BQ;
    d->group = NH / NKV;
    return GZ_OK;
}

/* This thread's tiles, inside a parallel region; on failure *failed is set and the thread computes nothing. */
static int thread_tiles(attn_tiles *w, int HS, int *failed) {
    if (tiles_alloc(w, HS) == 0) return 1;
#pragma omp atomic write
    *failed = 1;
    return 0;
}

gz_status gz_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                   const int32_t *doc_start, int B, int T, int NH, int NKV, int HS) {
    attn_dims dm = {0};
    GZ_TRY(dims_of(T, NH, NKV, HS, &dm));
    const float scale = dm.scale;
    const int C = dm.C, nqb = dm.nqb, group = dm.group;
    int failed = 0;
    int blas_saved = gz_blas_serial_begin();
#pragma omp parallel
    {
        attn_tiles w = {0};
        int ok = thread_tiles(&w, HS, &failed);
        /* dynamic: later query blocks see more keys; every output is written by exactly one task */
#pragma omp for collapse(3) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int qb = 0; qb < nqb; qb++) {
                    if (!ok) continue;
                    int64_t bh = (int64_t)b * NH + h, bkv = (int64_t)b * NKV + h / group;
                    int t0 = qb * BQ;
                    forward_block(&w, out + (int64_t)b * T * C + (int64_t)h * HS, lse + bh * T, q + bh * T * HS,
                                  k + bkv * T * HS, v + bkv * T * HS, doc_start ? doc_start + (int64_t)b * T : NULL,
                                  t0, min_int(t0 + BQ, T), HS, C, scale);
                }
        free(w.s);
    }
    gz_blas_serial_end(blas_saved);
    return failed ? gz_fail(GZ_ERR_NOMEM, "attention: out of memory for the per-thread tiles") : GZ_OK;
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

/* One task per (b, key/value head): it owns dk, dv of that head and dq of the query heads reading it, and
 * adds their contributions in a fixed order. scratch is not needed on the CPU (D lives in the tiles). */
gz_status gz_cpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                    const float *out, const float *lse, const float *q, const float *k, const float *v,
                                    const int32_t *doc_start, int B, int T, int NH, int NKV, int HS) {
    (void)scratch;
    attn_dims dm = {0};
    GZ_TRY(dims_of(T, NH, NKV, HS, &dm));
    const float scale = dm.scale;
    const int C = dm.C, nqb = dm.nqb, group = dm.group;
    int failed = 0;
    int blas_saved = gz_blas_serial_begin();
#pragma omp parallel
    {
        attn_tiles w = {0};
        int ok = thread_tiles(&w, HS, &failed);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int kvh = 0; kvh < NKV; kvh++) {
                if (!ok) continue;
                int64_t bkv = (int64_t)b * NKV + kvh;
                float *dkh = dk + bkv * T * HS, *dvh = dv + bkv * T * HS;
                memset(dkh, 0, (size_t)T * HS * sizeof(float));
                memset(dvh, 0, (size_t)T * HS * sizeof(float));
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    int64_t bh = (int64_t)b * NH + h, hoff = (int64_t)b * T * C + (int64_t)h * HS;
                    float *dqh = dq + bh * T * HS;
                    memset(dqh, 0, (size_t)T * HS * sizeof(float));
                    for (int qb = 0; qb < nqb; qb++)
                        backward_block(&w, dqh, dkh, dvh, dout + hoff, out + hoff, lse + bh * T, q + bh * T * HS,
                                       k + bkv * T * HS, v + bkv * T * HS, doc_start ? doc_start + (int64_t)b * T : NULL,
                                       qb * BQ, min_int(qb * BQ + BQ, T), HS, C, scale);
                }
            }
        free(w.s);
    }
    gz_blas_serial_end(blas_saved);
    return failed ? gz_fail(GZ_ERR_NOMEM, "attention: out of memory for the per-thread tiles") : GZ_OK;
}
