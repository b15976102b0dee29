/* attention.c — causal softmax attention over q, k, v [B, NH, T, HS] (fp32 scores, 1/sqrt(HS) scale).
 *
 * The per-(b, h) products go through cblas_sgemm, called from inside the OpenMP loop with BLAS set to one
 * thread (gz_blas_serial_begin), so each task is one sequential sgemm, no second thread pool competes for
 * the cores, and the results do not depend on scheduling. Causality is exploited by blocking along T: a block
 * of BLOCK queries only meets the keys up to its own end (and a block of keys only the queries from its
 * own start), so about half the T x T work is skipped for long sequences. */
#include "blas.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cpu_ops.h"
#include "vec_math.h"

#define BLOCK 32 /* queries (or keys) per causal block */

static int min_int(int a, int b) { return a < b ? a : b; }

gz_status gz_cpu_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B,
                                   int T, int NH, int HS) {
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS, nqb = (T + BLOCK - 1) / BLOCK;
    int blas_saved = gz_blas_serial_begin();
    /* dynamic: later query blocks see more keys; every output is still written by exactly one task */
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int qb = 0; qb < nqb; qb++) {
                int64_t bh = (int64_t)b * NH + h;
                int t0 = qb * BLOCK, t1 = min_int(t0 + BLOCK, T), nq = t1 - t0;
                const float *kh = k + bh * T * HS, *vh = v + bh * T * HS;
                float *p0 = att + (bh * T + t0) * T;
                /* raw scores S[t0:t1, 0:t1] = Q K^T (keys past each row's own t are zeroed below) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, t1, HS, 1.0f, q + (bh * T + t0) * HS, HS,
                            kh, HS, 0.0f, p0, T);
                for (int t = t0; t < t1; t++) {
                    float *p = att + (bh * T + t) * T;
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
                }
                /* out[t0:t1] = P[t0:t1, 0:t1] V[0:t1] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, HS, t1, 1.0f, p0, T, vh, HS, 0.0f,
                            out + ((int64_t)b * T + t0) * C + (int64_t)h * HS, C);
            }
    gz_blas_serial_end(blas_saved);
    return GZ_OK;
}

/* scratch [B, NH, T, T] holds dP, turned into dS in place, for each (b, h). */
gz_status gz_cpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                    const float *att, const float *q, const float *k, const float *v, int B, int T,
                                    int NH, int HS) {
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS, nb = (T + BLOCK - 1) / BLOCK;
    int blas_saved = gz_blas_serial_begin();
    /* one task per (b, h): every product of a head is computed by one thread, in a fixed order */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            int64_t bh = (int64_t)b * NH + h;
            const float *kh = k + bh * T * HS, *vh = v + bh * T * HS, *qh = q + bh * T * HS;
            const float *p = att + bh * T * T, *goh = dout + (int64_t)b * T * C + (int64_t)h * HS;
            float *dqh = dq + bh * T * HS, *dkh = dk + bh * T * HS, *dvh = dv + bh * T * HS;
            float *ds = scratch + bh * T * T;
            for (int qb = 0; qb < nb; qb++) {
                int t0 = qb * BLOCK, t1 = min_int(t0 + BLOCK, T);
                /* dP[t0:t1, 0:t1] = dO V^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, HS, 1.0f, goh + (int64_t)t0 * C, C,
                            vh, HS, 0.0f, ds + (int64_t)t0 * T, T);
                /* dS = P * (dP - sum(P dP)) * scale, zero past t up to the block end (P is zero there) */
                for (int t = t0; t < t1; t++) {
                    const float *pt = p + (int64_t)t * T;
                    float *dst = ds + (int64_t)t * T;
                    float dot = 0.0f;
                    for (int s = 0; s <= t; s++) dot += pt[s] * dst[s];
                    for (int s = 0; s <= t; s++) dst[s] = pt[s] * (dst[s] - dot) * scale;
                    for (int s = t + 1; s < t1; s++) dst[s] = 0.0f;
                }
                /* dQ[t0:t1] = dS[t0:t1, 0:t1] K[0:t1] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, HS, t1, 1.0f, ds + (int64_t)t0 * T, T,
                            kh, HS, 0.0f, dqh + (int64_t)t0 * HS, HS);
            }
            for (int kb = 0; kb < nb; kb++) {
                int s0 = kb * BLOCK, s1 = min_int(s0 + BLOCK, T);
                /* keys s0..s1-1 meet queries s0..T-1 only; rows below their query block's end hold zeros */
                /* dV[s0:s1] = P[s0:T, s0:s1]^T dO[s0:T] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s1 - s0, HS, T - s0, 1.0f, p + (int64_t)s0 * T + s0,
                            T, goh + (int64_t)s0 * C, C, 0.0f, dvh + (int64_t)s0 * HS, HS);
                /* dK[s0:s1] = dS[s0:T, s0:s1]^T Q[s0:T] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s1 - s0, HS, T - s0, 1.0f, ds + (int64_t)s0 * T + s0,
                            T, qh + (int64_t)s0 * HS, HS, 0.0f, dkh + (int64_t)s0 * HS, HS);
            }
        }
    gz_blas_serial_end(blas_saved);
    return GZ_OK;
}
