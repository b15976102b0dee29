/* memory.cu — device memory for the CUDA backend: zeroed allocations, host<->device copies and the
 * backend's own grow-only scratch buffers. All work runs on the legacy default stream, so a
 * blocking cudaMemcpy also orders against every kernel launched before it. */
#include <mutex>
#include "cuda_ops.h"

gz_status gz_cuda_alloc(void **p, size_t bytes, const char *what) {
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

void gz_cuda_release(void *p) {
    if (p) cudaFree(p); /* a failure here cannot be reported (void in the vtable) */
}

gz_status gz_cuda_upload(void *dst, const void *src_host, size_t bytes) {
    if (bytes) GZ_CUDA_CHECK(cudaMemcpy(dst, src_host, bytes, cudaMemcpyHostToDevice));
    return GZ_OK;
}

gz_status gz_cuda_download(void *dst_host, const void *src, size_t bytes) {
    if (bytes) GZ_CUDA_CHECK(cudaMemcpy(dst_host, src, bytes, cudaMemcpyDeviceToHost));
    return GZ_OK;
}

gz_status gz_cuda_zero(void *p, size_t bytes) {
    if (bytes) GZ_CUDA_CHECK(cudaMemset(p, 0, bytes));
    return GZ_OK;
}

gz_status gz_cuda_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) GZ_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    return GZ_OK;
}

gz_status gz_cuda_synchronize(void) {
    GZ_CUDA_CHECK(cudaDeviceSynchronize());
    GZ_LAUNCH_CHECK("(pending)");
    return GZ_OK;
}

/* ---- scratch: grown by reallocation; cudaFree waits for the device, so no queued kernel still
 * reads the old buffer when it goes. */
static void *g_scratch[GZ_SCRATCH_COUNT];
static size_t g_scratch_bytes[GZ_SCRATCH_COUNT];
static std::mutex g_scratch_lock;

gz_status gz_cuda_scratch(gz_cuda_scratch_slot slot, size_t bytes, void **out) {
    std::lock_guard<std::mutex> guard(g_scratch_lock);
    if (bytes > g_scratch_bytes[slot]) {
        if (g_scratch[slot]) GZ_CUDA_CHECK(cudaFree(g_scratch[slot]));
        g_scratch[slot] = NULL;
        g_scratch_bytes[slot] = 0;
        size_t grown = bytes + bytes / 8; /* headroom for slightly larger later requests */
        GZ_TRY(gz_cuda_alloc(&g_scratch[slot], grown, "CUDA backend scratch"));
        g_scratch_bytes[slot] = grown;
    }
    *out = g_scratch[slot];
    return GZ_OK;
}
