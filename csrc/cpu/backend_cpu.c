/* backend_cpu.c — the CPU backend: host memory plus the op implementations in this folder. */
#include <stdlib.h>
#include <string.h>
#include "cpu_ops.h"

static gz_status cpu_alloc(void **p, size_t bytes, const char *what) { return gz_calloc(p, bytes, 1, what); }
static void cpu_release(void *p) { free(p); }
static gz_status cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return GZ_OK;
}
static gz_status cpu_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
    return GZ_OK;
}
static gz_status cpu_synchronize(void) { return GZ_OK; }

static const gz_backend CPU_BACKEND = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .embedding_forward = gz_cpu_embedding_forward,
    .embedding_backward = gz_cpu_embedding_backward,
    .layernorm_forward = gz_cpu_layernorm_forward,
    .layernorm_backward = gz_cpu_layernorm_backward,
    .matmul_forward = gz_cpu_matmul_forward,
    .matmul_backward = gz_cpu_matmul_backward,
    .rotary_split_forward = gz_cpu_rotary_split_forward,
    .rotary_split_backward = gz_cpu_rotary_split_backward,
    .attention_forward = gz_cpu_attention_forward,
    .attention_backward = gz_cpu_attention_backward,
    .kv_append = gz_cpu_kv_append,
    .attention_cached = gz_cpu_attention_cached,
    .gelu_forward = gz_cpu_gelu_forward,
    .gelu_backward = gz_cpu_gelu_backward,
    .add = gz_cpu_add,
    .cross_entropy_forward = gz_cpu_cross_entropy_forward,
    .cross_entropy_backward = gz_cpu_cross_entropy_backward,
    .sum_squares = gz_cpu_sum_squares,
    .scale = gz_cpu_scale,
    .adamw_update = gz_cpu_adamw_update,
};

const gz_backend *gz_backend_cpu(void) { return &CPU_BACKEND; }
