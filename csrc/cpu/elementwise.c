/* elementwise.c — GELU, SwiGLU, residual add, scaling, squared norms and the AdamW update on the CPU.
 * The per-element formulas live in ../elementwise.h, shared with the CUDA kernels. */
#include <math.h>
#include <stdlib.h>
#include "cpu_ops.h"
#include "../elementwise.h"

/* GELU loops in vector clones (an OpenMP region's body would not be cloned), over fixed chunks */
#define GELU_CHUNK 2048

GZ_VECTOR_CLONES static void gelu_forward_chunk(float *out, const float *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = gz_gelu(inp[i]);
}

GZ_VECTOR_CLONES static void gelu_backward_chunk(float *dinp, const float *dout, const float *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) dinp[i] = dout[i] * gz_gelu_grad(inp[i]);
}

gz_status gz_cpu_gelu_forward(float *out, const float *inp, int64_t n) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
    for (int64_t i0 = 0; i0 < n; i0 += GELU_CHUNK)
        gelu_forward_chunk(out + i0, inp + i0, n - i0 < GELU_CHUNK ? n - i0 : GELU_CHUNK);
    return GZ_OK;
}

gz_status gz_cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
    for (int64_t i0 = 0; i0 < n; i0 += GELU_CHUNK)
        gelu_backward_chunk(dinp + i0, dout + i0, inp + i0, n - i0 < GELU_CHUNK ? n - i0 : GELU_CHUNK);
    return GZ_OK;
}

GZ_VECTOR_CLONES static void swiglu_forward_chunk(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = gz_swiglu(gate[i], up[i]);
}

GZ_VECTOR_CLONES static void swiglu_backward_chunk(float *dgate, float *dup, const float *dout, const float *gate,
                                                   const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) gz_swiglu_grad(gate[i], up[i], dout[i], &dgate[i], &dup[i]);
}

gz_status gz_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
    for (int64_t i0 = 0; i0 < n; i0 += GELU_CHUNK)
        swiglu_forward_chunk(out + i0, gate + i0, up + i0, n - i0 < GELU_CHUNK ? n - i0 : GELU_CHUNK);
    return GZ_OK;
}

gz_status gz_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                 int64_t n) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
    for (int64_t i0 = 0; i0 < n; i0 += GELU_CHUNK)
        swiglu_backward_chunk(dgate + i0, dup + i0, dout + i0, gate + i0, up + i0,
                              n - i0 < GELU_CHUNK ? n - i0 : GELU_CHUNK);
    return GZ_OK;
}

gz_status gz_cpu_add(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
    return GZ_OK;
}

gz_status gz_cpu_scale(float *x, float s, int64_t n) {
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
    for (int64_t i = 0; i < n; i++) x[i] *= s;
    return GZ_OK;
}

#define LANES 8 /* fixed partial sums inside a chunk: the same result at every vector width */

static double sum_lanes(const double *acc) {
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

GZ_VECTOR_CLONES static double sum_squares_chunk(const float *x, int64_t n) {
    double acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += (double)x[i + j] * x[i + j];
    for (int j = 0; i + j < n; j++) acc[j] += (double)x[i + j] * x[i + j];
    return sum_lanes(acc);
}

/* Chunked so the summation order is the same for any thread count. */
gz_status gz_cpu_sum_squares(const float *x, int64_t n, double *out_host) {
    int64_t nchunks = (n + GZ_REDUCE_CHUNK - 1) / GZ_REDUCE_CHUNK;
    double total = 0.0;
    if (nchunks <= 64) {
        *out_host = sum_squares_chunk(x, n);
        return GZ_OK;
    }
    double *part;
    GZ_TRY(gz_calloc((void **)&part, (size_t)nchunks, sizeof(double), "norm partial sums"));
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t i0 = ch * GZ_REDUCE_CHUNK, i1 = i0 + GZ_REDUCE_CHUNK < n ? i0 + GZ_REDUCE_CHUNK : n;
        part[ch] = sum_squares_chunk(x + i0, i1 - i0);
    }
    for (int64_t ch = 0; ch < nchunks; ch++) total += part[ch];
    free(part);
    *out_host = total;
    return GZ_OK;
}

/* AdamW over n elements; returns the sum of squared updates. */
GZ_VECTOR_CLONES static double adamw_chunk(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                                           float b1, float b2, float eps, float wd, float bias_corr1,
                                           float bc2_sqrt, float grad_scale) {
    double acc[LANES] = {0};
    int64_t i = 0;
#define ADAMW_AT(k)                                                                                              \
    gz_adamw_element(&p[k], g[k] * grad_scale, &m[k], &v[k], lr, b1, b2, eps, wd, bias_corr1, bc2_sqrt)
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float u = ADAMW_AT(i + j);
            acc[j] += (double)u * u;
        }
    for (int j = 0; i + j < n; j++) {
        float u = ADAMW_AT(i + j);
        acc[j] += (double)u * u;
    }
#undef ADAMW_AT
    return sum_lanes(acc);
}

gz_status gz_cpu_adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                              float eps, float wd, float bias_corr1, float bias_corr2, float grad_scale,
                              double *upd_sq_host) {
    float bc2_sqrt = sqrtf(bias_corr2);
    int64_t nchunks = (n + GZ_REDUCE_CHUNK - 1) / GZ_REDUCE_CHUNK;
    double *part;
    GZ_TRY(gz_calloc((void **)&part, (size_t)nchunks, sizeof(double), "update norm partial sums"));
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t i0 = ch * GZ_REDUCE_CHUNK, i1 = i0 + GZ_REDUCE_CHUNK < n ? i0 + GZ_REDUCE_CHUNK : n;
        part[ch] = adamw_chunk(p + i0, g + i0, m + i0, v + i0, i1 - i0, lr, b1, b2, eps, wd, bias_corr1, bc2_sqrt,
                               grad_scale);
    }
    double total = 0.0;
    for (int64_t ch = 0; ch < nchunks; ch++) total += part[ch];
    free(part);
    if (upd_sq_host) *upd_sq_host = total;
    return GZ_OK;
}
