/* matmul.cu — Linear layers y = x W^T + b (W stored [out, in] as HF does) through gz_cuda_gemm.
 * Row-major X[N,C] is column-major X^T, so each product below is written for cuBLAS's
 * column-major view of the same buffers. */
#include "colsum.cuh"
#include "cuda_ops.h"

__global__ void bias_fill_kernel(float *out, const float *bias, int64_t N, int OC) {
    int64_t total = N * OC, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) out[i] = bias[i % OC];
}

gz_status gz_cuda_matmul_forward(gz_backend_ctx *ctx, float *out, const float *inp, const float *w, const float *bias,
                                 int64_t N, int C, int OC) {
    if (N <= 0 || OC <= 0) return GZ_OK;
    float beta = 0.0f;
    if (bias) {
        bias_fill_kernel<<<gz_blocks_for(N * OC), GZ_THREADS>>>(out, bias, N, OC);
        GZ_LAUNCH_CHECK("matmul bias");
        beta = 1.0f;
    }
    /* out^T[OC,N] = W[OC,C] . inp^T[C,N]:  A = w viewed C x OC (transposed), B = inp viewed C x N */
    return gz_cuda_gemm(ctx, true, false, OC, (int)N, C, 1.0f, w, GZ_OPERAND_WEIGHT, C, 0, (int64_t)OC * C, inp,
                        GZ_OPERAND_ROUND, C, 0, N * C, beta, out, OC, 0, 1);
}

struct BiasGrad {
    const float *dout;
    int OC;
    __device__ void operator()(int64_t n, int c, float *v0, float *) const { *v0 += dout[n * OC + c]; }
};

gz_status gz_cuda_matmul_backward(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, int64_t N, int C, int OC) {
    if (N <= 0) return GZ_OK;
    /* dout feeds both GEMMs: in bf16 mode it is rounded once, here */
    const void *d = dout;
    gz_operand dk = GZ_OPERAND_ROUND;
    if ((dinp || dw) && C > 0 && OC > 0 && gz_cuda_gemm_uses_bf16(ctx, GZ_OPERAND_ROUND, GZ_OPERAND_ROUND, 1, 1)) {
        GZ_TRY(gz_cuda_to_bf16(ctx, GZ_SCRATCH_DOUT, dout, N * OC, &d));
        dk = GZ_OPERAND_BF16;
    }
    if (dinp) /* dinp^T[C,N] = W^T[C,OC] . dout^T[OC,N]  (overwrites) */
        GZ_TRY(gz_cuda_gemm(ctx, false, false, C, (int)N, OC, 1.0f, w, GZ_OPERAND_WEIGHT, C, 0, (int64_t)OC * C, d, dk,
                            OC, 0, N * OC, 0.0f, dinp, C, 0, 1));
    if (dw) /* dW^T[C,OC] += inp^T[C,N] . dout[N,OC]  (accumulates) */
        GZ_TRY(gz_cuda_gemm(ctx, false, true, C, OC, (int)N, 1.0f, inp, GZ_OPERAND_ROUND, C, 0, N * C, d, dk, OC, 0,
                            N * OC, 1.0f, dw, C, 0, 1));
    if (db) GZ_TRY(gz_colsum2(db, (float *)NULL, BiasGrad{dout, OC}, N, OC, "matmul bias grad"));
    return GZ_OK;
}
