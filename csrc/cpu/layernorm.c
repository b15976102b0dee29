/* layernorm.c — LayerNorm forward and backward (biased variance, as torch.nn.LayerNorm). */
#include <math.h>
#include "cpu_ops.h"

/* Row sums in double over LANES fixed partial sums: they vectorise, and give the same bits at every
 * vector width (GZ_VECTOR_CLONES; an OpenMP region's body would not be cloned). */
#define LANES 8

static double sum_lanes(const double *acc) {
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

GZ_VECTOR_CLONES static void layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *w,
                                           const float *b, int C, float eps) {
    double acc[LANES] = {0};
    int c = 0;
    for (; c + LANES <= C; c += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += x[c + j];
    for (int j = 0; c + j < C; j++) acc[j] += x[c + j];
    float mu = (float)(sum_lanes(acc) / C);
    double acc2[LANES] = {0};
    for (c = 0; c + LANES <= C; c += LANES)
        for (int j = 0; j < LANES; j++) {
            float d = x[c + j] - mu;
            acc2[j] += (double)d * d;
        }
    for (int j = 0; c + j < C; j++) {
        float d = x[c + j] - mu;
        acc2[j] += (double)d * d;
    }
    float rs = 1.0f / sqrtf((float)(sum_lanes(acc2) / C) + eps);
    for (c = 0; c < C; c++) y[c] = (x[c] - mu) * rs * w[c] + b[c];
    *mean = mu;
    *rstd = rs;
}

/* dx += rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * w */
GZ_VECTOR_CLONES static void layernorm_row_backward(float *dx, const float *dy, const float *x, const float *w,
                                                    float mu, float rs, int C) {
    double sg[LANES] = {0}, sgx[LANES] = {0};
    int c = 0;
#define ACCUMULATE(k, j)                                                                                           \
    do {                                                                                                           \
        float g = dy[k] * w[k];                                                                                    \
        sg[j] += g;                                                                                                \
        sgx[j] += (double)g * ((x[k] - mu) * rs);                                                                  \
    } while (0)
    for (; c + LANES <= C; c += LANES)
        for (int j = 0; j < LANES; j++) ACCUMULATE(c + j, j);
    for (int j = 0; c + j < C; j++) ACCUMULATE(c + j, j);
#undef ACCUMULATE
    float mg = (float)(sum_lanes(sg) / C), mgx = (float)(sum_lanes(sgx) / C);
    for (c = 0; c < C; c++) {
        float xhat = (x[c] - mu) * rs;
        dx[c] += rs * (dy[c] * w[c] - mg - xhat * mgx);
    }
}

gz_status gz_cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                   const float *b, int64_t N, int C, float eps) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(N * C)
    for (int64_t n = 0; n < N; n++) layernorm_row(out + n * C, mean + n, rstd + n, inp + n * C, w, b, C, eps);
    return GZ_OK;
}

gz_status gz_cpu_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                    const float *w, const float *mean, const float *rstd, int64_t N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++)
            layernorm_row_backward(dinp + n * C, dout + n * C, inp + n * C, w, mean[n], rstd[n], C);
    }
    if (dw) gz_cpu_norm_weight_grad(dw, dout, inp, mean, rstd, N, C);
    if (db) gz_cpu_add_column_sums(db, dout, N, C);
    return GZ_OK;
}

void gz_cpu_norm_weight_grad(float *dw, const float *dout, const float *inp, const float *mean, const float *rstd,
                             int64_t N, int C) {
    const int block = 64;
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += block) {
        int c1 = c0 + block < C ? c0 + block : C;
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *dy = dout + n * C;
            float rs = rstd[n];
            if (mean) {
                float mu = mean[n];
                for (int c = c0; c < c1; c++) dw[c] += dy[c] * (x[c] - mu) * rs;
            } else {
                for (int c = c0; c < c1; c++) dw[c] += dy[c] * (x[c] * rs);
            }
        }
    }
}
