/* colsum.cuh — deterministic column sums out[c] += sum_n f(n, c) over N rows (bias and LayerNorm
 * parameter gradients). Each block owns 32 columns; its 16 row lanes sum interleaved rows in a
 * fixed order, then lane partials are added in lane order: no atomics, same bits every run. */
#ifndef GOZARU_CUDA_COLSUM_CUH
#define GOZARU_CUDA_COLSUM_CUH

#include "cuda_common.cuh"

#define GZ_COLSUM_COLS 32
#define GZ_COLSUM_LANES 16

/* F: __device__ void f(int64_t n, int c, float *v0, float *v1) adds row n's terms of the two sums. */
template <class F>
__global__ void gz_colsum2_kernel(float *out0, float *out1, F f, int64_t N, int C) {
    __shared__ float s0[GZ_COLSUM_LANES][GZ_COLSUM_COLS + 1], s1[GZ_COLSUM_LANES][GZ_COLSUM_COLS + 1];
    int c = blockIdx.x * GZ_COLSUM_COLS + threadIdx.x;
    float a0 = 0.0f, a1 = 0.0f;
    if (c < C)
        for (int64_t n = threadIdx.y; n < N; n += GZ_COLSUM_LANES) f(n, c, &a0, &a1);
    s0[threadIdx.y][threadIdx.x] = a0;
    s1[threadIdx.y][threadIdx.x] = a1;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t0 = 0.0f, t1 = 0.0f;
        for (int l = 0; l < GZ_COLSUM_LANES; l++) {
            t0 += s0[l][threadIdx.x];
            t1 += s1[l][threadIdx.x];
        }
        if (out0) out0[c] += t0;
        if (out1) out1[c] += t1;
    }
}

template <class F>
static gz_status gz_colsum2(float *out0, float *out1, F f, int64_t N, int C, const char *what) {
    if (C <= 0 || (!out0 && !out1)) return GZ_OK;
    dim3 block(GZ_COLSUM_COLS, GZ_COLSUM_LANES);
    gz_colsum2_kernel<<<(C + GZ_COLSUM_COLS - 1) / GZ_COLSUM_COLS, block>>>(out0, out1, f, N, C);
    GZ_LAUNCH_CHECK(what);
    return GZ_OK;
}

#endif
