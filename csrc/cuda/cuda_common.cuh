/* cuda_common.cuh — shared by the CUDA backend's translation units: the C interfaces, error
 * checks that turn CUDA/cuBLAS failures into gz_fail(GZ_ERR_BACKEND, ...), launch sizes,
 * deterministic block reductions and the backend-owned scratch buffers. */
#ifndef GOZARU_CUDA_COMMON_CUH
#define GOZARU_CUDA_COMMON_CUH

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime.h>

extern "C" {
#include "backend.h" /* C headers: give their functions C linkage */
#include "weight_copies.h"
}
#include "elementwise.h"

/* ---- error checks: every CUDA call goes through one of these */
#define GZ_CUDA_CHECK(call)                                                                               \
    do {                                                                                                  \
        cudaError_t gz_e_ = (call);                                                                       \
        if (gz_e_ != cudaSuccess)                                                                         \
            return gz_fail(GZ_ERR_BACKEND, "CUDA %s (%s:%d): %s", #call, __FILE__, __LINE__,             \
                           cudaGetErrorString(gz_e_));                                                    \
    } while (0)

/* After a kernel launch: a bad configuration shows here; a fault inside the kernel shows at the
 * next synchronising call (download, synchronize), which is checked too. */
#define GZ_LAUNCH_CHECK(what)                                                                             \
    do {                                                                                                  \
        cudaError_t gz_e_ = cudaGetLastError();                                                           \
        if (gz_e_ != cudaSuccess)                                                                         \
            return gz_fail(GZ_ERR_BACKEND, "CUDA kernel %s: %s", what, cudaGetErrorString(gz_e_));        \
    } while (0)

/* ---- launch sizes */
#define GZ_THREADS 256
static inline unsigned gz_blocks_for(int64_t n, int threads = GZ_THREADS, int64_t cap = 65535LL * 32) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > cap) b = cap; /* kernels use grid-stride loops */
    return (unsigned)b;
}

/* ---- deterministic reductions: a fixed tree for a fixed blockDim, so the same inputs give the
 * same bits on every run (no atomics). */
template <typename T>
__device__ __forceinline__ T gz_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float gz_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
template <typename T>
__device__ T gz_block_sum(T v) {
    __shared__ T part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = gz_warp_sum(v);
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    T r = lane < nw ? part[lane] : T(0);
    return gz_warp_sum(r);
}
__device__ inline float gz_block_max(float v) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = gz_warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float r = lane < nw ? part[lane] : -INFINITY;
    return gz_warp_max(r);
}

/* ---- scratch buffers owned by one backend instance (grow-only, one per purpose). Not shared between
 * threads: an instance belongs to one model, and a model computes one call at a time. */
typedef enum {
    GZ_SCRATCH_GEMM_A = 0, /* bf16 copy of a GEMM operand */
    GZ_SCRATCH_GEMM_B,     /* bf16 copy of the other operand */
    GZ_SCRATCH_DOUT,       /* bf16 copy of matmul_backward's dout, shared by its two GEMMs */
    GZ_SCRATCH_REDUCE,     /* per-block partial sums (double) */
    GZ_SCRATCH_ROWS,       /* per-row values downloaded to the host */
    GZ_SCRATCH_COUNT
} gz_cuda_scratch_slot;
gz_status gz_cuda_scratch(gz_backend_ctx *ctx, gz_cuda_scratch_slot slot, size_t bytes, void **out);

struct cublasContext; /* cublas_v2.h's handle type, named here so this header needs no cuBLAS */

struct gz_backend_ctx {
    void *scratch[GZ_SCRATCH_COUNT];
    size_t scratch_bytes[GZ_SCRATCH_COUNT];
    struct cublasContext *cublas;
    void *cublas_workspace;
    gz_precision precision; /* GEMMs: fp32, tf32 or bf16 (gemm.cu) */
    /* bf16 copies of the weights (device memory), reused until a weight is written (upload, copy, zero, scale,
     * adamw_update) or any buffer is released: generation's decode steps then round each weight once. */
    gz_weight_copies weights;
};

/* memory.cu: marks cached bf16 weight copies overlapping [p, p + bytes) stale (bytes 0: all of them). */
void gz_cuda_weights_written(gz_backend_ctx *ctx, const void *p, size_t bytes);

/* Two-pass deterministic sum of per-block doubles already in GZ_SCRATCH_REDUCE: reduces
 * nparts values to one on the device and downloads it. */
gz_status gz_cuda_finish_sum(gz_backend_ctx *ctx, const double *parts, int nparts, double *out_host);
/* Block count for a reduction over n elements: a function of n only, so the partition (and the
 * bits of the result) never depend on the device. */
static inline int gz_reduce_blocks(int64_t n) {
    int64_t b = (n + GZ_THREADS * 8 - 1) / (GZ_THREADS * 8);
    if (b < 1) b = 1;
    if (b > 1024) b = 1024;
    return (int)b;
}

#endif
