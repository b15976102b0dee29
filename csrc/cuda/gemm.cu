/* gemm.cu — the cuBLAS handle of a backend instance, its GEMM precision and one GEMM wrapper for the whole backend.
 *
 * Precision (csrc/precision.h's names; set_precision, default bf16; gz_model_precision reports it):
 *   bf16 (default) operands rounded to bf16 in backend scratch, fp32 accumulate and fp32 output:
 *                  the design's compute precision; relative error per product ~ 2^-9 * sqrt(k)-ish.
 *   tf32           fp32 operands, TF32 tensor cores (10-bit mantissa), fp32 accumulate.
 *   fp32           plain fp32 (no tensor-core rounding): for tight comparisons with the CPU backend.
 * bf16-emulated is the CPU's stand-in for bf16 instructions; a GPU runs bf16 itself, so it is not offered here.
 * Attention products (q k^T, P v) are never rounded to bf16 here: they use TF32 in bf16/tf32 mode
 * (their FLOPs are ~3 % of a step at seq 512) and fp32 in fp32 mode. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_ops.h"

#define GZ_CUBLAS_CHECK(call)                                                                               \
    do {                                                                                                    \
        cublasStatus_t gz_s_ = (call);                                                                      \
        if (gz_s_ != CUBLAS_STATUS_SUCCESS)                                                                 \
            return gz_fail(GZ_ERR_BACKEND, "cuBLAS %s (%s:%d): %s", #call, __FILE__, __LINE__,              \
                           cublasGetStatusString(gz_s_));                                                   \
    } while (0)

#define CUDA_PRECISIONS \
    (GZ_PRECISION_BIT(GZ_PRECISION_FP32) | GZ_PRECISION_BIT(GZ_PRECISION_TF32) | GZ_PRECISION_BIT(GZ_PRECISION_BF16))

gz_status gz_cuda_supports(gz_precision p) {
    return CUDA_PRECISIONS & GZ_PRECISION_BIT(p) ? GZ_OK : gz_precision_unsupported("cuda", p, CUDA_PRECISIONS);
}

gz_precision gz_cuda_precision(gz_backend_ctx *ctx) { return ctx->precision; }

gz_status gz_cuda_set_precision(gz_backend_ctx *ctx, gz_precision p) {
    GZ_TRY(gz_cuda_supports(p));
    if (p != GZ_PRECISION_BF16) gz_cuda_weights_free(ctx); /* bf16 weight copies: only bf16 reads them */
    ctx->precision = p;
    return GZ_OK;
}

/* The instance's handle, bound to the legacy default stream, with a 32 MiB workspace (what cuBLAS
 * advises for Hopper). The stream is set first: cublasSetStream resets the workspace to cuBLAS's own. */
gz_status gz_cuda_gemm_init(gz_backend_ctx *ctx) {
    ctx->precision = GZ_PRECISION_BF16;
    cublasHandle_t h = NULL;
    GZ_CUBLAS_CHECK(cublasCreate(&h));
    ctx->cublas = h;
    GZ_CUBLAS_CHECK(cublasSetStream(h, 0));
    const size_t ws_bytes = 32u << 20;
    if (cudaMalloc(&ctx->cublas_workspace, ws_bytes) == cudaSuccess) {
        GZ_CUBLAS_CHECK(cublasSetWorkspace(h, ctx->cublas_workspace, ws_bytes));
    } else {
        cudaGetLastError(); /* not sticky; cuBLAS keeps its own small workspace */
        ctx->cublas_workspace = NULL;
    }
    GZ_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH)); /* precision is chosen per call below */
    return GZ_OK;
}

void gz_cuda_gemm_release(gz_backend_ctx *ctx) {
    if (ctx->cublas) cublasDestroy(ctx->cublas); /* synchronises the device first */
    ctx->cublas = NULL;
    if (ctx->cublas_workspace) cudaFree(ctx->cublas_workspace);
    ctx->cublas_workspace = NULL;
}

/* ---- fp32 -> bf16 copies (round to nearest even), 4 elements per thread where aligned */
__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t n) {
    int64_t n4 = n / 4;
    bool vec = ((uintptr_t)src % 16 == 0) && ((uintptr_t)dst % 8 == 0);
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        for (int64_t i = i0; i < n4; i += stride) {
            float4 f = reinterpret_cast<const float4 *>(src)[i];
            __nv_bfloat162 a = __floats2bfloat162_rn(f.x, f.y), b = __floats2bfloat162_rn(f.z, f.w);
            reinterpret_cast<__nv_bfloat162 *>(dst)[2 * i] = a;
            reinterpret_cast<__nv_bfloat162 *>(dst)[2 * i + 1] = b;
        }
        for (int64_t i = n4 * 4 + i0; i < n; i += stride) dst[i] = __float2bfloat16_rn(src[i]);
    } else {
        for (int64_t i = i0; i < n; i += stride) dst[i] = __float2bfloat16_rn(src[i]);
    }
}

static gz_status round_into(void *dst, const float *src, int64_t n) {
    to_bf16_kernel<<<gz_blocks_for((n + 3) / 4), GZ_THREADS>>>((__nv_bfloat16 *)dst, src, n);
    GZ_LAUNCH_CHECK("to_bf16");
    return GZ_OK;
}

gz_status gz_cuda_to_bf16(gz_backend_ctx *ctx, gz_cuda_scratch_slot slot, const float *src, int64_t n,
                          const void **out) {
    void *dst;
    GZ_TRY(gz_cuda_scratch(ctx, slot, (size_t)n * sizeof(__nv_bfloat16), &dst));
    GZ_TRY(round_into(dst, src, n));
    *out = dst;
    return GZ_OK;
}

/* The bf16 copy of weight w[count]: made on first use and after every write to w (memory.cu). */
static gz_status weight_bf16(gz_backend_ctx *ctx, const float *w, int64_t count, const void **out) {
    gz_weight_copy *e = NULL;
    GZ_TRY(gz_weight_copies_find(&ctx->weights, w, count, &e));
    if (!e->copy) GZ_TRY(gz_cuda_alloc(ctx, &e->copy, (size_t)count * sizeof(__nv_bfloat16), "bf16 weight copy"));
    if (!e->valid) {
        GZ_TRY(round_into(e->copy, w, count));
        e->valid = 1;
    }
    *out = e->copy;
    return GZ_OK;
}

void gz_cuda_weights_free(gz_backend_ctx *ctx) {
    for (int i = 0; i < ctx->weights.n; i++) cudaFree(ctx->weights.items[i].copy);
    gz_weight_copies_clear(&ctx->weights);
}

/* An operand in the form cuBLAS gets: bf16 (rounded now, cached, or already rounded) or fp32. */
static gz_status operand(gz_backend_ctx *ctx, gz_operand kind, gz_cuda_scratch_slot slot, const float *p,
                         int64_t count, bool bf16, const void **out) {
    *out = p;
    if (!bf16) return kind == GZ_OPERAND_BF16 ? gz_fail(GZ_ERR_BACKEND, "internal: bf16 operand in an fp32 GEMM")
                                              : GZ_OK;
    if (kind == GZ_OPERAND_ROUND) return gz_cuda_to_bf16(ctx, slot, p, count, out);
    if (kind == GZ_OPERAND_WEIGHT) return weight_bf16(ctx, p, count, out);
    return GZ_OK; /* GZ_OPERAND_BF16: already rounded by the caller */
}

gz_status gz_cuda_gemm(gz_backend_ctx *ctx, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                       const void *A, gz_operand a_kind, int lda, int64_t stride_a, int64_t a_count, const void *B,
                       gz_operand b_kind, int ldb, int64_t stride_b, int64_t b_count, float beta, float *C, int ldc,
                       int64_t stride_c, int batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return GZ_OK;
    cublasHandle_t h = ctx->cublas;
    cublasOperation_t oa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, ob = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    bool bf16 = gz_cuda_gemm_uses_bf16(ctx, a_kind, b_kind, k, batch);
    const void *a, *b;
    GZ_TRY(operand(ctx, a_kind, GZ_SCRATCH_GEMM_A, (const float *)A, a_count, bf16, &a));
    GZ_TRY(operand(ctx, b_kind, GZ_SCRATCH_GEMM_B, (const float *)B, b_count, bf16, &b));
    cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t compute =
        bf16 || ctx->precision == GZ_PRECISION_FP32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    if (batch == 1) {
        GZ_CUBLAS_CHECK(cublasGemmEx(h, oa, ob, m, n, k, &alpha, a, in_type, lda, b, in_type, ldb, &beta, C,
                                     CUDA_R_32F, ldc, compute, CUBLAS_GEMM_DEFAULT));
    } else {
        GZ_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, oa, ob, m, n, k, &alpha, a, in_type, lda, stride_a, b, in_type,
                                                   ldb, stride_b, &beta, C, CUDA_R_32F, ldc, stride_c, batch, compute,
                                                   CUBLAS_GEMM_DEFAULT));
    }
    return GZ_OK;
}
