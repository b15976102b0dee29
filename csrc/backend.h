/* backend.h — the interface model.c is written against (ggml-style vtable).
 *
 * Every pointer argument is backend memory (host for CPU, device for CUDA) unless named *_host.
 * Gradient outputs of parameters (dw, db, dwte) ACCUMULATE (+=); dinp of layernorm and rmsnorm
 * ACCUMULATES (so residual branches add up); every other output is OVERWRITTEN.
 * A NULL gradient output means "not needed" and its computation is skipped — this is how
 * frozen tensors cost no weight-gradient GEMM.
 */
#ifndef GOZARU_BACKEND_H
#define GOZARU_BACKEND_H

#include "internal.h"
#include "precision.h"

/* Each backend defines this struct for itself (scratch buffers, library handles, settings read once at
 * creation); code outside the backend only passes the pointer back. */
typedef struct gz_backend_ctx gz_backend_ctx;

/* One backend instance: the operations (shared per backend kind) plus this instance's state, which
 * every operation receives as its first argument: be->op(be->ctx, ...). Each model owns one. */
typedef struct gz_backend {
    const char *name;
    gz_backend_ctx *ctx;
    void (*destroy)(gz_backend_ctx *ctx); /* frees ctx and everything it holds */
    /* The GEMM precision this instance uses (precision.h); each backend has its default (CPU fp32, CUDA bf16). */
    gz_precision (*precision)(gz_backend_ctx *ctx);
    /* Chooses it; GZ_ERR_BACKEND, saying why, unless gz_backend_supports(this kind, p). */
    gz_status (*set_precision)(gz_backend_ctx *ctx, gz_precision p);
    /* Marks cached low-precision weight copies overlapping [p, p + bytes) stale; p NULL: all of them. For
     * writes the backend does not see (host parameter views on the CPU); precision.h says when. */
    void (*weights_written)(gz_backend_ctx *ctx, const void *p, size_t bytes);

    /* memory */
    gz_status (*alloc)(gz_backend_ctx *ctx, void **p, size_t bytes, const char *what); /* zeroed */
    void (*release)(gz_backend_ctx *ctx, void *p);
    gz_status (*upload)(gz_backend_ctx *ctx, void *dst, const void *src_host, size_t bytes);
    gz_status (*download)(gz_backend_ctx *ctx, void *dst_host, const void *src, size_t bytes);
    gz_status (*zero)(gz_backend_ctx *ctx, void *p, size_t bytes);
    gz_status (*copy)(gz_backend_ctx *ctx, void *dst, const void *src, size_t bytes);
    gz_status (*synchronize)(gz_backend_ctx *ctx);

    /* out[N,C] = wte[tokens[n], :] */
    gz_status (*embedding_forward)(gz_backend_ctx *ctx, float *out, const int32_t *tokens, const float *wte, int64_t N,
                                   int C);
    gz_status (*embedding_backward)(gz_backend_ctx *ctx, float *dwte, const float *dout, const int32_t *tokens,
                                    int64_t N, int C);

    /* out = (inp - mean) * rstd * w + b, per row of C; mean/rstd [N] saved for backward */
    gz_status (*layernorm_forward)(gz_backend_ctx *ctx, float *out, float *mean, float *rstd, const float *inp,
                                   const float *w, const float *b, int64_t N, int C, float eps);
    gz_status (*layernorm_backward)(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                    const float *inp, const float *w, const float *mean, const float *rstd, int64_t N,
                                    int C);

    /* RMSNorm (Llama): out = w * (inp * rstd), rstd = 1 / sqrt(mean(inp^2) + eps) per row; rstd [N] saved */
    gz_status (*rmsnorm_forward)(gz_backend_ctx *ctx, float *out, float *rstd, const float *inp, const float *w,
                                 int64_t N, int C, float eps);
    gz_status (*rmsnorm_backward)(gz_backend_ctx *ctx, float *dinp, float *dw, const float *dout, const float *inp,
                                  const float *w, const float *rstd, int64_t N, int C);

    /* out[N,OC] = inp[N,C] @ w[OC,C]^T + bias[OC] (bias may be NULL). w is a weight: a backend may keep a
     * converted copy of it until that memory is written through this interface (upload, copy, zero, scale,
     * adamw_update), any buffer is released, or weights_written names it (precision.h). */
    gz_status (*matmul_forward)(gz_backend_ctx *ctx, float *out, const float *inp, const float *w, const float *bias,
                                int64_t N, int C, int OC);
    gz_status (*matmul_backward)(gz_backend_ctx *ctx, float *dinp, float *dw, float *db, const float *dout,
                                 const float *inp, const float *w, int64_t N, int C, int OC);

    /* Split qkv [B,T,NH,3,HS] (HF's per-head q|k|v layout) into q,k,v [B,NH,T,HS], rotating
     * the first rot dims of q and k (rotate-half). pos [B*T] gives each token's position.
     * cos/sin tables are [max_pos, rot/2]. */
    gz_status (*rotary_split_forward)(gz_backend_ctx *ctx, float *q, float *k, float *v, const float *qkv,
                                      const int32_t *pos, const float *cos_t, const float *sin_t, int B, int T, int NH,
                                      int HS, int rot);
    gz_status (*rotary_split_backward)(gz_backend_ctx *ctx, float *dqkv, const float *dq, const float *dk,
                                       const float *dv, const int32_t *pos, const float *cos_t, const float *sin_t,
                                       int B, int T, int NH, int HS, int rot);

    /* Separate projections (Llama): out [B,H,T,HS] from inp [B,T,H,HS] (one projection's rows, heads side by
     * side), the first rot dims rotated as above (rot = 0: only the transpose). Backward overwrites dinp. */
    gz_status (*rotary_heads_forward)(gz_backend_ctx *ctx, float *out, const float *inp, const int32_t *pos,
                                      const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot);
    gz_status (*rotary_heads_backward)(gz_backend_ctx *ctx, float *dinp, const float *dout, const int32_t *pos,
                                       const float *cos_t, const float *sin_t, int B, int T, int H, int HS, int rot);

    /* Causal softmax attention, blocked with an online softmax (no T x T buffer): q [B,NH,T,HS], k and v
     * [B,NKV,T,HS] (NKV divides NH; query head h reads key/value head h / (NH / NKV), grouped-query
     * attention; NKV = NH is multi-head). out [B,T,NH*HS] (heads merged as HF does); lse [B,NH,T] keeps each
     * row's log-sum-exp of its scaled scores, from which backward recomputes the probabilities.
     * doc_start [B,T] (NULL: one document per row) packs several documents into a row: token t's document
     * begins at doc_start[t] (0 <= doc_start[t] <= t, and doc_start[t] is t or doc_start[t - 1]), and query t
     * attends to keys doc_start[t] .. t only. Backward takes the forward's doc_start. */
    gz_status (*attention_forward)(gz_backend_ctx *ctx, float *out, float *lse, const float *q, const float *k,
                                   const float *v, const int32_t *doc_start, int B, int T, int NH, int NKV, int HS);
    /* out and lse as the forward left them (D = rowsum(dout * out) replaces the saved probabilities);
     * dk, dv [B,NKV,T,HS] sum over the query heads sharing them. scratch: B*NH*T floats. */
    gz_status (*attention_backward)(gz_backend_ctx *ctx, float *dq, float *dk, float *dv, float *scratch,
                                    const float *dout, const float *out, const float *lse, const float *q,
                                    const float *k, const float *v, const int32_t *doc_start, int B, int T, int NH,
                                    int NKV, int HS);

    /* Generation with a KV cache. Caches are [rows, NH, S, HS] (NH: the kv heads). k, v, q come from the rotary op
     * called with B = 1, T = N (layout [NH, N, HS]); token i belongs to cache row row[i] at position pos[i]. */
    gz_status (*kv_append)(gz_backend_ctx *ctx, float *kcache, float *vcache, const float *k, const float *v,
                           const int32_t *row, const int32_t *pos, int N, int NH, int HS, int S);
    /* out[N, NH*HS]: token i attends to cache row row[i], positions 0..pos[i]; query head h reads cache head
     * h / (NH / NKV) of the [rows, NKV, S, HS] caches. scratch: N*NH*S floats. */
    gz_status (*attention_cached)(gz_backend_ctx *ctx, float *out, float *scratch, const float *q, const float *kcache,
                                  const float *vcache, const int32_t *row, const int32_t *pos, int N, int NH, int NKV,
                                  int HS, int S);

    gz_status (*gelu_forward)(gz_backend_ctx *ctx, float *out, const float *inp, int64_t n);
    gz_status (*gelu_backward)(gz_backend_ctx *ctx, float *dinp, const float *dout, const float *inp, int64_t n);
    /* SwiGLU: out = silu(gate) * up; backward overwrites dgate and dup */
    gz_status (*swiglu_forward)(gz_backend_ctx *ctx, float *out, const float *gate, const float *up, int64_t n);
    gz_status (*swiglu_backward)(gz_backend_ctx *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                                 const float *up, int64_t n);
    gz_status (*add)(gz_backend_ctx *ctx, float *out, const float *a, const float *b, int64_t n);

    /* Per row: loss contribution and logsumexp; rows with target GZ_IGNORE_INDEX are skipped.
     * *loss_sum_host and *count_host are summed over rows on the host side. */
    gz_status (*cross_entropy_forward)(gz_backend_ctx *ctx, float *lse, const float *logits, const int32_t *targets,
                                       int64_t N, int V, double *loss_sum_host, int64_t *count_host);
    /* dlogits = scale * (softmax(logits) - onehot(target)) for counted rows, 0 elsewhere.
     * May alias logits (in place). */
    gz_status (*cross_entropy_backward)(gz_backend_ctx *ctx, float *dlogits, const float *logits, const float *lse,
                                        const int32_t *targets, int64_t N, int V, float scale);

    /* sum(x^2) in double, deterministic order */
    gz_status (*sum_squares)(gz_backend_ctx *ctx, const float *x, int64_t n, double *out_host);
    gz_status (*scale)(gz_backend_ctx *ctx, float *x, float s, int64_t n);
    /* one AdamW update (torch.optim.AdamW semantics); upd_sq_host gets sum of squared updates */
    gz_status (*adamw_update)(gz_backend_ctx *ctx, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                              float b1, float b2, float eps, float wd, float bias_corr1, float bias_corr2,
                              float grad_scale, double *upd_sq_host);
} gz_backend;

/* New instances (*out owned by the caller, freed with gz_backend_free). The CUDA one fails with
 * GZ_ERR_BACKEND when it is not compiled in. */
gz_status gz_backend_cpu_create(gz_backend **out);
gz_status gz_backend_cuda_create(gz_backend **out);
gz_status gz_backend_create(gz_backend_kind kind, gz_backend **out);
void gz_backend_free(gz_backend *be);

/* Whether backend `kind` runs precision p in this build on this machine: GZ_OK, or GZ_ERR_BACKEND with a message
 * saying why not (the missing instructions or library, or the precisions the backend runs). The backends' own
 * checks, which their set_precision applies too: */
gz_status gz_backend_supports(gz_backend_kind kind, gz_precision p);
gz_status gz_cpu_supports(gz_precision p);  /* cpu/matmul_bf16.c */
void gz_cpu_allow_bf16_without_instructions(int allow); /* cpu/matmul_bf16.c: bf16 via the library anyway */
gz_status gz_cuda_supports(gz_precision p); /* cuda/gemm.cu */
/* util.c: GZ_ERR_BACKEND "precision '<p>' is not supported by the <backend> backend: it runs <the names in runs>". */
gz_status gz_precision_unsupported(const char *backend, gz_precision p, unsigned runs);

#endif
