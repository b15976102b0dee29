/* matmul_bf16.c — Linear layers in bf16 (precision.h): cached bf16 weight copies, operands rounded at the GEMM
 * input, fp32 accumulation and output. "bf16" runs bf16 x bf16 -> fp32 GEMMs in MKL (cblas_gemm_bf16bf16f32,
 * AVX512-BF16 / AMX kernels; an optional build feature, setup.py); "bf16-emulated" multiplies the rounded
 * values, kept as fp32, with the fp32 SGEMM. Bias gradients are reductions and stay fp32. */
#include <cpuid.h>
#include <stdlib.h>
#include "cpu_ops.h"

#ifdef GZ_WITH_MKL_BF16
/* MKL's own CBLAS header: this file never includes blas.h's cblas.h, so the two declarations cannot clash. */
#include <mkl_cblas.h>
#include <mkl_service.h>
#define GZ_ROW_MAJOR CblasRowMajor
#define GZ_NO_TRANS CblasNoTrans
#define GZ_TRANS CblasTrans
#endif

int gz_cpu_bf16_instructions(void) {
    unsigned a = 0, b = 0, c = 0, e = 0, a1 = 0, b1 = 0, c1 = 0, e1 = 0;
    int have7 = __get_cpuid_count(7, 0, &a, &b, &c, &e);
    int have71 = have7 && a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &e1);
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f"); /* the OS saves the zmm registers */
    return (avx512 && have71 && (a1 & (1u << 5)) ? GZ_CPU_AVX512_BF16 : 0) |
           (have7 && (e & (1u << 22)) ? GZ_CPU_AMX_BF16 : 0);
}

const char *gz_cpu_bf16_library(void) {
#ifdef GZ_WITH_MKL_BF16
    return "mkl";
#else
    return "";
#endif
}

/* Set from Python (gozaru/engine/placement.py reads GOZARU_BF16_ANY_CPU, for tests): the library path on a CPU
 * without the instructions, where MKL converts to fp32 internally: the same results, no faster. */
static int bf16_without_instructions = 0;

void gz_cpu_allow_bf16_without_instructions(int allow) { bf16_without_instructions = allow != 0; }

gz_status gz_cpu_supports(gz_precision p) {
    if (p == GZ_PRECISION_FP32 || p == GZ_PRECISION_BF16_EMULATED) return GZ_OK;
    if (p != GZ_PRECISION_BF16)
        return gz_precision_unsupported("cpu", p, GZ_PRECISION_BIT(GZ_PRECISION_FP32) |
                                                      GZ_PRECISION_BIT(GZ_PRECISION_BF16) |
                                                      GZ_PRECISION_BIT(GZ_PRECISION_BF16_EMULATED));
    if (!gz_cpu_bf16_instructions() && !bf16_without_instructions)
        return gz_fail(GZ_ERR_BACKEND, "precision 'bf16': this CPU has neither AVX512-BF16 nor AMX-BF16 "
                                       "instructions; use 'bf16-emulated' (or GOZARU_BF16_EMULATE=1) for the "
                                       "same rounding at fp32 speed or below");
    if (!*gz_cpu_bf16_library())
        return gz_fail(GZ_ERR_BACKEND, "precision 'bf16': this build of gozaru has no bf16 GEMM library (build "
                                       "with mkl-devel installed, see README), or use 'bf16-emulated' (slow, "
                                       "exact rounding)");
    return GZ_OK;
}

gz_status gz_cpu_bf16_set_precision(gz_cpu_bf16 *s, gz_precision p) {
    GZ_TRY(gz_cpu_supports(p));
#ifdef GZ_WITH_MKL_BF16
    if (p == GZ_PRECISION_BF16) {
        /* MKL's threads on the GNU OpenMP runtime gozaru already uses (not a second, Intel, runtime) */
        static int layer_set = 0;
        if (!layer_set) MKL_Set_Threading_Layer(MKL_THREADING_GNU);
        layer_set = 1;
    }
#endif
    if (p != s->precision) gz_cpu_bf16_written(s, NULL, 0); /* copies are in the old format */
    s->precision = p;
    return GZ_OK;
}

void gz_cpu_bf16_written(gz_cpu_bf16 *s, const void *p, size_t bytes) {
    gz_weight_copies_written(&s->weights, p, bytes);
}

void gz_cpu_bf16_free(gz_cpu_bf16 *s) {
    for (int i = 0; i < s->weights.n; i++) free(s->weights.items[i].copy);
    gz_weight_copies_clear(&s->weights);
    for (int i = 0; i < 2; i++) free(s->scratch[i]);
    memset(s, 0, sizeof *s);
}

/* Library: bf16 bits (uint16); emulation: rounded fp32 values. */
static size_t elem_bytes(const gz_cpu_bf16 *s) { return s->precision == GZ_PRECISION_BF16 ? 2 : 4; }

static void round_into(const gz_cpu_bf16 *s, void *dst, const float *src, int64_t n) {
    if (s->precision == GZ_PRECISION_BF16) {
        uint16_t *d = (uint16_t *)dst;
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
        for (int64_t i = 0; i < n; i++) d[i] = gz_bf16_bits(src[i]);
    } else {
        float *d = (float *)dst;
#pragma omp parallel for schedule(static) GZ_PAR_IF(n)
        for (int64_t i = 0; i < n; i++) d[i] = gz_bf16_round(src[i]);
    }
}

/* src[n] rounded into scratch slot `slot` (grow-only). */
static gz_status round_scratch(gz_cpu_bf16 *s, int slot, const float *src, int64_t n, const void **out) {
    size_t bytes = (size_t)n * elem_bytes(s);
    if (bytes > s->scratch_bytes[slot]) {
        free(s->scratch[slot]);
        s->scratch[slot] = NULL;
        s->scratch_bytes[slot] = 0;
        GZ_TRY(gz_calloc(&s->scratch[slot], bytes ? bytes : 1, 1, "bf16 GEMM operand"));
        s->scratch_bytes[slot] = bytes;
    }
    round_into(s, s->scratch[slot], src, n);
    *out = s->scratch[slot];
    return GZ_OK;
}

/* The bf16 copy of weight w[count]: made at the first GEMM that reads it and after every write to w. */
static gz_status weight_copy(gz_cpu_bf16 *s, const float *w, int64_t count, const void **out) {
    gz_weight_copy *e = NULL;
    GZ_TRY(gz_weight_copies_find(&s->weights, w, count, &e));
    if (!e->copy) GZ_TRY(gz_calloc(&e->copy, (size_t)(count ? count : 1), 4, "bf16 weight copy")); /* either format */
    if (!e->valid) {
        round_into(s, e->copy, w, count);
        e->valid = 1;
    }
    *out = e->copy;
    return GZ_OK;
}

gz_status gz_cpu_bf16_matmul_forward(gz_cpu_bf16 *s, float *out, const float *inp, const float *w, const float *bias,
                                     int64_t N, int C, int OC) {
    const void *x, *wb;
    GZ_TRY(weight_copy(s, w, (int64_t)OC * C, &wb));
    GZ_TRY(round_scratch(s, 0, inp, N * C, &x));
    if (s->precision == GZ_PRECISION_BF16_EMULATED)
        return gz_cpu_matmul_forward(out, (const float *)x, (const float *)wb, bias, N, C, OC);
#ifdef GZ_WITH_MKL_BF16
    float beta = gz_cpu_fill_bias(out, bias, N, OC);
    cblas_gemm_bf16bf16f32(GZ_ROW_MAJOR, GZ_NO_TRANS, GZ_TRANS, (int)N, OC, C, 1.0f, (const MKL_BF16 *)x, C,
                           (const MKL_BF16 *)wb, C, beta, out, OC);
    return GZ_OK;
#else
    return gz_fail(GZ_ERR_BACKEND, "internal: bf16 GEMM without a bf16 library");
#endif
}

gz_status gz_cpu_bf16_matmul_backward(gz_cpu_bf16 *s, float *dinp, float *dw, float *db, const float *dout,
                                      const float *inp, const float *w, int64_t N, int C, int OC) {
    if (db) GZ_TRY(gz_cpu_matmul_backward(NULL, NULL, db, dout, NULL, NULL, N, C, OC)); /* fp32 reduction */
    if (!dinp && !dw) return GZ_OK;
    const void *d, *x = NULL, *wb = NULL;
    GZ_TRY(round_scratch(s, 1, dout, N * OC, &d));
    if (dw) GZ_TRY(round_scratch(s, 0, inp, N * C, &x));
    if (dinp) GZ_TRY(weight_copy(s, w, (int64_t)OC * C, &wb));
    if (s->precision == GZ_PRECISION_BF16_EMULATED)
        return gz_cpu_matmul_backward(dinp, dw, NULL, (const float *)d, (const float *)x, (const float *)wb, N, C, OC);
#ifdef GZ_WITH_MKL_BF16
    if (dinp) /* dinp[N,C] = dout[N,OC] @ W[OC,C] */
        cblas_gemm_bf16bf16f32(GZ_ROW_MAJOR, GZ_NO_TRANS, GZ_NO_TRANS, (int)N, C, OC, 1.0f, (const MKL_BF16 *)d, OC,
                               (const MKL_BF16 *)wb, C, 0.0f, dinp, C);
    if (dw) /* dW[OC,C] += dout^T @ inp */
        cblas_gemm_bf16bf16f32(GZ_ROW_MAJOR, GZ_TRANS, GZ_NO_TRANS, OC, C, (int)N, 1.0f, (const MKL_BF16 *)d, OC,
                               (const MKL_BF16 *)x, C, 1.0f, dw, C);
    return GZ_OK;
#else
    return gz_fail(GZ_ERR_BACKEND, "internal: bf16 GEMM without a bf16 library");
#endif
}
