/* backend_cuda.cu — assembles the CUDA vtable (backend.h) and answers whether a device is present. */
#include "cuda_ops.h"

static gz_backend make_cuda_backend(void) {
    gz_backend b = {};
    b.name = "cuda";
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
    b.matmul_forward = gz_cuda_matmul_forward;
    b.matmul_backward = gz_cuda_matmul_backward;
    b.rotary_split_forward = gz_cuda_rotary_split_forward;
    b.rotary_split_backward = gz_cuda_rotary_split_backward;
    b.attention_forward = gz_cuda_attention_forward;
    b.attention_backward = gz_cuda_attention_backward;
    b.kv_append = gz_cuda_kv_append;
    b.attention_cached = gz_cuda_attention_cached;
    b.gelu_forward = gz_cuda_gelu_forward;
    b.gelu_backward = gz_cuda_gelu_backward;
    b.add = gz_cuda_add;
    b.cross_entropy_forward = gz_cuda_cross_entropy_forward;
    b.cross_entropy_backward = gz_cuda_cross_entropy_backward;
    b.sum_squares = gz_cuda_sum_squares;
    b.scale = gz_cuda_scale;
    b.adamw_update = gz_cuda_adamw_update;
    return b;
}

/* Every entry of backend.h is filled above: when the interface grows, this fails to compile until the
 * new operation is implemented here too (count = name + operations). */
static_assert(sizeof(gz_backend) == 28 * sizeof(void *), "backend.h changed: implement the new entries in csrc/cuda");

static const gz_backend CUDA_BACKEND = make_cuda_backend();

extern "C" const gz_backend *gz_backend_cuda(void) { return &CUDA_BACKEND; }

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
