/* attention.c — causal softmax attention over q, k, v [B, NH, T, HS] (fp32 scores, 1/sqrt(HS) scale).
 *
 * The dot products q.k (and dO.v) keep the plain loop's rounding: each is still summed over i = 0..HS-1
 * in order, but K (and V) are first transposed to [HS, keys] so the loop runs over i outside and
 * over a block of keys inside: the inner loop is a plain vector multiply-add with no reduction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "cpu_ops.h"
#include "vec_math.h"

#define KEY_BLOCK 16   /* keys scored together (a few vector registers of accumulators) */
#define QUERIES 4      /* queries scored together, sharing each key load */
#define QUERY_BLOCK 32 /* queries per forward task: enough tasks to balance the causal triangle */

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

/* xt[i * ld + s] = x[s * HS + i] for s < n (ld >= n rounded up to KEY_BLOCK; the padding is never used). */
static void transpose_rows(float *xt, int ld, const float *x, int n, int HS) {
    for (int s = 0; s < n; s++)
        for (int i = 0; i < HS; i++) xt[(int64_t)i * ld + s] = x[(int64_t)s * HS + i];
}

/* For query rows r < nq (nq <= QUERIES): d[r * ldd + s] = sum_i a[r * lda + i] * xt[i, s] for s <= n - 1,
 * summed over i in order (the plain dot product's order). Rows share the loads of xt; the
 * QUERIES x KEY_BLOCK accumulators are independent chains, so the adds do not wait on each other. */
GZ_VECTOR_CLONES static void dots_transposed(float *d, int64_t ldd, const float *a, int64_t lda, int nq,
                                             const float *xt, int ld, int n, int HS) {
    const float *ar[QUERIES];
    for (int r = 0; r < QUERIES; r++) ar[r] = a + (r < nq ? r : nq - 1) * lda;
    for (int s0 = 0; s0 < n; s0 += KEY_BLOCK) {
        float acc[QUERIES][KEY_BLOCK] = {{0}};
        for (int i = 0; i < HS; i++) {
            const float *row = xt + (int64_t)i * ld + s0;
            for (int r = 0; r < QUERIES; r++) {
                const float ai = ar[r][i];
                for (int j = 0; j < KEY_BLOCK; j++) acc[r][j] += ai * row[j];
            }
        }
        int m = n - s0 < KEY_BLOCK ? n - s0 : KEY_BLOCK;
        for (int r = 0; r < nq; r++)
            for (int j = 0; j < m; j++) d[r * ldd + s0 + j] = acc[r][j];
    }
}

/* y[i] += sum_s w[s] * x[s, i] for s <= t, accumulated over s in order; a block of y stays in registers. */
#define AXPY_BLOCK 64
GZ_VECTOR_CLONES static void axpy_rows(float *y, const float *w, const float *x, int t, int HS) {
    int i0 = 0;
    for (; i0 + AXPY_BLOCK <= HS; i0 += AXPY_BLOCK) {
        float acc[AXPY_BLOCK];
        for (int j = 0; j < AXPY_BLOCK; j++) acc[j] = y[i0 + j];
        for (int s = 0; s <= t; s++) {
            const float ws = w[s], *xs = x + (int64_t)s * HS + i0;
            for (int j = 0; j < AXPY_BLOCK; j++) acc[j] += ws * xs[j];
        }
        for (int j = 0; j < AXPY_BLOCK; j++) y[i0 + j] = acc[j];
    }
    for (int s = 0; s <= t && i0 < HS; s++) {
        const float ws = w[s], *xs = x + (int64_t)s * HS;
        for (int i = i0; i < HS; i++) y[i] += ws * xs[i];
    }
}

/* y[s, i] += w[s] * x[i] for s <= t. */
GZ_VECTOR_CLONES static void outer_rows(float *y, const float *w, const float *x, int t, int HS) {
    for (int s = 0; s <= t; s++) {
        const float ws = w[s];
        float *ys = y + (int64_t)s * HS;
        for (int i = 0; i < HS; i++) ys[i] += ws * x[i];
    }
}

gz_status gz_cpu_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B,
                                   int T, int NH, int HS) {
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS, ld = round_up(T, KEY_BLOCK), nqb = (T + QUERY_BLOCK - 1) / QUERY_BLOCK;
    float *kt_all;
    GZ_TRY(gz_calloc((void **)&kt_all, (size_t)max_threads() * HS * ld, sizeof(float), "attention key scratch"));
    /* dynamic: later query blocks see more keys; every output is still written by exactly one task */
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int qb = 0; qb < nqb; qb++) {
                int64_t bh = (int64_t)b * NH + h;
                int t0 = qb * QUERY_BLOCK, t1 = t0 + QUERY_BLOCK < T ? t0 + QUERY_BLOCK : T;
                const float *kh = k + bh * T * HS, *vh = v + bh * T * HS;
                float *kt = kt_all + (int64_t)thread_id() * HS * ld;
                transpose_rows(kt, ld, kh, t1, HS);
                for (int t = t0; t < t1; t++) {
                    float *p = att + (bh * T + t) * T;
                    if ((t - t0) % QUERIES == 0) { /* raw scores of this query and the next few (keys past
                                                    * each row's own t are zeroed below) */
                        int nq = t1 - t < QUERIES ? t1 - t : QUERIES;
                        dots_transposed(p, T, q + (bh * T + t) * HS, HS, nq, kt, ld, t + nq, HS);
                    }
                    float mx = -INFINITY;
                    for (int s = 0; s <= t; s++) {
                        p[s] *= scale;
                        if (p[s] > mx) mx = p[s];
                    }
                    gz_exp_shifted(p, mx, t + 1);
                    float sum = 0.0f;
                    for (int s = 0; s <= t; s++) sum += p[s];
                    float inv = 1.0f / sum;
                    for (int s = 0; s <= t; s++) p[s] *= inv;
                    for (int s = t + 1; s < T; s++) p[s] = 0.0f;
                    float *o = out + ((int64_t)b * T + t) * C + (int64_t)h * HS;
                    memset(o, 0, sizeof(float) * HS);
                    axpy_rows(o, p, vh, t, HS);
                }
            }
    free(kt_all);
    return GZ_OK;
}

/* scratch is not needed here: dP rows live in a small per-thread buffer. */
gz_status gz_cpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                    const float *att, const float *q, const float *k, const float *v, int B, int T,
                                    int NH, int HS) {
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS, ld = round_up(T, KEY_BLOCK);
    (void)scratch;
    float *work;
    /* per thread: V transposed [HS, ld], dS [ld], dP for QUERIES queries [QUERIES, ld] */
    const int64_t per_thread = (int64_t)HS * ld + ld + (int64_t)QUERIES * ld;
    GZ_TRY(gz_calloc((void **)&work, (size_t)max_threads() * per_thread, sizeof(float), "attention backward scratch"));
    /* one task per (b, h): dk and dv accumulate over queries in a fixed order */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            int64_t bh = (int64_t)b * NH + h;
            const float *kh = k + bh * T * HS, *vh = v + bh * T * HS;
            float *dkh = dk + bh * T * HS, *dvh = dv + bh * T * HS;
            float *vt = work + (int64_t)thread_id() * per_thread, *ds = vt + (int64_t)HS * ld, *dp4 = ds + ld;
            transpose_rows(vt, ld, vh, T, HS);
            memset(dkh, 0, sizeof(float) * T * HS);
            memset(dvh, 0, sizeof(float) * T * HS);
            for (int t = 0; t < T; t++) {
                const float *p = att + (bh * T + t) * T;
                const float *go = dout + ((int64_t)b * T + t) * C + (int64_t)h * HS;
                const float *qt = q + (bh * T + t) * HS;
                float *dqt = dq + (bh * T + t) * HS;
                /* dP = dO v^T (for this query and the next few) ; dV += P^T dO */
                if (t % QUERIES == 0) {
                    int nq = T - t < QUERIES ? T - t : QUERIES;
                    dots_transposed(dp4, ld, go, C, nq, vt, ld, t + nq, HS);
                }
                const float *dp = dp4 + (int64_t)(t % QUERIES) * ld;
                outer_rows(dvh, p, go, t, HS);
                float dot = 0.0f;
                for (int s = 0; s <= t; s++) dot += p[s] * dp[s];
                /* dS = P * (dP - sum(P dP)) ; dQ = dS K * scale ; dK += dS^T Q * scale */
                for (int s = 0; s <= t; s++) ds[s] = p[s] * (dp[s] - dot) * scale;
                memset(dqt, 0, sizeof(float) * HS);
                axpy_rows(dqt, ds, kh, t, HS);
                outer_rows(dkh, ds, qt, t, HS);
            }
        }
    free(work);
    return GZ_OK;
}
