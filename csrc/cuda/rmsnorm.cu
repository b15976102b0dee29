/* rmsnorm.cu — RMSNorm forward and backward (HF's LlamaRMSNorm), one warp per row, row sums in double like
 * the CPU loops; the per-element formulas are elementwise.h's. dw is a column sum in a fixed order
 * (colsum.cuh), so the weight gradient is deterministic. */
#include "colsum.cuh"
#include "cuda_ops.h"

#define GZ_RMS_ROWS_PER_BLOCK 8

__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *w, int64_t N, int C,
                                       float eps) {
    int64_t n = (int64_t)blockIdx.x * GZ_RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *x = inp + n * C;
    double ss = 0.0;
    for (int c = lane; c < C; c += 32) ss += (double)x[c] * x[c];
    float rs = 1.0f / sqrtf((float)(gz_warp_sum(ss) / C) + eps);
    float *y = out + n * C;
    for (int c = lane; c < C; c += 32) y[c] = gz_rmsnorm(x[c], w[c], rs);
    if (lane == 0) rstd[n] = rs;
}

__global__ void rmsnorm_dinp_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                    const float *rstd, int64_t N, int C) {
    int64_t n = (int64_t)blockIdx.x * GZ_RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *x = inp + n * C, *dy = dout + n * C;
    float rs = rstd[n];
    double sgx = 0.0;
    for (int c = lane; c < C; c += 32) sgx += (double)(dy[c] * w[c]) * (x[c] * rs);
    float mgx = (float)(gz_warp_sum(sgx) / C);
    float *dx = dinp + n * C;
    for (int c = lane; c < C; c += 32) dx[c] += gz_rmsnorm_grad(x[c], w[c], dy[c], rs, mgx);
}

struct RmsParamGrad {
    const float *dout, *inp, *rstd;
    int C;
    __device__ void operator()(int64_t n, int c, float *dw, float *unused) const {
        (void)unused;
        *dw += dout[n * C + c] * (inp[n * C + c] * rstd[n]);
    }
};

gz_status gz_cuda_rmsnorm_forward(gz_backend_ctx *ctx, float *out, float *rstd, const float *inp, const float *w,
                                  int64_t N, int C, float eps) {
    if (N <= 0 || C <= 0) return GZ_OK;
    unsigned blocks = (unsigned)((N + GZ_RMS_ROWS_PER_BLOCK - 1) / GZ_RMS_ROWS_PER_BLOCK);
    rmsnorm_forward_kernel<<<blocks, 32 * GZ_RMS_ROWS_PER_BLOCK>>>(out, rstd, inp, w, N, C, eps);
    GZ_LAUNCH_CHECK("rmsnorm_forward");
    return GZ_OK;
}

gz_status gz_cuda_rmsnorm_backward(gz_backend_ctx *ctx, float *dinp, float *dw, const float *dout, const float *inp,
                                   const float *w, const float *rstd, int64_t N, int C) {
    if (N <= 0 || C <= 0) return GZ_OK;
    if (dinp) {
        unsigned blocks = (unsigned)((N + GZ_RMS_ROWS_PER_BLOCK - 1) / GZ_RMS_ROWS_PER_BLOCK);
        rmsnorm_dinp_kernel<<<blocks, 32 * GZ_RMS_ROWS_PER_BLOCK>>>(dinp, dout, inp, w, rstd, N, C);
        GZ_LAUNCH_CHECK("rmsnorm_backward");
    }
    return gz_colsum2(dw, (float *)NULL, RmsParamGrad{dout, inp, rstd, C}, N, C, "rmsnorm weight grad");
}
