/* attention.c — causal softmax attention over q, k, v [B, NH, T, HS] (fp32 scores, 1/sqrt(HS) scale). */
#include <math.h>
#include <string.h>
#include "cpu_ops.h"

gz_status gz_cpu_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B,
                                   int T, int NH, int HS) {
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS;
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                int64_t bh = (int64_t)b * NH + h;
                const float *qt = q + (bh * T + t) * HS;
                const float *kh = k + bh * T * HS, *vh = v + bh * T * HS;
                float *p = att + (bh * T + t) * T;
                float mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    float d = 0.0f;
                    for (int i = 0; i < HS; i++) d += qt[i] * kh[(int64_t)s * HS + i];
                    p[s] = d * scale;
                    if (p[s] > mx) mx = p[s];
                }
                float sum = 0.0f;
                for (int s = 0; s <= t; s++) {
                    p[s] = expf(p[s] - mx);
                    sum += p[s];
                }
                float inv = 1.0f / sum;
                for (int s = 0; s <= t; s++) p[s] *= inv;
                for (int s = t + 1; s < T; s++) p[s] = 0.0f;
                float *o = out + ((int64_t)b * T + t) * C + (int64_t)h * HS;
                memset(o, 0, sizeof(float) * HS);
                for (int s = 0; s <= t; s++) {
                    const float *vs = vh + (int64_t)s * HS;
                    for (int i = 0; i < HS; i++) o[i] += p[s] * vs[i];
                }
            }
    return GZ_OK;
}

/* scratch: [B, NH, T] floats (one dP row per query is rebuilt in place). */
gz_status gz_cpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                    const float *att, const float *q, const float *k, const float *v, int B, int T,
                                    int NH, int HS) {
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS;
    /* one task per (b, h): dk and dv accumulate over queries in a fixed order */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            int64_t bh = (int64_t)b * NH + h;
            const float *kh = k + bh * T * HS, *vh = v + bh * T * HS;
            float *dkh = dk + bh * T * HS, *dvh = dv + bh * T * HS;
            float *dp = scratch + bh * T;
            memset(dkh, 0, sizeof(float) * T * HS);
            memset(dvh, 0, sizeof(float) * T * HS);
            for (int t = 0; t < T; t++) {
                const float *p = att + (bh * T + t) * T;
                const float *go = dout + ((int64_t)b * T + t) * C + (int64_t)h * HS;
                const float *qt = q + (bh * T + t) * HS;
                float *dqt = dq + (bh * T + t) * HS;
                /* dP = dO v^T ; dV += P^T dO */
                float dot = 0.0f;
                for (int s = 0; s <= t; s++) {
                    const float *vs = vh + (int64_t)s * HS;
                    float *dvs = dvh + (int64_t)s * HS;
                    float d = 0.0f;
                    for (int i = 0; i < HS; i++) {
                        d += go[i] * vs[i];
                        dvs[i] += p[s] * go[i];
                    }
                    dp[s] = d;
                    dot += p[s] * d;
                }
                /* dS = P * (dP - sum(P dP)) ; dQ = dS K * scale ; dK += dS^T Q * scale */
                memset(dqt, 0, sizeof(float) * HS);
                for (int s = 0; s <= t; s++) {
                    float ds = p[s] * (dp[s] - dot) * scale;
                    const float *ks = kh + (int64_t)s * HS;
                    float *dks = dkh + (int64_t)s * HS;
                    for (int i = 0; i < HS; i++) {
                        dqt[i] += ds * ks[i];
                        dks[i] += ds * qt[i];
                    }
                }
            }
        }
    return GZ_OK;
}
