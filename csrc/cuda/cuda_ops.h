/* cuda_ops.h — the CUDA implementations of the backend.h operations (one .cu file per op family),
 * plus the cuBLAS wrapper that matmul.cu and attention.cu share. */
#ifndef GOZARU_CUDA_OPS_H
#define GOZARU_CUDA_OPS_H

#include "cuda_common.cuh"

/* memory.cu */
gz_status gz_cuda_alloc(gz_backend_ctx *ctx, void **p, size_t bytes, const char *what);
void gz_cuda_release(gz_backend_ctx *ctx, void *p);
gz_status gz_cuda_upload(gz_backend_ctx *ctx, void *dst, const void *src_host, size_t bytes);
gz_status gz_cuda_download(gz_backend_ctx *ctx, void *dst_host, const void *src, size_t bytes);
gz_status gz_cuda_zero(gz_backend_ctx *ctx, void *p, size_t bytes);
gz_status gz_cuda_copy(gz_backend_ctx *ctx, void *dst, const void *src, size_t bytes);
gz_status gz_cuda_synchronize(gz_backend_ctx *ctx);

/* gemm.cu: column-major C[m,n] = alpha * op(A) op(B) + beta * C over `batch` strided matrices,
 * fp32 output. In bf16 precision (the default) with batch == 1, k > 0 and no
 * GZ_OPERAND_FP32 operand, both operands reach cuBLAS as bf16 (contiguous A [a_count], B [b_count]);
 * otherwise they stay fp32 and the product uses TF32 tensor cores (bf16/tf32 modes) or plain fp32. */
typedef enum {
    GZ_OPERAND_FP32 = 0, /* never rounded (attention products) */
    GZ_OPERAND_ROUND,    /* fp32 activation: rounded into scratch for this call */
    GZ_OPERAND_WEIGHT,   /* fp32 weight: its bf16 copy is cached until the weight is written */
    GZ_OPERAND_BF16      /* already bf16 (rounded by the caller with gz_cuda_to_bf16) */
} gz_operand;
gz_status gz_cuda_gemm(gz_backend_ctx *ctx, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                       const void *A, gz_operand a_kind, int lda, int64_t stride_a, int64_t a_count, const void *B,
                       gz_operand b_kind, int ldb, int64_t stride_b, int64_t b_count, float beta, float *C, int ldc,
                       int64_t stride_c, int batch);
static inline bool gz_cuda_gemm_uses_bf16(const gz_backend_ctx *ctx, gz_operand a, gz_operand b, int k, int batch) {
    return ctx->precision == GZ_PRECISION_BF16 && a != GZ_OPERAND_FP32 && b != GZ_OPERAND_FP32 && batch == 1 && k > 0;
}
gz_status gz_cuda_to_bf16(gz_backend_ctx *ctx, gz_cuda_scratch_slot slot, const float *src, int64_t n,
                          const void **out);
gz_precision gz_cuda_precision(gz_backend_ctx *ctx);
gz_status gz_cuda_set_precision(gz_backend_ctx *ctx, gz_precision p);
gz_status gz_cuda_gemm_init(gz_backend_ctx *ctx); /* precision bf16, creates the cuBLAS handle */
void gz_cuda_gemm_release(gz_backend_ctx *ctx);
void gz_cuda_weights_free(gz_backend_ctx *ctx);

/* matmul.cu */
gz_status gz_cuda_matmul_forward(gz_backend_ctx *ctx, float *out, const float *inp, const float *w, const float *bias,
                                 int64_t N, int C, int OC);
gz_status gz_cuda_matmul_backward(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, int64_t N, int C, int OC);

/* embedding.cu */
gz_status gz_cuda_embedding_forward(gz_backend_ctx *ctx, float *out, const int32_t *tokens, const float *wte, int64_t N,
                                    int C);
gz_status gz_cuda_embedding_backward(gz_backend_ctx *ctx, float *dwte, const float *dout, const int32_t *tokens,
                                     int64_t N, int C);

/* layernorm.cu */
gz_status gz_cuda_layernorm_forward(gz_backend_ctx *ctx, float *out, float *mean, float *rstd, const float *inp,
                                    const float *w, const float *b, int64_t N, int C, float eps);
gz_status gz_cuda_layernorm_backward(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                     const float *inp, const float *w, const float *mean, const float *rstd, int64_t N,
                                     int C);

/* rmsnorm.cu */
gz_status gz_cuda_rmsnorm_forward(gz_backend_ctx *ctx, float *out, float *rstd, const float *inp, const float *w,
                                  int64_t N, int C, float eps);
gz_status gz_cuda_rmsnorm_backward(gz_backend_ctx *ctx, float *dinp, float *dw, const float *dout, const float *inp,
                                   const float *w, const float *rstd, int64_t N, int C);

/* rotary.cu */
gz_status gz_cuda_rotary_heads_forward(gz_backend_ctx *ctx, float *out, const float *inp, const int32_t *pos,
                                       const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot);
gz_status gz_cuda_rotary_heads_backward(gz_backend_ctx *ctx, float *dinp, const float *dout, const int32_t *pos,
                                        const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot);
gz_status gz_cuda_rotary_split_forward(gz_backend_ctx *ctx, float *q, float *k, float *v, const float *qkv,
                                       const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T, int NH,
                                       int HS, int rot);
gz_status gz_cuda_rotary_split_backward(gz_backend_ctx *ctx, float *dqkv, const float *dq, const float *dk,
                                        const float *dv, const int32_t *pos, const float *cos_t, const float *sin_t,
                                        int B, int T, int NH, int HS, int rot);

/* attention.cu */
gz_status gz_cuda_attention_forward(gz_backend_ctx *ctx, float *out, float *lse, const float *q, const float *k,
                                    const float *v, const int32_t *doc_start, int B, int T, int NH, int NKV, int HS);
gz_status gz_cuda_attention_backward(gz_backend_ctx *ctx, float *dq, float *dk, float *dv, float *scratch,
                                     const float *dout, const float *out, const float *lse, const float *q,
                                     const float *k, const float *v, const int32_t *doc_start, int B, int T, int NH,
                                     int NKV, int HS);

/* attention_cached.cu */
gz_status gz_cuda_kv_append(gz_backend_ctx *ctx, float *kcache, float *vcache, const float *k, const float *v,
                            const int32_t *row, const int32_t *pos, int N, int NH, int HS, int S);
gz_status gz_cuda_attention_cached(gz_backend_ctx *ctx, float *out, float *scratch, const float *q, const float *kcache,
                                   const float *vcache, const int32_t *row, const int32_t *pos, int N, int NH, int NKV,
                                   int HS, int S);

/* elementwise.cu */
gz_status gz_cuda_gelu_forward(gz_backend_ctx *ctx, float *out, const float *inp, int64_t n);
gz_status gz_cuda_gelu_backward(gz_backend_ctx *ctx, float *dinp, const float *dout, const float *inp, int64_t n);
gz_status gz_cuda_swiglu_forward(gz_backend_ctx *ctx, float *out, const float *gate, const float *up, int64_t n);
gz_status gz_cuda_swiglu_backward(gz_backend_ctx *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, int64_t n);
gz_status gz_cuda_add(gz_backend_ctx *ctx, float *out, const float *a, const float *b, int64_t n);
gz_status gz_cuda_scale(gz_backend_ctx *ctx, float *x, float s, int64_t n);

/* cross_entropy.cu */
gz_status gz_cuda_cross_entropy_forward(gz_backend_ctx *ctx, float *lse, const float *logits, const int32_t *targets,
                                        int64_t N, int V, double *loss_sum_host, int64_t *count_host);
gz_status gz_cuda_cross_entropy_backward(gz_backend_ctx *ctx, float *dlogits, const float *logits, const float *lse,
                                         const int32_t *targets, int64_t N, int V, float scale);

/* reduce.cu */
gz_status gz_cuda_sum_squares(gz_backend_ctx *ctx, const float *x, int64_t n, double *out_host);

/* adamw.cu */
gz_status gz_cuda_adamw_update(gz_backend_ctx *ctx, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                               float b1, float b2, float eps, float wd, float bias_corr1, float bias_corr2,
                               float grad_scale, double *upd_sq_host);

#endif
