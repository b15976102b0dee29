/* gemm.cu — the cuBLAS handle and one GEMM wrapper for the whole backend.
 *
 * Precision (GOZARU_CUDA_GEMM, read at every call so tests can switch it):
 *   bf16 (default) operands rounded to bf16 in backend scratch, fp32 accumulate and fp32 output:
 *                  the design's compute precision; relative error per product ~ 2^-9 * sqrt(k)-ish.
 *   tf32           fp32 operands, TF32 tensor cores (10-bit mantissa), fp32 accumulate.
 *   fp32           plain fp32 (no tensor-core rounding): for tight comparisons with the CPU backend.
 * Attention products (q k^T, P v) are never rounded to bf16 here: they use TF32 in bf16/tf32 mode
 * (their FLOPs are ~3 % of a step at seq 512) and fp32 in fp32 mode. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <mutex>
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

typedef enum { GZ_GEMM_BF16 = 0, GZ_GEMM_TF32, GZ_GEMM_FP32 } gz_gemm_mode;

static gz_gemm_mode gemm_mode(void) {
    const char *s = getenv("GOZARU_CUDA_GEMM");
    if (!s || !*s || !strcmp(s, "bf16")) return GZ_GEMM_BF16;
    if (!strcmp(s, "tf32")) return GZ_GEMM_TF32;
    if (!strcmp(s, "fp32")) return GZ_GEMM_FP32;
    return GZ_GEMM_BF16; /* unknown values fall back to the default; gz_cuda_gemm_mode_name() shows it */
}

const char *gz_cuda_gemm_mode_name(void) {
    switch (gemm_mode()) {
    case GZ_GEMM_TF32: return "tf32";
    case GZ_GEMM_FP32: return "fp32";
    default: return "bf16";
    }
}

/* ---- the handle, created on first use with a 32 MiB workspace (what cuBLAS advises for Hopper) */
static cublasHandle_t g_handle;
static std::once_flag g_handle_once;
static gz_status g_handle_status = GZ_OK;
static char g_handle_error[256];

static void create_handle(void) {
    cublasStatus_t s = cublasCreate(&g_handle);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(g_handle_error, sizeof g_handle_error, "cublasCreate: %s", cublasGetStatusString(s));
        g_handle_status = GZ_ERR_BACKEND;
        return;
    }
    const size_t ws_bytes = 32u << 20;
    void *ws = NULL;
    if (cudaMalloc(&ws, ws_bytes) == cudaSuccess) {
        cublasSetWorkspace(g_handle, ws, ws_bytes);
    } else {
        cudaGetLastError(); /* cuBLAS falls back to its own small workspace */
    }
    cublasSetStream(g_handle, 0);
    cublasSetMathMode(g_handle, CUBLAS_DEFAULT_MATH); /* precision is chosen per call below */
}

static gz_status get_handle(cublasHandle_t *out) {
    std::call_once(g_handle_once, create_handle);
    if (g_handle_status != GZ_OK) return gz_fail(g_handle_status, "%s", g_handle_error);
    *out = g_handle;
    return GZ_OK;
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

static gz_status to_bf16(gz_cuda_scratch_slot slot, const float *src, int64_t n, const void **out) {
    void *dst;
    GZ_TRY(gz_cuda_scratch(slot, (size_t)n * sizeof(__nv_bfloat16), &dst));
    to_bf16_kernel<<<gz_blocks_for((n + 3) / 4), GZ_THREADS>>>((__nv_bfloat16 *)dst, src, n);
    GZ_LAUNCH_CHECK("to_bf16");
    *out = dst;
    return GZ_OK;
}

gz_status gz_cuda_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *A, int lda,
                       int64_t stride_a, int64_t a_count, const float *B, int ldb, int64_t stride_b, int64_t b_count,
                       float beta, float *C, int ldc, int64_t stride_c, int batch, bool allow_bf16) {
    if (m <= 0 || n <= 0 || batch <= 0) return GZ_OK;
    cublasHandle_t h = NULL;
    GZ_TRY(get_handle(&h));
    gz_gemm_mode mode = gemm_mode();
    cublasOperation_t oa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, ob = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const void *a = A, *b = B;
    cudaDataType_t in_type = CUDA_R_32F;
    cublasComputeType_t compute = mode == GZ_GEMM_FP32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    if (mode == GZ_GEMM_BF16 && allow_bf16 && batch == 1 && k > 0) {
        GZ_TRY(to_bf16(GZ_SCRATCH_GEMM_A, A, a_count, &a));
        GZ_TRY(to_bf16(GZ_SCRATCH_GEMM_B, B, b_count, &b));
        in_type = CUDA_R_16BF;
        compute = CUBLAS_COMPUTE_32F;
    }
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
