/* attention_cached.c — attention against a KV cache, for generation (each token knows its row and position);
 * the cache holds the kv heads only (grouped-query attention: query head h reads kv head h / (NH / NKV)). */
#include <math.h>
#include <string.h>
#include "cpu_ops.h"
#include "vec_math.h"
#include "../elementwise.h"

gz_status gz_cpu_kv_append(float *kcache, float *vcache, const float *k, const float *v, const int32_t *row,
                           const int32_t *pos, int N, int NH, int HS, int S) {
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)N * NH * HS)
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < N; i++) {
            int64_t dst = (((int64_t)row[i] * NH + h) * S + pos[i]) * HS, src = ((int64_t)h * N + i) * HS;
            memcpy(kcache + dst, k + src, sizeof(float) * HS);
            memcpy(vcache + dst, v + src, sizeof(float) * HS);
        }
    return GZ_OK;
}

/* Scores q.k in 8 lanes (a scalar sum would not vectorise), softmax (max and sum in vec_math.h's lanes), then P.V
 * for one token and head. */
GZ_VECTOR_CLONES
static void attend_one(float *o, float *p, const float *qi, const float *kc, const float *vc, int n, int HS,
                       float scale) {
    for (int s = 0; s < n; s++) {
        const float *ks = kc + (int64_t)s * HS;
        float acc[8] = {0};
        int j = 0;
        for (; j + 8 <= HS; j += 8)
            for (int l = 0; l < 8; l++) acc[l] += qi[j + l] * ks[j + l];
        float d = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; j < HS; j++) d += qi[j] * ks[j];
        p[s] = d * scale;
    }
    float mx = gz_row_max(p, n, -INFINITY);
    gz_exp_shifted(p, mx, n);
    float inv = 1.0f / gz_row_sum(p, n);
    memset(o, 0, sizeof(float) * HS);
    for (int s = 0; s < n; s++) {
        float w = p[s] * inv;
        const float *vs = vc + (int64_t)s * HS;
        for (int j = 0; j < HS; j++) o[j] += w * vs[j];
    }
}

gz_status gz_cpu_attention_cached(float *out, float *scratch, const float *q, const float *kcache, const float *vcache,
                                  const int32_t *row, const int32_t *pos, int N, int NH, int NKV, int HS, int S) {
    const float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)N * NH * S * HS / 4)
    for (int i = 0; i < N; i++)
        for (int h = 0; h < NH; h++) {
            int64_t cache = ((int64_t)row[i] * NKV + gz_kv_head(h, NH, NKV)) * S * HS;
            attend_one(out + (int64_t)i * NH * HS + (int64_t)h * HS, scratch + ((int64_t)i * NH + h) * S,
                       q + ((int64_t)h * N + i) * HS, kcache + cache, vcache + cache, pos[i] + 1, HS, scale);
        }
    return GZ_OK;
}
