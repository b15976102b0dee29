/* attention_cached.cu — generation against a KV cache [rows, NKV, S, HS] (the kv heads): append this step's
 * k, v (layout [NKV, N, HS]) at each token's (row, position), then attend each query to its row's
 * positions 0..pos[i]; query head h reads kv head h / (NH / NKV) (gz_kv_head). Plain fp32, one block per (token, head); the probabilities live in
 * scratch [N, NH, S] between the passes. */
#include <math.h>
#include "cuda_ops.h"

#define GZ_CACHED_THREADS 128

__global__ void kv_append_kernel(float *kcache, float *vcache, const float *k, const float *v, const int32_t *row,
                                 const int32_t *pos, int N, int NH, int HS, int S) {
    int64_t total = (int64_t)NH * N * HS, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        int d = (int)(idx % HS);
        int64_t hi = idx / HS; /* h * N + i, the source layout */
        int i = (int)(hi % N), h = (int)(hi / N);
        int64_t dst = (((int64_t)row[i] * NH + h) * S + pos[i]) * HS + d;
        kcache[dst] = k[idx];
        vcache[dst] = v[idx];
    }
}

__global__ void attention_cached_kernel(float *out, float *scratch, const float *q, const float *kcache,
                                        const float *vcache, const int32_t *row, const int32_t *pos, int N, int NH,
                                        int NKV, int HS, int S, float scale) {
    int i = blockIdx.x / NH, h = blockIdx.x % NH;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const float *qi = q + ((int64_t)h * N + i) * HS;
    int64_t cache = ((int64_t)row[i] * NKV + gz_kv_head(h, NH, NKV)) * S * HS;
    const float *kc = kcache + cache, *vc = vcache + cache;
    float *p = scratch + ((int64_t)i * NH + h) * S;
    int n = pos[i] + 1;
    /* scores: one warp per key position */
    for (int s = warp; s < n; s += nwarps) {
        float d = 0.0f;
        for (int j = lane; j < HS; j += 32) d += qi[j] * kc[(int64_t)s * HS + j];
        d = gz_warp_sum(d);
        if (lane == 0) p[s] = d * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < n; s += blockDim.x) mx = fmaxf(mx, p[s]);
    mx = gz_block_max(mx);
    float sum = 0.0f;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        float e = expf(p[s] - mx);
        p[s] = e;
        sum += e;
    }
    float inv = 1.0f / gz_block_sum(sum); /* its barriers also publish p[] to the block */
    float *o = out + (int64_t)i * NH * HS + (int64_t)h * HS;
    for (int j = threadIdx.x; j < HS; j += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n; s++) acc += p[s] * inv * vc[(int64_t)s * HS + j];
        o[j] = acc;
    }
}

gz_status gz_cuda_kv_append(gz_backend_ctx *ctx, float *kcache, float *vcache, const float *k, const float *v,
                            const int32_t *row, const int32_t *pos, int N, int NH, int HS, int S) {
    int64_t total = (int64_t)NH * N * HS;
    if (total <= 0) return GZ_OK;
    kv_append_kernel<<<gz_blocks_for(total), GZ_THREADS>>>(kcache, vcache, k, v, row, pos, N, NH, HS, S);
    GZ_LAUNCH_CHECK("kv_append");
    return GZ_OK;
}

gz_status gz_cuda_attention_cached(gz_backend_ctx *ctx, float *out, float *scratch, const float *q, const float *kcache,
                                   const float *vcache, const int32_t *row, const int32_t *pos, int N, int NH, int NKV,
                                   int HS, int S) {
    int64_t blocks = (int64_t)N * NH;
    if (blocks <= 0) return GZ_OK;
    if (blocks > 0x7fffffffLL) return gz_fail(GZ_ERR_VALUE, "attention_cached: %lld (token, head) pairs is too many",
                                              (long long)blocks);
    attention_cached_kernel<<<(unsigned)blocks, GZ_CACHED_THREADS>>>(out, scratch, q, kcache, vcache, row, pos, N, NH,
                                                                      NKV, HS, S, 1.0f / sqrtf((float)HS));
    GZ_LAUNCH_CHECK("attention_cached");
    return GZ_OK;
}
