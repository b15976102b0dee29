/* rmsnorm.c — RMSNorm forward and backward (HF's LlamaRMSNorm: w * (x / sqrt(mean(x^2) + eps))). */
#include <math.h>
#include "cpu_ops.h"
#include "../elementwise.h"

/* Row sums in double over LANES fixed partial sums, as layernorm.c: the same bits at every vector width. */
#define LANES 8

static double sum_lanes(const double *acc) {
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

GZ_VECTOR_CLONES static void rmsnorm_row(float *y, float *rstd, const float *x, const float *w, int C, float eps) {
    double acc[LANES] = {0};
    int c = 0;
    for (; c + LANES <= C; c += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += (double)x[c + j] * x[c + j];
    for (int j = 0; c + j < C; j++) acc[j] += (double)x[c + j] * x[c + j];
    float rs = 1.0f / sqrtf((float)(sum_lanes(acc) / C) + eps);
    for (c = 0; c < C; c++) y[c] = gz_rmsnorm(x[c], w[c], rs);
    *rstd = rs;
}

/* dx += rstd * (g - xhat * mean(g * xhat)),  g = dy * w */
GZ_VECTOR_CLONES static void rmsnorm_row_backward(float *dx, const float *dy, const float *x, const float *w, float rs,
                                                  int C) {
    double sgx[LANES] = {0};
    int c = 0;
    for (; c + LANES <= C; c += LANES)
        for (int j = 0; j < LANES; j++) sgx[j] += (double)(dy[c + j] * w[c + j]) * (x[c + j] * rs);
    for (int j = 0; c + j < C; j++) sgx[j] += (double)(dy[c + j] * w[c + j]) * (x[c + j] * rs);
    float mgx = (float)(sum_lanes(sgx) / C);
    for (c = 0; c < C; c++) dx[c] += gz_rmsnorm_grad(x[c], w[c], dy[c], rs, mgx);
}

gz_status gz_cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int64_t N, int C,
                                 float eps) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(N * C)
    for (int64_t n = 0; n < N; n++) rmsnorm_row(out + n * C, rstd + n, inp + n * C, w, C, eps);
    return GZ_OK;
}

gz_status gz_cpu_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                                  const float *rstd, int64_t N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) rmsnorm_row_backward(dinp + n * C, dout + n * C, inp + n * C, w, rstd[n], C);
    }
    if (dw) gz_cpu_norm_weight_grad(dw, dout, inp, NULL, rstd, N, C);
    return GZ_OK;
}
