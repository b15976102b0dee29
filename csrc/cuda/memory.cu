/* memory.cu — device memory for the CUDA backend: zeroed allocations, host<->device copies and the
 * instance's own grow-only scratch buffers. All work runs on the legacy default stream, so a
 * blocking cudaMemcpy also orders against every kernel launched before it. */
#include "cuda_ops.h"

gz_status gz_cuda_alloc(gz_backend_ctx *ctx, void **p, size_t bytes, const char *what) {
    *p = NULL;
    size_t n = bytes ? bytes : 1; /* a valid, freeable pointer, as on the CPU */
    cudaError_t e = cudaMalloc(p, n);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* not sticky: clear it so later calls are not blamed */
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        cudaGetLastError();
        *p = NULL;
        return gz_fail(GZ_ERR_NOMEM, "out of GPU memory allocating %s (%zu bytes; %zu of %zu bytes free)", what,
                       bytes, free_b, total_b);
    }
    if (e != cudaSuccess) {
        *p = NULL;
        return gz_fail(GZ_ERR_BACKEND, "cudaMalloc for %s (%zu bytes): %s", what, bytes, cudaGetErrorString(e));
    }
    e = cudaMemset(*p, 0, n);
    if (e != cudaSuccess) {
        cudaFree(*p);
        *p = NULL;
        return gz_fail(GZ_ERR_BACKEND, "zeroing %s (%zu bytes): %s", what, bytes, cudaGetErrorString(e));
    }
    return GZ_OK;
}

void gz_cuda_release(gz_backend_ctx *ctx, void *p) {
    if (!p) return;
    gz_cuda_weights_written(ctx, NULL, 0); /* the address may come back holding something else */
    cudaFree(p); /* a failure here cannot be reported (void in the vtable) */
}

gz_status gz_cuda_upload(gz_backend_ctx *ctx, void *dst, const void *src_host, size_t bytes) {
    gz_cuda_weights_written(ctx, dst, bytes);
    if (bytes) GZ_CUDA_CHECK(cudaMemcpy(dst, src_host, bytes, cudaMemcpyHostToDevice));
    return GZ_OK;
}

gz_status gz_cuda_download(gz_backend_ctx *ctx, void *dst_host, const void *src, size_t bytes) {
    if (bytes) GZ_CUDA_CHECK(cudaMemcpy(dst_host, src, bytes, cudaMemcpyDeviceToHost));
    return GZ_OK;
}

gz_status gz_cuda_zero(gz_backend_ctx *ctx, void *p, size_t bytes) {
    gz_cuda_weights_written(ctx, p, bytes);
    if (bytes) GZ_CUDA_CHECK(cudaMemset(p, 0, bytes));
    return GZ_OK;
}

gz_status gz_cuda_copy(gz_backend_ctx *ctx, void *dst, const void *src, size_t bytes) {
    gz_cuda_weights_written(ctx, dst, bytes);
    if (bytes && dst != src) GZ_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    return GZ_OK;
}

gz_status gz_cuda_synchronize(gz_backend_ctx *ctx) {
    GZ_CUDA_CHECK(cudaDeviceSynchronize());
    GZ_LAUNCH_CHECK("(pending)");
    return GZ_OK;
}

/* ---- scratch: grown by reallocation; cudaFree waits for the device, so no queued kernel still
 * reads the old buffer when it goes. */
gz_status gz_cuda_scratch(gz_backend_ctx *ctx, gz_cuda_scratch_slot slot, size_t bytes, void **out) {
    if (bytes > ctx->scratch_bytes[slot]) {
        if (ctx->scratch[slot]) GZ_CUDA_CHECK(cudaFree(ctx->scratch[slot]));
        ctx->scratch[slot] = NULL;
        ctx->scratch_bytes[slot] = 0;
        size_t grown = bytes + bytes / 8; /* headroom for slightly larger later requests */
        GZ_TRY(gz_cuda_alloc(ctx, &ctx->scratch[slot], grown, "CUDA backend scratch"));
        ctx->scratch_bytes[slot] = grown;
    }
    *out = ctx->scratch[slot];
    return GZ_OK;
}

void gz_cuda_weights_written(gz_backend_ctx *ctx, const void *p, size_t bytes) {
    gz_weight_copies_written(&ctx->weights, p, bytes);
}
