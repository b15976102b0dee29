/* rotary.c — per-head q, k, v with rotary position embeddings: split from GPT-NeoX's fused qkv (row layout per
 * token: [head 0: q(HS) k(HS) v(HS)] [head 1: ...], its view/chunk), or transposed from one of Llama's separate
 * projections (row layout [head 0][head 1]..., kv heads repeated for grouped-query attention). */
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

gz_status gz_cpu_rotary_heads_forward(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                                      const float *sin_t, int B, int T, int Hin, int Hout, int HS, int rot) {
    int half = rot / 2, group = Hout / Hin;
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)B * T * Hout * HS)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t bt = (int64_t)b * T + t;
            const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
            for (int h = 0; h < Hout; h++)
                rotate(out + (((int64_t)b * Hout + h) * T + t) * HS, inp + (bt * Hin + h / group) * HS, c, s, rot, HS,
                       1.0f);
        }
    return GZ_OK;
}

/* One thread per input head row: the group's copies are summed in head order (deterministic). */
gz_status gz_cpu_rotary_heads_backward(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                                       const float *sin_t, int B, int T, int Hin, int Hout, int HS, int rot) {
    int half = rot / 2, group = Hout / Hin;
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)B * T * Hout * HS)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t bt = (int64_t)b * T + t;
            const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
            for (int g = 0; g < Hin; g++) {
                float *dst = dinp + (bt * Hin + g) * HS;
                for (int j = 0; j < group; j++) {
                    const float *src = dout + (((int64_t)b * Hout + g * group + j) * T + t) * HS;
                    if (j == 0) {
                        rotate(dst, src, c, s, rot, HS, -1.0f);
                        continue;
                    }
                    for (int i = 0; i < half; i++) {
                        float y1, y2;
                        gz_rotary_pair(src[i], src[i + half], c[i], -s[i], &y1, &y2);
                        dst[i] += y1;
                        dst[i + half] += y2;
                    }
                    for (int i = rot; i < HS; i++) dst[i] += src[i];
                }
            }
        }
    return GZ_OK;
}
