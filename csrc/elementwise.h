/* elementwise.h — per-element math shared by the CPU loops and the CUDA kernels.
 * One definition of each formula, so the CPU tests cover what the GPU runs. */
#ifndef GOZARU_ELEMENTWISE_H
#define GOZARU_ELEMENTWISE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define GZ_HD __host__ __device__ __forceinline__
#else
#define GZ_HD static inline
#endif

#define GZ_INV_SQRT_2PI 0.39894228040143267794f

/* exp(x) for x <= 0 in plain float arithmetic, so loops around it vectorise (libm's expf is a scalar
 * call). n = round(x / ln 2) by the 1.5 * 2^23 shift (no float-to-int conversion), r = x - n ln 2 with
 * ln 2 split in two (n * hi is exact), exp(r) by a degree-7 polynomial (Cephes expf coefficients);
 * error ~1 ulp. Results below FLT_MIN (x < -87) are 0; NaN stays NaN. */
GZ_HD float gz_expf_nonpos(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    float shifted = xc * 1.44269504088896341f + 12582912.0f;
    float n = shifted - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = (p * r) * r + r + 1.0f;
    uint32_t bits; /* 2^n: n sits in the low mantissa bits of shifted, n in [-126, 0] */
    memcpy(&bits, &shifted, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return x < -87.0f ? 0.0f : p * two_n;
}

/* erf(x / sqrt 2), given e = exp(-x^2 / 2) (the backward needs e too, so it is computed once).
 * Both branches are evaluated and one is selected, so the loop has no branch and vectorises:
 *   |x| < 1.25:  x * P(x^2)              (degree 6; x * P[0] split so its largest term is exact)
 *   |x| >= 1.25: 1 - e * R(|x| - 1.25)    (degree 9 fit of erfc(x / sqrt 2) e^(x^2 / 2) on [1.25, 5.6];
 *                                         beyond 5.6 erf rounds to +-1)
 * Minimax fits (Lawson's algorithm). Checked over every float in 2^-20 <= |x| <= 12 against double erf:
 * erf within 1.17 ulp, GELU 1.34 ulp and its gradient 2.25 ulp (libm erff in the same formulas: 1.49, 2.25).
 * Plain arithmetic without FMA on the CPU, so every vector width gives the same bits (nvcc may fuse
 * multiply-adds: the GPU's bits can differ in the last place). */
GZ_HD float gz_erf_gelu(float x, float e) {
    float a = fabsf(x), u = x * x;
    float p = 9.521521065e-07f;
    p = p * u + -1.811689435e-05f;
    p = p * u + 2.300643391e-04f;
    p = p * u + -2.374219242e-03f;
    p = p * u + 1.994699985e-02f;
    p = p * u + -1.329807490e-01f;
    uint32_t xb; /* x = xh + xl, xh with 12 significant bits, so xh * (P[0]'s top 12 bits) is exact */
    memcpy(&xb, &x, sizeof xb);
    xb &= 0xFFFFF000u;
    float xh;
    memcpy(&xh, &xb, sizeof xh);
    float xl = x - xh;
    float tail = (x * u) * p + xl * 7.978845835e-01f + xh * 3.299811942e-05f;
    float small = xh * 0.7978515625f + tail;
    float t = (a < 5.6f ? a : 5.6f) - 1.25f;
    float q = -1.645808879e-06f;
    q = q * t + 2.701598714e-05f;
    q = q * t + -2.056858211e-04f;
    q = q * t + 1.008653897e-03f;
    q = q * t + -3.781498875e-03f;
    q = q * t + 1.210793108e-02f;
    q = q * t + -3.502891958e-02f;
    q = q * t + 9.264089167e-02f;
    q = q * t + -2.209834903e-01f;
    q = q * t + 4.615206420e-01f;
    float large = copysignf(1.0f - e * q, x);
    return a < 1.25f ? small : large;
}

/* exact GELU (HF "gelu" = torch.nn.functional.gelu, erf form): 0.5 x (1 + erf(x / sqrt 2)) */
GZ_HD float gz_gelu(float x) {
    float e = gz_expf_nonpos(-0.5f * (x * x));
    return 0.5f * x * (1.0f + gz_erf_gelu(x, e));
}

GZ_HD float gz_gelu_grad(float x) {
    float e = gz_expf_nonpos(-0.5f * (x * x));
    float cdf = 0.5f * (1.0f + gz_erf_gelu(x, e));
    float pdf = GZ_INV_SQRT_2PI * e;
    return cdf + x * pdf;
}

/* logistic sigmoid from exp of a non-positive argument only (no overflow for either sign) */
GZ_HD float gz_sigmoid(float x) {
    float e = gz_expf_nonpos(-fabsf(x));
    float s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

/* SwiGLU (Llama's MLP, HF act "silu"): silu(g) * u with silu(g) = g * sigmoid(g) (torch.nn.functional.silu) */
GZ_HD float gz_swiglu(float g, float u) { return (g * gz_sigmoid(g)) * u; }

/* d/dg and d/du of silu(g) * u, times dout: silu'(g) = s (1 + g (1 - s)) */
GZ_HD void gz_swiglu_grad(float g, float u, float dout, float *dg, float *du) {
    float s = gz_sigmoid(g);
    *dg = dout * u * (s * (1.0f + g * (1.0f - s)));
    *du = dout * (g * s);
}

/* RMSNorm of one element given the row's rstd, as HF's LlamaRMSNorm: w * (x * rstd) */
GZ_HD float gz_rmsnorm(float x, float w, float rstd) { return w * (x * rstd); }

/* RMSNorm input gradient of one element: rstd * (dy w - xhat * mean(dy w xhat)), xhat = x rstd */
GZ_HD float gz_rmsnorm_grad(float x, float w, float dy, float rstd, float mean_gx) {
    return rstd * (dy * w - (x * rstd) * mean_gx);
}

/* Grouped-query attention: the kv head that query head h of NH reads when there are NKV kv heads */
GZ_HD int gz_kv_head(int h, int NH, int NKV) { return h / (NH / NKV); }

/* Causal attention with online softmax (flash attention), shared by the CPU tiles and the CUDA kernels.
 * Scores s are already scaled by 1/sqrt(HS). A row keeps a running max m and a running sum l of exp(s - m);
 * when a new tile raises the max to m_new, what was summed so far is rescaled by gz_attn_rescale. After the
 * last tile, the row's log-sum-exp m + log(l) is saved; backward recomputes each probability from it. */
GZ_HD float gz_attn_prob(float s, float m) { return gz_expf_nonpos(s - m); }
/* factor that moves sums taken against max m_old onto max m_new >= m_old (m_old = -inf, nothing summed: 0) */
GZ_HD float gz_attn_rescale(float m_old, float m_new) { return gz_expf_nonpos(m_old - m_new); }
GZ_HD float gz_attn_lse(float m, float l) { return m + logf(l); }
/* dL/ds from the probability p, dL/dp = dp and the row's D = sum_j p_j dp_j = rowsum(dO * O), with the score
 * scale folded in: the softmax backward p (dp - D), times 1/sqrt(HS) for q k^T. */
GZ_HD float gz_attn_dscore(float p, float dp, float D, float scale) { return p * (dp - D) * scale; }

/* rotate-half rotary on one pair (x1 = x[i], x2 = x[i + rot/2]):
 *   y1 = x1*cos - x2*sin,  y2 = x2*cos + x1*sin.  Backward is the transpose (sin -> -sin). */
GZ_HD void gz_rotary_pair(float x1, float x2, float c, float s, float *y1, float *y2) {
    *y1 = x1 * c - x2 * s;
    *y2 = x2 * c + x1 * s;
}

/* One AdamW element update with torch.optim.AdamW's operation order.
 * bias_corr1 = 1 - b1^t, bias_corr2_sqrt = sqrt(1 - b2^t). Returns the update applied. */
GZ_HD float gz_adamw_element(float *p, float g, float *m, float *v, float lr, float b1, float b2, float eps,
                             float wd, float bias_corr1, float bias_corr2_sqrt) {
    float old = *p;
    float pv = old * (1.0f - lr * wd);
    float mv = b1 * *m + (1.0f - b1) * g;
    float vv = b2 * *v + (1.0f - b2) * g * g;
    *m = mv;
    *v = vv;
    float denom = sqrtf(vv) / bias_corr2_sqrt + eps;
    pv = pv - (lr / bias_corr1) * (mv / denom);
    *p = pv;
    return pv - old;
}

#endif
