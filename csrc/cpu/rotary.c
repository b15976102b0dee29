/* rotary.c — per-head q, k, v with rotary position embeddings: split from GPT-NeoX's fused qkv (row layout per
 * token: [head 0: q(HS) k(HS) v(HS)] [head 1: ...], its view/chunk), or transposed from one of Llama's separate
 * projections (row layout [head 0][head 1]...). */
#include "cpu_ops.h"
#include "../elementwise.h"

/* Rotates the first rot dims of x (rotate-half), sign = +1 forward, -1 for the transpose. */
static void rotate(float *y, const float *x, const float *c, const float *s, int rot, int HS, float sign) {
    int half = rot / 2;
    for (int i = 0; i < half; i++) gz_rotary_pair(x[i], x[i + half], c[i], sign * s[i], &y[i], &y[i + half]);
    for (int i = rot; i < HS; i++) y[i] = x[i];
}

/* Moves heads between the token-major tok [B, T, H, parts, HS] (parts 1: one projection's output; 3: GPT-NeoX's
 * fused q, k, v) and the head-major heads[j] [B, H, T, HS], j < parts: from tok into heads (to_heads), else back.
 * Parts 0 and 1 (q, k) are rotated, sign +1 forward and -1 for the transpose; a third (v) is copied. */
static void move_heads(float *tok, float *const *heads, int parts, int to_heads, const int32_t *pos,
                       const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot, float sign) {
    int half = rot / 2;
#pragma omp parallel for collapse(2) schedule(static) GZ_PAR_IF((int64_t)B * T * H * HS * parts)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t bt = (int64_t)b * T + t;
            const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
            for (int h = 0; h < H; h++) {
                float *x = tok + (bt * H + h) * parts * HS;
                int64_t at = (((int64_t)b * H + h) * T + t) * HS;
                for (int j = 0; j < parts; j++) {
                    int r = j < 2 ? rot : 0; /* rotating no dims copies */
                    if (to_heads) rotate(heads[j] + at, x + (int64_t)j * HS, c, s, r, HS, sign);
                    else rotate(x + (int64_t)j * HS, heads[j] + at, c, s, r, HS, sign);
                }
            }
        }
}

gz_status gz_cpu_rotary_split_forward(float *q, float *k, float *v, const float *qkv, const int32_t *pos,
                                      const float *cos_t, const float *sin_t, int B, int T, int NH, int HS, int rot) {
    move_heads((float *)qkv, (float *const[]){q, k, v}, 3, 1, pos, cos_t, sin_t, B, T, NH, HS, rot, 1.0f);
    return GZ_OK;
}

gz_status gz_cpu_rotary_split_backward(float *dqkv, const float *dq, const float *dk, const float *dv,
                                       const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T,
                                       int NH, int HS, int rot) {
    move_heads(dqkv, (float *const[]){(float *)dq, (float *)dk, (float *)dv}, 3, 0, pos, cos_t, sin_t, B, T, NH, HS,
               rot, -1.0f);
    return GZ_OK;
}

gz_status gz_cpu_rotary_heads_forward(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                                      const float *sin_t, int B, int T, int H, int HS, int rot) {
    move_heads((float *)inp, &out, 1, 1, pos, cos_t, sin_t, B, T, H, HS, rot, 1.0f);
    return GZ_OK;
}

gz_status gz_cpu_rotary_heads_backward(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                                       const float *sin_t, int B, int T, int H, int HS, int rot) {
    move_heads(dinp, (float *const[]){(float *)dout}, 1, 0, pos, cos_t, sin_t, B, T, H, HS, rot, -1.0f);
    return GZ_OK;
}
