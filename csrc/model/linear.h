/* linear.h — the one Linear op of the model, with its optional LoRA adapter:
 *
 *   y = x W^T + b + s (x A^T) B^T        x [N, C], W [OC, C], b [OC], A [r, C], B [OC, r]
 *
 * Training, evaluation and generation all call it (block.c, the head in model_forward.c and generate.c,
 * model_backward.c), so a new input format or adapter kind is added here once. Every product goes through the
 * backend's matmul_forward / matmul_backward, so its operands follow csrc/precision.h: W, A and B are weights
 * (bf16 copies cached until written), x, the adapter's s (x A^T) and the output gradient are rounded per call,
 * accumulation and outputs stay fp32.
 *
 * Backward, given dy: u = s (x A^T) is recomputed (N x r, cheap) instead of kept, so adapters add no activation
 * memory per layer; dW += dy^T x, db += colsum(dy); dB += dy^T u; du = s dy B; dA += du^T x;
 * dx = dy W + du A (overwritten, as matmul_backward's dinp). A NULL gradient is not computed: a frozen W costs
 * no weight-gradient GEMM, and the adapter's backward is skipped when neither dx, dA nor dB is wanted. */
#ifndef GOZARU_LINEAR_H
#define GOZARU_LINEAR_H

#include "model_internal.h"

/* The adapter term of one Linear; r == 0: none. */
typedef struct {
    const float *A, *B; /* [r, C], [OC, r] */
    float *dA, *dB;     /* accumulate (+=); NULL when frozen */
    int r;
    float scale;        /* s: alpha / r (LoRA) or alpha / sqrt(r) (rsLoRA) */
    float *xa;          /* scratch [2 * N * r]: s (x A^T), then its gradient */
    float *tmp;         /* scratch [N * max(C, OC)]: the adapter's output, or its share of dx */
} gz_lora_term;

typedef struct {
    const float *w, *b; /* W [OC, C]; b [OC] or NULL */
    float *dw, *db;     /* accumulate (+=); NULL when frozen */
    int C, OC;          /* in and out features */
    gz_lora_term lora;
} gz_linear;

/* y [N, OC] is overwritten. */
gz_status gz_linear_forward(gz_backend *be, const gz_linear *l, float *y, const float *x, int64_t N);
/* dx [N, C] (NULL: not needed) is overwritten; parameter gradients accumulate. */
gz_status gz_linear_backward(gz_backend *be, const gz_linear *l, float *dx, const float *dy, const float *x,
                             int64_t N);

/* lora.c: the adapter term on weight tensor w for N tokens (its scratch grown to N); r = 0 when w has none. */
gz_status gz_lora_term_of(gz_model *m, int w, int64_t N, gz_lora_term *out);

/* The model's Linear of weight tensor w, its bias tensor b (-1: none) and the adapter on w (lora.c), if any. */
gz_status gz_model_linear_forward(gz_model *m, int w, int b, float *y, const float *x, int64_t N);
gz_status gz_model_linear_backward(gz_model *m, int w, int b, float *dx, const float *dy, const float *x, int64_t N);

#endif
