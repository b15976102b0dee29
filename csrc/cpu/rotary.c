/* rotary.c — split HF's fused qkv into per-head q, k, v and apply rotary position embeddings.
 * qkv row layout per token: [head 0: q(HS) k(HS) v(HS)] [head 1: ...] (GPT-NeoX's view/chunk). */
#include <string.h>
#include "cpu_ops.h"
#include "../elementwise.h"

/* Rotates the first rot dims of x (rotate-half), sign = +1 forward, -1 for the transpose. */
static void rotate(float *y, const float *x, const float *c, const float *s, int rot, int HS, float sign) {
    int half = rot / 2;
    for (int i = 0; i < half; i++) gz_rotary_pair(x[i], x[i + half], c[i], sign * s[i], &y[i], &y[i + half]);
    for (int i = rot; i < HS; i++) y[i] = x[i];
}

gz_status gz_cpu_rotary_split_forward(float *q, float *k, float *v, const float *qkv, const int32_t *pos,
                                      const float *cos_t, const float *sin_t, int B, int T, int NH, int HS, int rot) {
    int half = rot / 2;
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)B * T * NH * HS * 3)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t bt = (int64_t)b * T + t;
            const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
            const float *row = qkv + bt * 3 * NH * HS;
            for (int h = 0; h < NH; h++) {
                int64_t dst = (((int64_t)b * NH + h) * T + t) * HS;
                const float *src = row + (int64_t)h * 3 * HS;
                rotate(q + dst, src, c, s, rot, HS, 1.0f);
                rotate(k + dst, src + HS, c, s, rot, HS, 1.0f);
                memcpy(v + dst, src + 2 * HS, sizeof(float) * HS);
            }
        }
    return GZ_OK;
}

gz_status gz_cpu_rotary_split_backward(float *dqkv, const float *dq, const float *dk, const float *dv,
                                       const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T,
                                       int NH, int HS, int rot) {
    int half = rot / 2;
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)B * T * NH * HS * 3)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t bt = (int64_t)b * T + t;
            const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
            float *row = dqkv + bt * 3 * NH * HS;
            for (int h = 0; h < NH; h++) {
                int64_t src = (((int64_t)b * NH + h) * T + t) * HS;
                float *dst = row + (int64_t)h * 3 * HS;
                rotate(dst, dq + src, c, s, rot, HS, -1.0f);
                rotate(dst + HS, dk + src, c, s, rot, HS, -1.0f);
                memcpy(dst + 2 * HS, dv + src, sizeof(float) * HS);
            }
        }
    return GZ_OK;
}
