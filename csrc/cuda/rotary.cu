/* rotary.cu — split HF's fused qkv [B,T,NH,3,HS] into q, k, v [B,NH,T,HS] (GPT-NeoX), or transpose one of
 * Llama's separate projections [B,T,H,HS] into [B,H,T,HS], and rotate the first rot dims (rotate-half,
 * gz_rotary_pair from elementwise.h). One thread per output element; backward applies the transpose
 * (sin -> -sin) and overwrites. */
#include "cuda_ops.h"

/* Rotated value at dim d of a head vector x (stride 1), for sign = +1 (forward) or -1 (transpose). */
__device__ __forceinline__ float rotate_at(const float *x, int d, int rot, const float *c, const float *s,
                                           float sign) {
    int half = rot / 2;
    if (d >= 2 * half) return x[d];
    int i = d < half ? d : d - half;
    float y1, y2;
    gz_rotary_pair(x[i], x[i + half], c[i], sign * s[i], &y1, &y2);
    return d < half ? y1 : y2;
}

__global__ void rotary_forward_kernel(float *q, float *k, float *v, const float *qkv, const int32_t *pos,
                                      const float *cos_t, const float *sin_t, int B, int T, int NH, int HS, int rot) {
    int64_t total = (int64_t)B * T * NH * HS, stride = (int64_t)gridDim.x * blockDim.x;
    int half = rot / 2;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int d = (int)(i % HS);
        int64_t r = i / HS; /* (b, t, h) in qkv order */
        int h = (int)(r % NH);
        int64_t bt = r / NH;
        int t = (int)(bt % T), b = (int)(bt / T);
        const float *src = qkv + (bt * NH + h) * 3 * HS;
        const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
        int64_t dst = (((int64_t)b * NH + h) * T + t) * HS + d;
        q[dst] = rotate_at(src, d, rot, c, s, 1.0f);
        k[dst] = rotate_at(src + HS, d, rot, c, s, 1.0f);
        v[dst] = src[2 * HS + d];
    }
}

__global__ void rotary_backward_kernel(float *dqkv, const float *dq, const float *dk, const float *dv,
                                       const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T,
                                       int NH, int HS, int rot) {
    int64_t total = (int64_t)B * T * NH * HS, stride = (int64_t)gridDim.x * blockDim.x;
    int half = rot / 2;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int d = (int)(i % HS);
        int64_t r = i / HS;
        int h = (int)(r % NH);
        int64_t bt = r / NH;
        int t = (int)(bt % T), b = (int)(bt / T);
        const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
        int64_t src = (((int64_t)b * NH + h) * T + t) * HS;
        float *dst = dqkv + (bt * NH + h) * 3 * HS;
        dst[d] = rotate_at(dq + src, d, rot, c, s, -1.0f);
        dst[HS + d] = rotate_at(dk + src, d, rot, c, s, -1.0f);
        dst[2 * HS + d] = dv[src + d];
    }
}

gz_status gz_cuda_rotary_split_forward(gz_backend_ctx *ctx, float *q, float *k, float *v, const float *qkv,
                                       const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T, int NH,
                                       int HS, int rot) {
    int64_t total = (int64_t)B * T * NH * HS;
    if (total <= 0) return GZ_OK;
    rotary_forward_kernel<<<gz_blocks_for(total), GZ_THREADS>>>(q, k, v, qkv, pos, cos_t, sin_t, B, T, NH, HS, rot);
    GZ_LAUNCH_CHECK("rotary_split_forward");
    return GZ_OK;
}

gz_status gz_cuda_rotary_split_backward(gz_backend_ctx *ctx, float *dqkv, const float *dq, const float *dk,
                                        const float *dv, const int32_t *pos, const float *cos_t, const float *sin_t,
                                        int B, int T, int NH, int HS, int rot) {
    int64_t total = (int64_t)B * T * NH * HS;
    if (total <= 0) return GZ_OK;
    rotary_backward_kernel<<<gz_blocks_for(total), GZ_THREADS>>>(dqkv, dq, dk, dv, pos, cos_t, sin_t, B, T, NH, HS,
                                                                  rot);
    GZ_LAUNCH_CHECK("rotary_split_backward");
    return GZ_OK;
}

/* One thread per element of the [B,H,T,HS] side; to_bht: from [B,T,H,HS] into it (forward), else back. */
__global__ void rotary_heads_kernel(float *bht, float *bth, int to_bht, const int32_t *pos, const float *cos_t,
                                    const float *sin_t, int B, int T, int H, int HS, int rot, float sign) {
    int64_t total = (int64_t)B * H * T * HS, stride = (int64_t)gridDim.x * blockDim.x;
    int half = rot / 2;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        int d = (int)(i % HS);
        int64_t r = i / HS; /* (b, h, t) */
        int t = (int)(r % T);
        int64_t bh = r / T;
        int h = (int)(bh % H), b = (int)(bh / H);
        int64_t bt = (int64_t)b * T + t;
        const float *c = cos_t + (int64_t)pos[bt] * half, *s = sin_t + (int64_t)pos[bt] * half;
        float *x = bth + (bt * H + h) * HS, *y = bht + (i - d);
        if (to_bht) bht[i] = rotate_at(x, d, rot, c, s, sign);
        else x[d] = rotate_at(y, d, rot, c, s, sign);
    }
}

gz_status gz_cuda_rotary_heads_forward(gz_backend_ctx *ctx, float *out, const float *inp, const int32_t *pos,
                                       const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot) {
    int64_t total = (int64_t)B * H * T * HS;
    if (total <= 0) return GZ_OK;
    rotary_heads_kernel<<<gz_blocks_for(total), GZ_THREADS>>>(out, (float *)inp, 1, pos, cos_t, sin_t, B, T, H, HS,
                                                              rot, 1.0f);
    GZ_LAUNCH_CHECK("rotary_heads_forward");
    return GZ_OK;
}

gz_status gz_cuda_rotary_heads_backward(gz_backend_ctx *ctx, float *dinp, const float *dout, const int32_t *pos,
                                        const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot) {
    int64_t total = (int64_t)B * H * T * HS;
    if (total <= 0) return GZ_OK;
    rotary_heads_kernel<<<gz_blocks_for(total), GZ_THREADS>>>((float *)dout, dinp, 0, pos, cos_t, sin_t, B, T, H, HS,
                                                              rot, -1.0f);
    GZ_LAUNCH_CHECK("rotary_heads_backward");
    return GZ_OK;
}
