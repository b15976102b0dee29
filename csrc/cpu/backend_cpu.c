/* backend_cpu.c — the CPU backend: host memory plus the op implementations in this folder.
 * Its context holds the Linear layers' precision and bf16 weight copies (matmul_bf16.c); the wrappers below
 * adapt the plain gz_cpu_* kernels, which the test-only op module also calls directly, to the backend
 * interface, and mark bf16 copies stale on every write to memory they see (precision.h). */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include "cpu_ops.h"

struct gz_backend_ctx {
    gz_cpu_bf16 bf16;
};

static gz_status cpu_alloc(gz_backend_ctx *ctx, void **p, size_t bytes, const char *what) {
    (void)ctx;
    return gz_calloc(p, bytes, 1, what);
}
static void cpu_release(gz_backend_ctx *ctx, void *p) {
    /* copies of weights inside the freed block go stale (the address may come back holding something else);
     * only those: generation frees its buffers after every call, which must not re-round every weight */
    if (p) gz_cpu_bf16_written(&ctx->bf16, p, malloc_usable_size(p));
    free(p);
}
static gz_status cpu_copy(gz_backend_ctx *ctx, void *dst, const void *src, size_t bytes) {
    gz_cpu_bf16_written(&ctx->bf16, dst, bytes);
    if (bytes && dst != src) memcpy(dst, src, bytes);
    return GZ_OK;
}
static gz_status cpu_zero(gz_backend_ctx *ctx, void *p, size_t bytes) {
    gz_cpu_bf16_written(&ctx->bf16, p, bytes);
    if (bytes) memset(p, 0, bytes);
    return GZ_OK;
}
static gz_status cpu_synchronize(gz_backend_ctx *ctx) {
    (void)ctx;
    return GZ_OK;
}
static gz_precision cpu_precision(gz_backend_ctx *ctx) { return ctx->bf16.precision; }
static gz_status cpu_set_precision(gz_backend_ctx *ctx, gz_precision p) {
    return gz_cpu_bf16_set_precision(&ctx->bf16, p);
}
static void cpu_weights_written(gz_backend_ctx *ctx, const void *p, size_t bytes) {
    gz_cpu_bf16_written(&ctx->bf16, p, bytes);
}
static void cpu_destroy(gz_backend_ctx *ctx) {
    gz_cpu_bf16_free(&ctx->bf16);
    free(ctx);
}

static gz_status cpu_embedding_forward(gz_backend_ctx *ctx, float *out, const int32_t *tokens, const float *wte,
                                       int64_t N, int C) {
    (void)ctx;
    return gz_cpu_embedding_forward(out, tokens, wte, N, C);
}
static gz_status cpu_embedding_backward(gz_backend_ctx *ctx, float *dwte, const float *dout, const int32_t *tokens,
                                        int64_t N, int C) {
    (void)ctx;
    return gz_cpu_embedding_backward(dwte, dout, tokens, N, C);
}
static gz_status cpu_layernorm_forward(gz_backend_ctx *ctx, float *out, float *mean, float *rstd, const float *inp,
                                       const float *w, const float *b, int64_t N, int C, float eps) {
    (void)ctx;
    return gz_cpu_layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps);
}
static gz_status cpu_layernorm_backward(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                        const float *inp, const float *w, const float *mean, const float *rstd,
                                        int64_t N, int C) {
    (void)ctx;
    return gz_cpu_layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
}
static gz_status cpu_rmsnorm_forward(gz_backend_ctx *ctx, float *out, float *rstd, const float *inp, const float *w,
                                     int64_t N, int C, float eps) {
    (void)ctx;
    return gz_cpu_rmsnorm_forward(out, rstd, inp, w, N, C, eps);
}
static gz_status cpu_rmsnorm_backward(gz_backend_ctx *ctx, float *dinp, float *dw, const float *dout, const float *inp,
                                      const float *w, const float *rstd, int64_t N, int C) {
    (void)ctx;
    return gz_cpu_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
}
static gz_status cpu_matmul_forward(gz_backend_ctx *ctx, float *out, const float *inp, const float *w,
                                    const float *bias, int64_t N, int C, int OC) {
    if (ctx->bf16.precision != GZ_PRECISION_FP32)
        return gz_cpu_bf16_matmul_forward(&ctx->bf16, out, inp, w, bias, N, C, OC);
    return gz_cpu_matmul_forward(out, inp, w, bias, N, C, OC);
}
static gz_status cpu_matmul_backward(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                     const float *inp, const float *w, int64_t N, int C, int OC) {
    if (ctx->bf16.precision != GZ_PRECISION_FP32)
        return gz_cpu_bf16_matmul_backward(&ctx->bf16, dinp, dw, db, dout, inp, w, N, C, OC);
    return gz_cpu_matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC);
}
static gz_status cpu_rotary_split_forward(gz_backend_ctx *ctx, float *q, float *k, float *v, const float *qkv,
                                          const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T,
                                          int NH, int HS, int rot) {
    (void)ctx;
    return gz_cpu_rotary_split_forward(q, k, v, qkv, pos, cos_t, sin_t, B, T, NH, HS, rot);
}
static gz_status cpu_rotary_split_backward(gz_backend_ctx *ctx, float *dqkv, const float *dq, const float *dk,
                                           const float *dv, const int32_t *pos, const float *cos_t, const float *sin_t,
                                           int B, int T, int NH, int HS, int rot) {
    (void)ctx;
    return gz_cpu_rotary_split_backward(dqkv, dq, dk, dv, pos, cos_t, sin_t, B, T, NH, HS, rot);
}
static gz_status cpu_rotary_heads_forward(gz_backend_ctx *ctx, float *out, const float *inp, const int32_t *pos,
                                          const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot) {
    (void)ctx;
    return gz_cpu_rotary_heads_forward(out, inp, pos, cos_t, sin_t, B, T, H, HS, rot);
}
static gz_status cpu_rotary_heads_backward(gz_backend_ctx *ctx, float *dinp, const float *dout, const int32_t *pos,
                                           const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot) {
    (void)ctx;
    return gz_cpu_rotary_heads_backward(dinp, dout, pos, cos_t, sin_t, B, T, H, HS, rot);
}
static gz_status cpu_attention_forward(gz_backend_ctx *ctx, float *out, float *lse, const float *q, const float *k,
                                       const float *v, const int32_t *doc_start, int B, int T, int NH, int NKV,
                                       int HS) {
    (void)ctx;
    return gz_cpu_attention_forward(out, lse, q, k, v, doc_start, B, T, NH, NKV, HS);
}
static gz_status cpu_attention_backward(gz_backend_ctx *ctx, float *dq, float *dk, float *dv, float *scratch,
                                        const float *dout, const float *out, const float *lse, const float *q,
                                        const float *k, const float *v, const int32_t *doc_start, int B, int T,
                                        int NH, int NKV, int HS) {
    (void)ctx;
    return gz_cpu_attention_backward(dq, dk, dv, scratch, dout, out, lse, q, k, v, doc_start, B, T, NH, NKV, HS);
}
static gz_status cpu_kv_append(gz_backend_ctx *ctx, float *kcache, float *vcache, const float *k, const float *v,
                               const int32_t *row, const int32_t *pos, int N, int NH, int HS, int S) {
    (void)ctx;
    return gz_cpu_kv_append(kcache, vcache, k, v, row, pos, N, NH, HS, S);
}
static gz_status cpu_attention_cached(gz_backend_ctx *ctx, float *out, float *scratch, const float *q,
                                      const float *kcache, const float *vcache, const int32_t *row, const int32_t *pos,
                                      int N, int NH, int NKV, int HS, int S) {
    (void)ctx;
    return gz_cpu_attention_cached(out, scratch, q, kcache, vcache, row, pos, N, NH, NKV, HS, S);
}
static gz_status cpu_gelu_forward(gz_backend_ctx *ctx, float *out, const float *inp, int64_t n) {
    (void)ctx;
    return gz_cpu_gelu_forward(out, inp, n);
}
static gz_status cpu_gelu_backward(gz_backend_ctx *ctx, float *dinp, const float *dout, const float *inp, int64_t n) {
    (void)ctx;
    return gz_cpu_gelu_backward(dinp, dout, inp, n);
}
static gz_status cpu_swiglu_forward(gz_backend_ctx *ctx, float *out, const float *gate, const float *up, int64_t n) {
    (void)ctx;
    return gz_cpu_swiglu_forward(out, gate, up, n);
}
static gz_status cpu_swiglu_backward(gz_backend_ctx *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                                     const float *up, int64_t n) {
    (void)ctx;
    return gz_cpu_swiglu_backward(dgate, dup, dout, gate, up, n);
}
static gz_status cpu_add(gz_backend_ctx *ctx, float *out, const float *a, const float *b, int64_t n) {
    (void)ctx;
    return gz_cpu_add(out, a, b, n);
}
static gz_status cpu_cross_entropy_forward(gz_backend_ctx *ctx, float *lse, const float *logits, const int32_t *targets,
                                           int64_t N, int V, double *loss_sum_host, int64_t *count_host) {
    (void)ctx;
    return gz_cpu_cross_entropy_forward(lse, logits, targets, N, V, loss_sum_host, count_host);
}
static gz_status cpu_cross_entropy_backward(gz_backend_ctx *ctx, float *dlogits, const float *logits, const float *lse,
                                            const int32_t *targets, int64_t N, int V, float scale) {
    (void)ctx;
    return gz_cpu_cross_entropy_backward(dlogits, logits, lse, targets, N, V, scale);
}
static gz_status cpu_sum_squares(gz_backend_ctx *ctx, const float *x, int64_t n, double *out_host) {
    (void)ctx;
    return gz_cpu_sum_squares(x, n, out_host);
}
static gz_status cpu_scale(gz_backend_ctx *ctx, float *x, float s, int64_t n) {
    gz_cpu_bf16_written(&ctx->bf16, x, (size_t)(n > 0 ? n : 0) * sizeof(float));
    return gz_cpu_scale(x, s, n);
}
static gz_status cpu_adamw_update(gz_backend_ctx *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                                  float lr, float b1, float b2, float eps, float wd, float bias_corr1, float bias_corr2,
                                  float grad_scale, double *upd_sq_host) {
    gz_cpu_bf16_written(&ctx->bf16, p, (size_t)(n > 0 ? n : 0) * sizeof(float)); /* the weight changes */
    return gz_cpu_adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, bias_corr1, bias_corr2, grad_scale, upd_sq_host);
}

static const gz_backend CPU_BACKEND = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .precision = cpu_precision,
    .set_precision = cpu_set_precision,
    .weights_written = cpu_weights_written,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .rotary_split_forward = cpu_rotary_split_forward,
    .rotary_split_backward = cpu_rotary_split_backward,
    .rotary_heads_forward = cpu_rotary_heads_forward,
    .rotary_heads_backward = cpu_rotary_heads_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .kv_append = cpu_kv_append,
    .attention_cached = cpu_attention_cached,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .add = cpu_add,
    .cross_entropy_forward = cpu_cross_entropy_forward,
    .cross_entropy_backward = cpu_cross_entropy_backward,
    .sum_squares = cpu_sum_squares,
    .scale = cpu_scale,
    .adamw_update = cpu_adamw_update,
};

gz_status gz_backend_cpu_create(gz_backend **out) {
    *out = NULL;
    gz_backend *be;
    GZ_TRY(gz_calloc((void **)&be, 1, sizeof *be, "CPU backend"));
    *be = CPU_BACKEND;
    gz_status st = gz_calloc((void **)&be->ctx, 1, sizeof *be->ctx, "CPU backend context");
    if (st != GZ_OK) {
        free(be);
        return st;
    }
    *out = be;
    return GZ_OK;
}
