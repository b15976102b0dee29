/* layernorm.cu — LayerNorm forward and backward (biased variance, as torch.nn.LayerNorm).
 * One warp per row; row sums in double like the CPU loops. dw/db are column sums in a fixed
 * order (colsum.cuh), so the parameter gradients are deterministic. */
#include "colsum.cuh"
#include "cuda_ops.h"

#define GZ_LN_ROWS_PER_BLOCK 8

__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                         const float *b, int64_t N, int C, float eps) {
    int64_t n = (int64_t)blockIdx.x * GZ_LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *x = inp + n * C;
    double s = 0.0;
    for (int c = lane; c < C; c += 32) s += x[c];
    float mu = (float)(gz_warp_sum(s) / C);
    double ss = 0.0;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - mu;
        ss += (double)d * d;
    }
    float rs = 1.0f / sqrtf((float)(gz_warp_sum(ss) / C) + eps);
    float *y = out + n * C;
    for (int c = lane; c < C; c += 32) y[c] = (x[c] - mu) * rs * w[c] + b[c];
    if (lane == 0) {
        mean[n] = mu;
        rstd[n] = rs;
    }
}

__global__ void layernorm_dinp_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                      const float *mean, const float *rstd, int64_t N, int C) {
    int64_t n = (int64_t)blockIdx.x * GZ_LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *x = inp + n * C, *dy = dout + n * C;
    float mu = mean[n], rs = rstd[n];
    /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * w */
    double sg = 0.0, sgx = 0.0;
    for (int c = lane; c < C; c += 32) {
        float g = dy[c] * w[c];
        sg += g;
        sgx += (double)g * ((x[c] - mu) * rs);
    }
    float mg = (float)(gz_warp_sum(sg) / C), mgx = (float)(gz_warp_sum(sgx) / C);
    float *dx = dinp + n * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (x[c] - mu) * rs;
        dx[c] += rs * (dy[c] * w[c] - mg - xhat * mgx);
    }
}

struct LnParamGrad {
    const float *dout, *inp, *mean, *rstd;
    int C;
    __device__ void operator()(int64_t n, int c, float *dw, float *db) const {
        float dy = dout[n * C + c];
        *dw += dy * (inp[n * C + c] - mean[n]) * rstd[n];
        *db += dy;
    }
};

gz_status gz_cuda_layernorm_forward(gz_backend_ctx *ctx, float *out, float *mean, float *rstd, const float *inp,
                                    const float *w, const float *b, int64_t N, int C, float eps) {
    if (N <= 0 || C <= 0) return GZ_OK;
    unsigned blocks = (unsigned)((N + GZ_LN_ROWS_PER_BLOCK - 1) / GZ_LN_ROWS_PER_BLOCK);
    layernorm_forward_kernel<<<blocks, 32 * GZ_LN_ROWS_PER_BLOCK>>>(out, mean, rstd, inp, w, b, N, C, eps);
    GZ_LAUNCH_CHECK("layernorm_forward");
    return GZ_OK;
}

gz_status gz_cuda_layernorm_backward(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                     const float *inp, const float *w, const float *mean, const float *rstd, int64_t N,
                                     int C) {
    if (N <= 0 || C <= 0) return GZ_OK;
    if (dinp) {
        unsigned blocks = (unsigned)((N + GZ_LN_ROWS_PER_BLOCK - 1) / GZ_LN_ROWS_PER_BLOCK);
        layernorm_dinp_kernel<<<blocks, 32 * GZ_LN_ROWS_PER_BLOCK>>>(dinp, dout, inp, w, mean, rstd, N, C);
        GZ_LAUNCH_CHECK("layernorm_backward");
    }
    return gz_colsum2(dw, db, LnParamGrad{dout, inp, mean, rstd, C}, N, C, "layernorm param grad");
}
