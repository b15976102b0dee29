/* elementwise.cu — GELU, SwiGLU, residual add and scaling; the formulas are elementwise.h's, shared with
 * the CPU loops. Outputs may alias inputs (each element is read before it is written). */
#include "cuda_ops.h"

#define GRID_STRIDE(i, n)                                                                                  \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, gz_st_ = (int64_t)gridDim.x * blockDim.x; \
         i < (n); i += gz_st_)

__global__ void gelu_forward_kernel(float *out, const float *inp, int64_t n) {
    GRID_STRIDE(i, n) out[i] = gz_gelu(inp[i]);
}
__global__ void gelu_backward_kernel(float *dinp, const float *dout, const float *inp, int64_t n) {
    GRID_STRIDE(i, n) dinp[i] = dout[i] * gz_gelu_grad(inp[i]);
}
__global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up, int64_t n) {
    GRID_STRIDE(i, n) out[i] = gz_swiglu(gate[i], up[i]);
}
__global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                       int64_t n) {
    GRID_STRIDE(i, n) {
        float dg, du;
        gz_swiglu_grad(gate[i], up[i], dout[i], &dg, &du);
        dgate[i] = dg;
        dup[i] = du;
    }
}
__global__ void add_kernel(float *out, const float *a, const float *b, int64_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
__global__ void scale_kernel(float *x, float s, int64_t n) {
    GRID_STRIDE(i, n) x[i] *= s;
}

gz_status gz_cuda_gelu_forward(gz_backend_ctx *ctx, float *out, const float *inp, int64_t n) {
    if (n <= 0) return GZ_OK;
    gelu_forward_kernel<<<gz_blocks_for(n), GZ_THREADS>>>(out, inp, n);
    GZ_LAUNCH_CHECK("gelu_forward");
    return GZ_OK;
}

gz_status gz_cuda_gelu_backward(gz_backend_ctx *ctx, float *dinp, const float *dout, const float *inp, int64_t n) {
    if (n <= 0) return GZ_OK;
    gelu_backward_kernel<<<gz_blocks_for(n), GZ_THREADS>>>(dinp, dout, inp, n);
    GZ_LAUNCH_CHECK("gelu_backward");
    return GZ_OK;
}

gz_status gz_cuda_swiglu_forward(gz_backend_ctx *ctx, float *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return GZ_OK;
    swiglu_forward_kernel<<<gz_blocks_for(n), GZ_THREADS>>>(out, gate, up, n);
    GZ_LAUNCH_CHECK("swiglu_forward");
    return GZ_OK;
}

gz_status gz_cuda_swiglu_backward(gz_backend_ctx *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, int64_t n) {
    if (n <= 0) return GZ_OK;
    swiglu_backward_kernel<<<gz_blocks_for(n), GZ_THREADS>>>(dgate, dup, dout, gate, up, n);
    GZ_LAUNCH_CHECK("swiglu_backward");
    return GZ_OK;
}

gz_status gz_cuda_add(gz_backend_ctx *ctx, float *out, const float *a, const float *b, int64_t n) {
    if (n <= 0) return GZ_OK;
    add_kernel<<<gz_blocks_for(n), GZ_THREADS>>>(out, a, b, n);
    GZ_LAUNCH_CHECK("add");
    return GZ_OK;
}

gz_status gz_cuda_scale(gz_backend_ctx *ctx, float *x, float s, int64_t n) {
    if (n <= 0) return GZ_OK;
    gz_cuda_weights_written(ctx, x, (size_t)n * sizeof(float));
    scale_kernel<<<gz_blocks_for(n), GZ_THREADS>>>(x, s, n);
    GZ_LAUNCH_CHECK("scale");
    return GZ_OK;
}
