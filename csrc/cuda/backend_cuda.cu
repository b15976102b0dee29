/* backend_cuda.cu — the CUDA operations table (backend.h), creating / destroying an instance and its
 * context (scratch, cuBLAS handle, GEMM precision, bf16 weight copies), and whether a device is present. */
#include <stdlib.h>
#include "cuda_ops.h"

static void destroy_ctx(gz_backend_ctx *ctx) {
    if (!ctx) return;
    gz_cuda_gemm_release(ctx);
    gz_cuda_weights_free(ctx);
    for (int i = 0; i < GZ_SCRATCH_COUNT; i++)
        if (ctx->scratch[i]) cudaFree(ctx->scratch[i]);
    free(ctx);
}

static gz_backend make_cuda_backend(void) {
    gz_backend b = {};
    b.name = "cuda";
    b.destroy = destroy_ctx;
    b.precision = gz_cuda_precision;
    b.set_precision = gz_cuda_set_precision;
    b.weights_written = gz_cuda_weights_written;
    b.alloc = gz_cuda_alloc;
    b.release = gz_cuda_release;
    b.upload = gz_cuda_upload;
    b.download = gz_cuda_download;
    b.zero = gz_cuda_zero;
    b.copy = gz_cuda_copy;
    b.synchronize = gz_cuda_synchronize;
    b.embedding_forward = gz_cuda_embedding_forward;
    b.embedding_backward = gz_cuda_embedding_backward;
    b.layernorm_forward = gz_cuda_layernorm_forward;
    b.layernorm_backward = gz_cuda_layernorm_backward;
    b.rmsnorm_forward = gz_cuda_rmsnorm_forward;
    b.rmsnorm_backward = gz_cuda_rmsnorm_backward;
    b.matmul_forward = gz_cuda_matmul_forward;
    b.matmul_backward = gz_cuda_matmul_backward;
    b.rotary_split_forward = gz_cuda_rotary_split_forward;
    b.rotary_split_backward = gz_cuda_rotary_split_backward;
    b.rotary_heads_forward = gz_cuda_rotary_heads_forward;
    b.rotary_heads_backward = gz_cuda_rotary_heads_backward;
    b.attention_forward = gz_cuda_attention_forward;
    b.attention_backward = gz_cuda_attention_backward;
    b.kv_append = gz_cuda_kv_append;
    b.attention_cached = gz_cuda_attention_cached;
    b.gelu_forward = gz_cuda_gelu_forward;
    b.gelu_backward = gz_cuda_gelu_backward;
    b.swiglu_forward = gz_cuda_swiglu_forward;
    b.swiglu_backward = gz_cuda_swiglu_backward;
    b.add = gz_cuda_add;
    b.cross_entropy_forward = gz_cuda_cross_entropy_forward;
    b.cross_entropy_backward = gz_cuda_cross_entropy_backward;
    b.sum_squares = gz_cuda_sum_squares;
    b.scale = gz_cuda_scale;
    b.adamw_update = gz_cuda_adamw_update;
    return b;
}

static const gz_backend CUDA_BACKEND = make_cuda_backend();

extern "C" gz_status gz_backend_cuda_create(gz_backend **out) {
    *out = NULL;
    gz_backend *be = (gz_backend *)calloc(1, sizeof *be);
    gz_backend_ctx *ctx = (gz_backend_ctx *)calloc(1, sizeof *ctx);
    if (!be || !ctx) {
        free(be);
        free(ctx);
        return gz_fail(GZ_ERR_NOMEM, "out of memory creating the CUDA backend");
    }
    *be = CUDA_BACKEND;
    be->ctx = ctx;
    gz_status st = gz_cuda_gemm_init(ctx);
    if (st != GZ_OK) {
        destroy_ctx(ctx);
        free(be);
        return st;
    }
    *out = be;
    return GZ_OK;
}

/* 1 when the runtime finds at least one device (0 without a driver or GPU: the error is cleared so
 * it is not reported by a later, unrelated call). */
extern "C" int gz_cuda_device_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n > 0;
}
