/* embedding.c — token embedding lookup and its gradient. */
#include <string.h>
#include "cpu_ops.h"

gz_status gz_cpu_embedding_forward(float *out, const int32_t *tokens, const float *wte, int64_t N, int C) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(N * C)
    for (int64_t n = 0; n < N; n++) memcpy(out + n * C, wte + (int64_t)tokens[n] * C, sizeof(float) * C);
    return GZ_OK;
}

/* Parallel over column blocks, sequential over tokens: repeated tokens accumulate in a fixed order. */
gz_status gz_cpu_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int64_t N, int C) {
    const int block = 64;
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += block) {
        int c1 = c0 + block < C ? c0 + block : C;
        for (int64_t n = 0; n < N; n++) {
            float *dst = dwte + (int64_t)tokens[n] * C;
            const float *src = dout + n * C;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
    return GZ_OK;
}
