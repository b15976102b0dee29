/* matmul.c — Linear layers (y = x W^T + b, W stored [out, in] as HF does) through CBLAS. */
#include <cblas.h>
#include "cpu_ops.h"

/* A single row (batch-1 decode steps): BLAS would spend much of its time packing W for a product that
 * reads each weight once, so stream W row by row instead. With more rows the dot products become
 * compute-bound and BLAS's blocked kernel wins (measured), so they stay with BLAS. */
#define GZ_SMALL_N 1

GZ_VECTOR_CLONES
static float dot(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void matmul_small_n(float *out, const float *inp, const float *w, const float *bias, int64_t N, int C,
                           int OC) {
#pragma omp parallel for schedule(static) GZ_PAR_IF((int64_t)OC * C)
    for (int o = 0; o < OC; o++) {
        const float *wo = w + (int64_t)o * C;
        for (int64_t n = 0; n < N; n++) out[n * OC + o] = dot(inp + n * C, wo, C) + (bias ? bias[o] : 0.0f);
    }
}

gz_status gz_cpu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int64_t N, int C,
                                int OC) {
    if (N <= GZ_SMALL_N) {
        matmul_small_n(out, inp, w, bias, N, C, OC);
        return GZ_OK;
    }
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(N * OC)
        for (int64_t n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[n * OC + o] = bias[o];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
    return GZ_OK;
}

gz_status gz_cpu_matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, int64_t N, int C, int OC) {
    if (dinp) /* dinp[N,C] = dout[N,OC] @ W[OC,C] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, C, OC, 1.0f, dout, OC, w, C, 0.0f, dinp, C);
    if (dw) /* dW[OC,C] += dout^T @ inp */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, (int)N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (db) {
        const int block = 256;
#pragma omp parallel for schedule(static)
        for (int o0 = 0; o0 < OC; o0 += block) {
            int o1 = o0 + block < OC ? o0 + block : OC;
            for (int64_t n = 0; n < N; n++) {
                const float *row = dout + n * OC;
                for (int o = o0; o < o1; o++) db[o] += row[o];
            }
        }
    }
    return GZ_OK;
}
