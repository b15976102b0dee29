/* cpu_ops.h — the CPU implementations of the backend.h operations (one file per op family). */
#ifndef GOZARU_CPU_OPS_H
#define GOZARU_CPU_OPS_H

#include "../backend.h"
#include "../weight_copies.h"

gz_status gz_cpu_embedding_forward(float *out, const int32_t *tokens, const float *wte, int64_t N, int C);
gz_status gz_cpu_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int64_t N, int C);
gz_status gz_cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                   const float *b, int64_t N, int C, float eps);
gz_status gz_cpu_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                    const float *w, const float *mean, const float *rstd, int64_t N, int C);
gz_status gz_cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int64_t N, int C,
                                 float eps);
gz_status gz_cpu_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                                  const float *rstd, int64_t N, int C);
/* The norms' weight gradient, dw[c] += sum over rows of dout * xhat with xhat = (inp - mean) * rstd (LayerNorm) or,
 * mean NULL, inp * rstd (RMSNorm). Column blocks in parallel, rows summed in order: deterministic for any thread
 * count, as gz_cpu_add_column_sums. */
void gz_cpu_norm_weight_grad(float *dw, const float *dout, const float *inp, const float *mean, const float *rstd,
                             int64_t N, int C);
/* sum[c] += x[0, c] + x[1, c] + ... + x[N-1, c], in that order for any thread count (bias gradients). */
void gz_cpu_add_column_sums(float *sum, const float *x, int64_t N, int C);
/* out[n, :] = bias for every row; returns the GEMM beta that keeps it (1) or 0 when bias is NULL. */
float gz_cpu_fill_bias(float *out, const float *bias, int64_t N, int OC);
gz_status gz_cpu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int64_t N, int C,
                                int OC);
gz_status gz_cpu_matmul_few_rows(float *out, const float *inp, const float *w, const float *bias, int64_t N, int C,
                                 int OC);
gz_status gz_cpu_matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, int64_t N, int C, int OC);

/* matmul_bf16.c: the bf16 precisions of precision.h. One per backend instance. */
typedef struct {
    gz_precision precision;
    gz_weight_copies weights; /* copies: count bf16 values (uint16) or, emulated, rounded fp32 values */
    void *scratch[2]; /* rounded operands: 0 the input (activations), 1 the output gradient */
    size_t scratch_bytes[2];
} gz_cpu_bf16;
enum { GZ_CPU_AVX512_BF16 = 1, GZ_CPU_AMX_BF16 = 2 };
int gz_cpu_bf16_instructions(void); /* GZ_CPU_* bits this CPU (and OS) supports */
const char *gz_cpu_bf16_library(void); /* "mkl" when built with a bf16 GEMM library, else "" */
gz_status gz_cpu_bf16_set_precision(gz_cpu_bf16 *s, gz_precision p);
void gz_cpu_bf16_written(gz_cpu_bf16 *s, const void *p, size_t bytes);
void gz_cpu_bf16_free(gz_cpu_bf16 *s);
gz_status gz_cpu_bf16_matmul_forward(gz_cpu_bf16 *s, float *out, const float *inp, const float *w, const float *bias,
                                     int64_t N, int C, int OC);
gz_status gz_cpu_bf16_matmul_backward(gz_cpu_bf16 *s, float *dinp, float *dw, float *db, const float *dout,
                                      const float *inp, const float *w, int64_t N, int C, int OC);

gz_status gz_cpu_rotary_split_forward(float *q, float *k, float *v, const float *qkv, const int32_t *pos,
                                      const float *cos_t, const float *sin_t, int B, int T, int NH, int HS, int rot);
gz_status gz_cpu_rotary_split_backward(float *dqkv, const float *dq, const float *dk, const float *dv,
                                       const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T,
                                       int NH, int HS, int rot);
gz_status gz_cpu_rotary_heads_forward(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                                      const float *sin_t, int B, int T, int H, int HS, int rot);
gz_status gz_cpu_rotary_heads_backward(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                                       const float *sin_t, int B, int T, int H, int HS, int rot);
gz_status gz_cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                   const int32_t *doc_start, int B, int T, int NH, int NKV, int HS);
gz_status gz_cpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                    const float *out, const float *lse, const float *q, const float *k,
                                    const float *v, const int32_t *doc_start, int B, int T, int NH, int NKV, int HS);
gz_status gz_cpu_kv_append(float *kcache, float *vcache, const float *k, const float *v, const int32_t *row,
                           const int32_t *pos, int N, int NH, int HS, int S);
gz_status gz_cpu_attention_cached(float *out, float *scratch, const float *q, const float *kcache, const float *vcache,
                                  const int32_t *row, const int32_t *pos, int N, int NH, int NKV, int HS, int S);
gz_status gz_cpu_gelu_forward(float *out, const float *inp, int64_t n);
gz_status gz_cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
gz_status gz_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
gz_status gz_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                 int64_t n);
gz_status gz_cpu_add(float *out, const float *a, const float *b, int64_t n);
gz_status gz_cpu_cross_entropy_forward(float *lse, const float *logits, const int32_t *targets, int64_t N, int V,
                                       double *loss_sum_host, int64_t *count_host);
gz_status gz_cpu_cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                                        const int32_t *targets, int64_t N, int V, float scale);
gz_status gz_cpu_sum_squares(const float *x, int64_t n, double *out_host);
gz_status gz_cpu_scale(float *x, float s, int64_t n);
gz_status gz_cpu_adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                              float eps, float wd, float bias_corr1, float bias_corr2, float grad_scale,
                              double *upd_sq_host);

/* Hot inner loops (kept out of OpenMP regions, whose outlined bodies would not be cloned) get AVX-512 and
 * AVX2 versions chosen at load time. Results do not depend on the version: these loops have no cross-lane
 * reductions, and -ffp-contract=off (setup.py) keeps the compiler from fusing multiply-adds. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && !defined(GZ_NO_VECTOR_CLONES)
#define GZ_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GZ_VECTOR_CLONES
#endif

/* Loops over fewer elements than this run on one thread: waking a sleeping worker costs more than the
 * work (generation's decode steps are made of such loops). Threading never changes the results. */
#define GZ_PAR_MIN ((int64_t)1 << 16)
#define GZ_PAR_IF(work) if ((int64_t)(work) >= GZ_PAR_MIN)

/* Fixed-size chunks for deterministic parallel reductions: the partial sums and the order
 * they are combined in do not depend on the thread count. */
#define GZ_REDUCE_CHUNK 4096

#endif
