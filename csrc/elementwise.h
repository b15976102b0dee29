/* elementwise.h — per-element math shared by the CPU loops and the CUDA kernels.
 * One definition of each formula, so the CPU tests cover what the GPU runs. */
#ifndef GOZARU_ELEMENTWISE_H
#define GOZARU_ELEMENTWISE_H

#include <math.h>

#if defined(__CUDACC__)
#define GZ_HD __host__ __device__ __forceinline__
#else
#define GZ_HD static inline
#endif

#define GZ_INV_SQRT2 0.70710678118654752440f
#define GZ_INV_SQRT_2PI 0.39894228040143267794f

/* exact GELU (HF "gelu" = torch.nn.functional.gelu, erf form) */
GZ_HD float gz_gelu(float x) { return 0.5f * x * (1.0f + erff(x * GZ_INV_SQRT2)); }

GZ_HD float gz_gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * GZ_INV_SQRT2));
    float pdf = GZ_INV_SQRT_2PI * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

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
