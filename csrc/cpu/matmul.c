/* matmul.c — Linear layers (y = x W^T + b, W stored [out, in] as HF does) through CBLAS. */
#include "blas.h"
#include "cpu_ops.h"

/* Up to this many rows the streaming kernel of matmul_few_rows.c beats BLAS (measured on decode steps). */
#define GZ_FEW_ROWS_MAX 8

void gz_cpu_add_column_sums(float *sum, const float *x, int64_t N, int C) {
    const int block = 256; /* parallel over column blocks, each summing the rows in order */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += block) {
        int c1 = c0 + block < C ? c0 + block : C;
        for (int64_t n = 0; n < N; n++) {
            const float *row = x + n * C;
            for (int c = c0; c < c1; c++) sum[c] += row[c];
        }
    }
}

float gz_cpu_fill_bias(float *out, const float *bias, int64_t N, int OC) {
    if (!bias) return 0.0f;
#pragma omp parallel for schedule(static) GZ_PAR_IF(N * OC)
    for (int64_t n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) out[n * OC + o] = bias[o];
    return 1.0f;
}

gz_status gz_cpu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int64_t N, int C,
                                int OC) {
    if (N <= GZ_FEW_ROWS_MAX) return gz_cpu_matmul_few_rows(out, inp, w, bias, N, C, OC);
    float beta = gz_cpu_fill_bias(out, bias, N, OC);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
    return GZ_OK;
}

gz_status gz_cpu_matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, int64_t N, int C, int OC) {
    if (dinp) /* dinp[N,C] = dout[N,OC] @ W[OC,C] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, C, OC, 1.0f, dout, OC, w, C, 0.0f, dinp, C);
    if (dw) /* dW[OC,C] += dout^T @ inp */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, (int)N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (db) gz_cpu_add_column_sums(db, dout, N, OC);
    return GZ_OK;
}
