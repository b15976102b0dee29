/* adamw.cu — one AdamW step over a tensor (gz_adamw_element from elementwise.h: torch.optim.AdamW's
 * operation order) and the squared norm of the applied update, reduced deterministically. */
#include "cuda_ops.h"

__global__ void adamw_kernel(double *parts, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                             float b1, float b2, float eps, float wd, float bias_corr1, float bc2_sqrt,
                             float grad_scale) {
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float u = gz_adamw_element(&p[i], g[i] * grad_scale, &m[i], &v[i], lr, b1, b2, eps, wd, bias_corr1, bc2_sqrt);
        s += (double)u * u;
    }
    s = gz_block_sum(s);
    if (threadIdx.x == 0) parts[blockIdx.x] = s;
}

gz_status gz_cuda_adamw_update(gz_backend_ctx *ctx, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                               float b1, float b2, float eps, float wd, float bias_corr1, float bias_corr2,
                               float grad_scale, double *upd_sq_host) {
    gz_cuda_weights_written(ctx, p, (size_t)(n > 0 ? n : 0) * sizeof(float)); /* the weight changes: re-round */
    if (n <= 0) {
        if (upd_sq_host) *upd_sq_host = 0.0;
        return GZ_OK;
    }
    int nb = gz_reduce_blocks(n);
    void *parts;
    GZ_TRY(gz_cuda_scratch(ctx, GZ_SCRATCH_REDUCE, (size_t)nb * sizeof(double), &parts));
    /* bias_corr2 is 1 - b2^t, as the CPU backend takes it; the element update wants its root */
    adamw_kernel<<<nb, GZ_THREADS>>>((double *)parts, p, g, m, v, n, lr, b1, b2, eps, wd, bias_corr1,
                                     sqrtf(bias_corr2), grad_scale);
    GZ_LAUNCH_CHECK("adamw_update");
    if (!upd_sq_host) return GZ_OK;
    return gz_cuda_finish_sum(ctx, (const double *)parts, nb, upd_sq_host);
}
