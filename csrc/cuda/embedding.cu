/* embedding.cu — token embedding lookup and its gradient.
 * Backward is deterministic without sorting or atomics: thread (column c, bucket b) walks all
 * tokens in order and adds only rows whose id % GZ_EMB_BUCKETS == b, so every element of dwte
 * has one owner and receives its terms in token order (the CPU's order: same bits). */
#include "cuda_ops.h"

#define GZ_EMB_BUCKETS 32
#define GZ_EMB_COLS 128
#define GZ_EMB_TILE 1024

__global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const float *wte, int64_t N, int C) {
    int64_t total = N * C, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int64_t n = i / C;
        int c = (int)(i - n * C);
        out[i] = wte[(int64_t)tokens[n] * C + c];
    }
}

__global__ void embedding_backward_kernel(float *dwte, const float *dout, const int32_t *tokens, int64_t N, int C) {
    __shared__ int32_t tile[GZ_EMB_TILE];
    int c = blockIdx.x * GZ_EMB_COLS + threadIdx.x;
    int bucket = blockIdx.y;
    for (int64_t n0 = 0; n0 < N; n0 += GZ_EMB_TILE) {
        int len = (int)(N - n0 < GZ_EMB_TILE ? N - n0 : GZ_EMB_TILE);
        __syncthreads();
        for (int i = threadIdx.x; i < len; i += blockDim.x) tile[i] = tokens[n0 + i];
        __syncthreads();
        if (c < C)
            for (int i = 0; i < len; i++) {
                int32_t t = tile[i];
                if (t % GZ_EMB_BUCKETS == bucket) dwte[(int64_t)t * C + c] += dout[(n0 + i) * C + c];
            }
    }
}

gz_status gz_cuda_embedding_forward(gz_backend_ctx *ctx, float *out, const int32_t *tokens, const float *wte, int64_t N,
                                    int C) {
    if (N <= 0 || C <= 0) return GZ_OK;
    embedding_forward_kernel<<<gz_blocks_for(N * C), GZ_THREADS>>>(out, tokens, wte, N, C);
    GZ_LAUNCH_CHECK("embedding_forward");
    return GZ_OK;
}

gz_status gz_cuda_embedding_backward(gz_backend_ctx *ctx, float *dwte, const float *dout, const int32_t *tokens,
                                     int64_t N, int C) {
    if (N <= 0 || C <= 0 || !dwte) return GZ_OK;
    dim3 grid((C + GZ_EMB_COLS - 1) / GZ_EMB_COLS, GZ_EMB_BUCKETS);
    embedding_backward_kernel<<<grid, GZ_EMB_COLS>>>(dwte, dout, tokens, N, C);
    GZ_LAUNCH_CHECK("embedding_backward");
    return GZ_OK;
}
