/* rotary.c — per-head q, k, v with rotary position embeddings: split from GPT-NeoX's fused qkv (row layout per
 * token: [head 0: q(HS) k(HS) v(HS)] [head 1: ...], its view/chunk), or transposed from one of Llama's separate
 * projections (row layout [head 0][head 1]...). */
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

/* inp [B, T, H, HS] -> out [B, H, T, HS]; sign -1 with the roles swapped is the backward. */
static void rotary_heads(float *bht, const float *bth, int to_bht, const int32_t *pos, const float *cos_t,
                         const float *sin_t, int B, int T, int H, int HS, int rot, float sign) {
    int half = rot / 2;
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)B * T * H * HS)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t bt = (int64_t)b * T + t;
            const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
            for (int h = 0; h < H; h++) {
                float *x = bht + (((int64_t)b * H + h) * T + t) * HS;
                float *y = (float *)bth + (bt * H + h) * HS;
                if (to_bht) rotate(x, y, c, s, rot, HS, sign);
                else rotate(y, x, c, s, rot, HS, sign);
            }
        }
}

gz_status gz_cpu_rotary_heads_forward(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                                      const float *sin_t, int B, int T, int H, int HS, int rot) {
    rotary_heads(out, inp, 1, pos, cos_t, sin_t, B, T, H, HS, rot, 1.0f);
    return GZ_OK;
}

gz_status gz_cpu_rotary_heads_backward(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                                       const float *sin_t, int B, int T, int H, int HS, int rot) {
    rotary_heads((float *)dout, dinp, 0, pos, cos_t, sin_t, B, T, H, HS, rot, -1.0f);
    return GZ_OK;
}
