/* cuda_ops.h — the CUDA implementations of the backend.h operations (one .cu file per op family),
 * plus the cuBLAS wrapper that matmul.cu and attention.cu share. */
#ifndef GOZARU_CUDA_OPS_H
#define GOZARU_CUDA_OPS_H

#include "cuda_common.cuh"

/* memory.cu */
gz_status gz_cuda_alloc(void **p, size_t bytes, const char *what);
void gz_cuda_release(void *p);
gz_status gz_cuda_upload(void *dst, const void *src_host, size_t bytes);
gz_status gz_cuda_download(void *dst_host, const void *src, size_t bytes);
gz_status gz_cuda_zero(void *p, size_t bytes);
gz_status gz_cuda_copy(void *dst, const void *src, size_t bytes);
gz_status gz_cuda_synchronize(void);

/* gemm.cu: column-major C[m,n] = alpha * op(A) op(B) + beta * C over `batch` strided matrices,
 * fp32 storage throughout. allow_bf16: the operands may be rounded to bf16 (GOZARU_CUDA_GEMM=bf16,
 * the default; needs batch == 1 and contiguous A [a_count], B [b_count]); otherwise they stay
 * fp32 and the product uses TF32 tensor cores (bf16/tf32 modes) or plain fp32 (fp32 mode). */
gz_status gz_cuda_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *A, int lda,
                       int64_t stride_a, int64_t a_count, const float *B, int ldb, int64_t stride_b, int64_t b_count,
                       float beta, float *C, int ldc, int64_t stride_c, int batch, bool allow_bf16);
const char *gz_cuda_gemm_mode_name(void);

/* matmul.cu */
gz_status gz_cuda_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int64_t N, int C,
                                 int OC);
gz_status gz_cuda_matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                  const float *w, int64_t N, int C, int OC);

/* embedding.cu */
gz_status gz_cuda_embedding_forward(float *out, const int32_t *tokens, const float *wte, int64_t N, int C);
gz_status gz_cuda_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int64_t N, int C);

/* layernorm.cu */
gz_status gz_cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                    const float *b, int64_t N, int C, float eps);
gz_status gz_cuda_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                     const float *w, const float *mean, const float *rstd, int64_t N, int C);

/* rotary.cu */
gz_status gz_cuda_rotary_split_forward(float *q, float *k, float *v, const float *qkv, const int32_t *pos,
                                       const float *cos_t, const float *sin_t, int B, int T, int NH, int HS, int rot);
gz_status gz_cuda_rotary_split_backward(float *dqkv, const float *dq, const float *dk, const float *dv,
                                        const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T,
                                        int NH, int HS, int rot);

/* attention.cu */
gz_status gz_cuda_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B,
                                    int T, int NH, int HS);
gz_status gz_cuda_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                     const float *att, const float *q, const float *k, const float *v, int B, int T,
                                     int NH, int HS);

/* attention_cached.cu */
gz_status gz_cuda_kv_append(float *kcache, float *vcache, const float *k, const float *v, const int32_t *row,
                            const int32_t *pos, int N, int NH, int HS, int S);
gz_status gz_cuda_attention_cached(float *out, float *scratch, const float *q, const float *kcache,
                                   const float *vcache, const int32_t *row, const int32_t *pos, int N, int NH, int HS,
                                   int S);

/* elementwise.cu */
gz_status gz_cuda_gelu_forward(float *out, const float *inp, int64_t n);
gz_status gz_cuda_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
gz_status gz_cuda_add(float *out, const float *a, const float *b, int64_t n);
gz_status gz_cuda_scale(float *x, float s, int64_t n);

/* cross_entropy.cu */
gz_status gz_cuda_cross_entropy_forward(float *lse, const float *logits, const int32_t *targets, int64_t N, int V,
                                        double *loss_sum_host, int64_t *count_host);
gz_status gz_cuda_cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                                         const int32_t *targets, int64_t N, int V, float scale);

/* reduce.cu */
gz_status gz_cuda_sum_squares(const float *x, int64_t n, double *out_host);

/* adamw.cu */
gz_status gz_cuda_adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                               float eps, float wd, float bias_corr1, float bias_corr2, float grad_scale,
                               double *upd_sq_host);

#endif
