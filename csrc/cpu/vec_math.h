/* vec_math.h — exp for the CPU's hot loops, written so the compiler vectorises it.
 *
 * libm's expf is a scalar call, which keeps every loop around it scalar. This one works in double:
 * exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln 2 / 2, exp(r) by its degree-8 Taylor
 * polynomial (relative error < 3e-10), then one rounding to float: the result is the correctly
 * rounded exp(x) except within ~3e-10 of a rounding tie, as accurate as libm's expf. It is
 * branch-free plain arithmetic, so every vector width gives the same bits. Overflow gives inf,
 * underflow subnormals then 0, NaN stays NaN. */
#ifndef GOZARU_CPU_VEC_MATH_H
#define GOZARU_CPU_VEC_MATH_H

#include <stdint.h>
#include <string.h>
#include "cpu_ops.h"

/* exp(x) in double, before the final rounding (for sums that should not round each term to float) */
static inline double gz_vexp_double(float xf) {
    double x = xf;
    x = x < -104.0 ? -104.0 : x; /* exp(-104) rounds to 0 in float, exp(89) to inf */
    x = x > 89.0 ? 89.0 : x;
    /* adding 1.5 * 2^52 rounds x / ln 2 to the integer n and leaves n in the low mantissa bits
     * (no float-to-int conversion: that would not vectorise, and is undefined for NaN) */
    double shifted = x * 1.4426950408889634 + 6755399441055744.0;
    double n = shifted - 6755399441055744.0;
    double r = x - n * 0.6931471805599453;
    double p = 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t bits, e; /* 2^n, n in [-151, 129] */
    memcpy(&bits, &shifted, sizeof bits);
    e = (bits - 0x4338000000000000ull + 1023u) << 52;
    double two_n;
    memcpy(&two_n, &e, sizeof two_n);
    return p * two_n;
}

static inline float gz_vexpf(float x) { return (float)gz_vexp_double(x); }

/* p[s] = exp(p[s] - shift) for s < n (a softmax row before normalising) */
GZ_VECTOR_CLONES static void gz_exp_shifted(float *p, float shift, int n) {
    for (int s = 0; s < n; s++) p[s] = gz_vexpf(p[s] - shift);
}

/* Row reductions in GZ_LANES partial results combined in a fixed order: no chain of n dependent maxes or adds
 * (a 4-cycle latency per element), and the same bits from every vector width and clone, since the C fixes
 * each lane's sequence of operations. Inlined into the GZ_VECTOR_CLONES loops that call them. */
#define GZ_LANES 16

/* max(init, x[0..n-1]) */
static inline float gz_row_max(const float *x, int n, float init) {
    float part[GZ_LANES];
    for (int j = 0; j < GZ_LANES; j++) part[j] = init;
    int i = 0;
    for (; i + GZ_LANES <= n; i += GZ_LANES)
        for (int j = 0; j < GZ_LANES; j++) part[j] = x[i + j] > part[j] ? x[i + j] : part[j];
    for (int j = 0; i + j < n; j++) part[j] = x[i + j] > part[j] ? x[i + j] : part[j];
    float mx = init;
    for (int j = 0; j < GZ_LANES; j++) mx = part[j] > mx ? part[j] : mx;
    return mx;
}

/* x[0] + ... + x[n-1] */
static inline float gz_row_sum(const float *x, int n) {
    float part[GZ_LANES] = {0};
    int i = 0;
    for (; i + GZ_LANES <= n; i += GZ_LANES)
        for (int j = 0; j < GZ_LANES; j++) part[j] += x[i + j];
    for (int j = 0; i + j < n; j++) part[j] += x[i + j];
    float s = 0.0f;
    for (int j = 0; j < GZ_LANES; j++) s += part[j];
    return s;
}

#endif
