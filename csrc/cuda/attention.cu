/* attention.cu — causal softmax attention over q, k, v [B,NH,T,HS] with the probabilities kept in
 * att [B,NH,T,T], as backend.h specifies (this materialises T x T per head; see docs/cuda.md for
 * the fused kernel and the vtable change it needs).
 *
 * Products are strided-batched cuBLAS GEMMs (never bf16-rounded: TF32 or fp32, gemm.cu); the causal
 * softmax and its backward are warp-per-row kernels that also zero the masked upper triangle.
 * The out/dout tensors are [B,T,NH*HS] (heads merged), so products touching them run per batch
 * entry over NH heads (head stride HS, row stride NH*HS). */
#include <math.h>
#include "cuda_ops.h"

#define GZ_ATT_ROWS_PER_BLOCK 8

/* row r of [B*NH*T, T]: scaled scores -> probabilities over keys 0..i, zeros after (i = r % T) */
__global__ void causal_softmax_kernel(float *att, int64_t rows, int T) {
    int64_t r = (int64_t)blockIdx.x * GZ_ATT_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int i = (int)(r % T);
    float *p = att + r * T;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, p[j]);
    mx = gz_warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j <= i; j += 32) {
        float e = expf(p[j] - mx);
        p[j] = e;
        s += e;
    }
    float inv = 1.0f / gz_warp_sum(s);
    for (int j = lane; j < T; j += 32) p[j] = j <= i ? p[j] * inv : 0.0f;
}

/* row r: dP -> dS = P * (dP - sum_j P dP) in place (the 1/sqrt(HS) goes into the next GEMMs) */
__global__ void causal_softmax_backward_kernel(float *dp, const float *att, int64_t rows, int T) {
    int64_t r = (int64_t)blockIdx.x * GZ_ATT_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int i = (int)(r % T);
    const float *p = att + r * T;
    float *d = dp + r * T;
    float dot = 0.0f;
    for (int j = lane; j <= i; j += 32) dot += p[j] * d[j];
    dot = gz_warp_sum(dot);
    for (int j = lane; j < T; j += 32) d[j] = j <= i ? p[j] * (d[j] - dot) : 0.0f;
}

static gz_status softmax_rows(float *att, int64_t rows, int T) {
    unsigned blocks = (unsigned)((rows + GZ_ATT_ROWS_PER_BLOCK - 1) / GZ_ATT_ROWS_PER_BLOCK);
    causal_softmax_kernel<<<blocks, 32 * GZ_ATT_ROWS_PER_BLOCK>>>(att, rows, T);
    GZ_LAUNCH_CHECK("causal_softmax");
    return GZ_OK;
}

gz_status gz_cuda_attention_forward(gz_backend_ctx *ctx, float *out, float *att, const float *q, const float *k,
                                    const float *v, int B, int T, int NH, int HS) {
    if (B <= 0 || T <= 0 || NH <= 0) return GZ_OK;
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS;
    const int64_t qs = (int64_t)T * HS, as = (int64_t)T * T;
    /* scores S = scale q k^T, stored row-major [T,T] per head: column-major S^T = k . q^T */
    GZ_TRY(gz_cuda_gemm(ctx, true, false, T, T, HS, scale, k, GZ_OPERAND_FP32, HS, qs, 0, q, GZ_OPERAND_FP32, HS, qs, 0,
                        0.0f, att, T, as, B * NH));
    GZ_TRY(softmax_rows(att, (int64_t)B * NH * T, T));
    /* out[b,t,h*HS+d] = sum_j P[t,j] v[j,d]: column-major out^T (ld C) = v^T . P^T */
    for (int b = 0; b < B; b++) {
        const float *vb = v + (int64_t)b * NH * qs, *pb = att + (int64_t)b * NH * as;
        GZ_TRY(gz_cuda_gemm(ctx, false, false, HS, T, T, 1.0f, vb, GZ_OPERAND_FP32, HS, qs, 0, pb, GZ_OPERAND_FP32, T,
                            as, 0, 0.0f, out + (int64_t)b * T * C, C, HS, NH));
    }
    return GZ_OK;
}

/* scratch: B*NH*T*T floats (dP, then dS). dq, dk, dv are overwritten. */
gz_status gz_cuda_attention_backward(gz_backend_ctx *ctx, float *dq, float *dk, float *dv, float *scratch,
                                     const float *dout, const float *att, const float *q, const float *k,
                                     const float *v, int B, int T, int NH, int HS) {
    if (B <= 0 || T <= 0 || NH <= 0) return GZ_OK;
    const float scale = 1.0f / sqrtf((float)HS);
    const int C = NH * HS;
    const int64_t qs = (int64_t)T * HS, as = (int64_t)T * T;
    for (int b = 0; b < B; b++) {
        const float *dyb = dout + (int64_t)b * T * C, *pb = att + (int64_t)b * NH * as;
        const float *vb = v + (int64_t)b * NH * qs;
        /* dV = P^T dY: column-major dV^T = dY^T . P */
        GZ_TRY(gz_cuda_gemm(ctx, false, true, HS, T, T, 1.0f, dyb, GZ_OPERAND_FP32, C, HS, 0, pb, GZ_OPERAND_FP32, T,
                            as, 0, 0.0f, dv + (int64_t)b * NH * qs, HS, qs, NH));
        /* dP = dY v^T, row-major [T,T]: column-major dP^T = v . dY^T */
        GZ_TRY(gz_cuda_gemm(ctx, true, false, T, T, HS, 1.0f, vb, GZ_OPERAND_FP32, HS, qs, 0, dyb, GZ_OPERAND_FP32, C,
                            HS, 0, 0.0f, scratch + (int64_t)b * NH * as, T, as, NH));
    }
    int64_t rows = (int64_t)B * NH * T;
    unsigned blocks = (unsigned)((rows + GZ_ATT_ROWS_PER_BLOCK - 1) / GZ_ATT_ROWS_PER_BLOCK);
    causal_softmax_backward_kernel<<<blocks, 32 * GZ_ATT_ROWS_PER_BLOCK>>>(scratch, att, rows, T);
    GZ_LAUNCH_CHECK("causal_softmax_backward");
    /* dQ = scale dS k: column-major dQ^T = k^T . dS^T */
    GZ_TRY(gz_cuda_gemm(ctx, false, false, HS, T, T, scale, k, GZ_OPERAND_FP32, HS, qs, 0, scratch, GZ_OPERAND_FP32, T,
                        as, 0, 0.0f, dq, HS, qs, B * NH));
    /* dK = scale dS^T q: column-major dK^T = q^T . dS */
    GZ_TRY(gz_cuda_gemm(ctx, false, true, HS, T, T, scale, q, GZ_OPERAND_FP32, HS, qs, 0, scratch, GZ_OPERAND_FP32, T,
                        as, 0, 0.0f, dk, HS, qs, B * NH));
    return GZ_OK;
}
