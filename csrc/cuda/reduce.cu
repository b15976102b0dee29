/* reduce.cu — deterministic sums in double: pass 1 gives one partial per block (grid-stride, fixed
 * grid for a given n), pass 2 adds the partials in one block; the tree is fixed, so the same
 * input gives the same bits on every run. Used by sum_squares and adamw_update. */
#include "cuda_ops.h"

__global__ void sum_squares_kernel(double *parts, const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    s = gz_block_sum(s);
    if (threadIdx.x == 0) parts[blockIdx.x] = s;
}

__global__ void finish_sum_kernel(double *out, const double *parts, int nparts) {
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += parts[i];
    s = gz_block_sum(s);
    if (threadIdx.x == 0) *out = s;
}

gz_status gz_cuda_finish_sum(gz_backend_ctx *ctx, const double *parts, int nparts, double *out_host) {
    void *rows;
    GZ_TRY(gz_cuda_scratch(ctx, GZ_SCRATCH_ROWS, sizeof(double), &rows));
    finish_sum_kernel<<<1, 1024>>>((double *)rows, parts, nparts);
    GZ_LAUNCH_CHECK("finish_sum");
    return gz_cuda_download(ctx, out_host, rows, sizeof(double));
}

gz_status gz_cuda_sum_squares(gz_backend_ctx *ctx, const float *x, int64_t n, double *out_host) {
    if (n <= 0) {
        *out_host = 0.0;
        return GZ_OK;
    }
    int nb = gz_reduce_blocks(n);
    void *parts;
    GZ_TRY(gz_cuda_scratch(ctx, GZ_SCRATCH_REDUCE, (size_t)nb * sizeof(double), &parts));
    sum_squares_kernel<<<nb, GZ_THREADS>>>((double *)parts, x, n);
    GZ_LAUNCH_CHECK("sum_squares");
    return gz_cuda_finish_sum(ctx, (const double *)parts, nb, out_host);
}
