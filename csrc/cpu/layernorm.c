/* layernorm.c — LayerNorm forward and backward (biased variance, as torch.nn.LayerNorm). */
#include <math.h>
#include "cpu_ops.h"

gz_status gz_cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                   const float *b, int64_t N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        double s = 0.0;
        for (int c = 0; c < C; c++) s += x[c];
        float mu = (float)(s / C);
        double ss = 0.0;
        for (int c = 0; c < C; c++) {
            float d = x[c] - mu;
            ss += (double)d * d;
        }
        float rs = 1.0f / sqrtf((float)(ss / C) + eps);
        float *y = out + n * C;
        for (int c = 0; c < C; c++) y[c] = (x[c] - mu) * rs * w[c] + b[c];
        mean[n] = mu;
        rstd[n] = rs;
    }
    return GZ_OK;
}

gz_status gz_cpu_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                    const float *w, const float *mean, const float *rstd, int64_t N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *dy = dout + n * C;
            float mu = mean[n], rs = rstd[n];
            /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * w */
            double sg = 0.0, sgx = 0.0;
            for (int c = 0; c < C; c++) {
                float g = dy[c] * w[c];
                sg += g;
                sgx += (double)g * ((x[c] - mu) * rs);
            }
            float mg = (float)(sg / C), mgx = (float)(sgx / C);
            float *dx = dinp + n * C;
            for (int c = 0; c < C; c++) {
                float xhat = (x[c] - mu) * rs;
                dx[c] += rs * (dy[c] * w[c] - mg - xhat * mgx);
            }
        }
    }
    if (dw || db) {
        /* parallel over columns, rows summed in order: deterministic for any thread count */
        const int block = 64;
#pragma omp parallel for schedule(static)
        for (int c0 = 0; c0 < C; c0 += block) {
            int c1 = c0 + block < C ? c0 + block : C;
            for (int64_t n = 0; n < N; n++) {
                const float *x = inp + n * C, *dy = dout + n * C;
                float mu = mean[n], rs = rstd[n];
                for (int c = c0; c < c1; c++) {
                    if (dw) dw[c] += dy[c] * (x[c] - mu) * rs;
                    if (db) db[c] += dy[c];
                }
            }
        }
    }
    return GZ_OK;
}
