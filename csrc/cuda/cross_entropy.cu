/* cross_entropy.cu — token cross-entropy over the vocabulary; target GZ_IGNORE_INDEX is ignored.
 * Forward: one block per row computes lse (exp sums in double, like the CPU) and the row's loss
 * lse - logit[target] in double; the host adds the counted rows in row order (deterministic).
 * Backward: dlogits = scale * (softmax - onehot), in place when dlogits == logits. */
#include <stdlib.h>
#include "cuda_ops.h"

#define GZ_CE_THREADS 512

__global__ void cross_entropy_forward_kernel(float *lse, double *row_loss, const float *logits,
                                             const int32_t *targets, int V) {
    int64_t n = blockIdx.x;
    const float *row = logits + n * V;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, row[i]);
    mx = gz_block_max(mx);
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += exp((double)(row[i] - mx));
    s = gz_block_sum(s);
    if (threadIdx.x == 0) {
        float l = mx + (float)log(s);
        lse[n] = l;
        int32_t t = targets[n];
        row_loss[n] = (t >= 0 && t < V) ? (double)l - (double)row[t] : 0.0;
    }
}

__global__ void cross_entropy_backward_kernel(float *dlogits, const float *logits, const float *lse,
                                              const int32_t *targets, int V, float scale) {
    int64_t n = blockIdx.x;
    const float *row = logits + n * V;
    float *d = dlogits + n * V;
    int32_t t = targets[n];
    if (t == GZ_IGNORE_INDEX) {
        for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0.0f;
        return;
    }
    float l = lse[n];
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float g = scale * expf(row[i] - l);
        if (i == t) g -= scale;
        d[i] = g;
    }
}

gz_status gz_cuda_cross_entropy_forward(gz_backend_ctx *ctx, float *lse, const float *logits, const int32_t *targets,
                                        int64_t N, int V, double *loss_sum_host, int64_t *count_host) {
    *loss_sum_host = 0.0;
    *count_host = 0;
    if (N <= 0) return GZ_OK;
    if (N > 0x7fffffffLL) return gz_fail(GZ_ERR_VALUE, "cross_entropy_forward: %lld rows is too many", (long long)N);
    void *rows;
    size_t bytes = (size_t)N * (sizeof(double) + sizeof(int32_t));
    GZ_TRY(gz_cuda_scratch(ctx, GZ_SCRATCH_ROWS, bytes, &rows));
    double *row_loss = (double *)rows;
    cross_entropy_forward_kernel<<<(unsigned)N, GZ_CE_THREADS>>>(lse, row_loss, logits, targets, V);
    GZ_LAUNCH_CHECK("cross_entropy_forward");
    double *loss_h = (double *)malloc(bytes);
    if (!loss_h) return gz_fail(GZ_ERR_NOMEM, "out of memory for %lld per-row losses", (long long)N);
    int32_t *tgt_h = (int32_t *)(loss_h + N);
    gz_status st = gz_cuda_download(ctx, loss_h, row_loss, (size_t)N * sizeof(double));
    if (st == GZ_OK) st = gz_cuda_download(ctx, tgt_h, targets, (size_t)N * sizeof(int32_t));
    if (st == GZ_OK) {
        double total = 0.0; /* row order, as the CPU backend */
        int64_t count = 0;
        for (int64_t n = 0; n < N; n++) {
            if (tgt_h[n] == GZ_IGNORE_INDEX) continue;
            total += loss_h[n];
            count++;
        }
        *loss_sum_host = total;
        *count_host = count;
    }
    free(loss_h);
    return st;
}

gz_status gz_cuda_cross_entropy_backward(gz_backend_ctx *ctx, float *dlogits, const float *logits, const float *lse,
                                         const int32_t *targets, int64_t N, int V, float scale) {
    if (N <= 0) return GZ_OK;
    if (N > 0x7fffffffLL) return gz_fail(GZ_ERR_VALUE, "cross_entropy_backward: %lld rows is too many", (long long)N);
    cross_entropy_backward_kernel<<<(unsigned)N, GZ_CE_THREADS>>>(dlogits, logits, lse, targets, V, scale);
    GZ_LAUNCH_CHECK("cross_entropy_backward");
    return GZ_OK;
}
