/* linear.c — the one Linear op (linear.h): the base product and the LoRA adapter's term, forward and backward. */
#include "linear.h"

gz_status gz_linear_forward(gz_backend *be, const gz_linear *l, float *y, const float *x, int64_t N) {
    GZ_TRY(be->matmul_forward(be->ctx, y, x, l->w, l->b, N, l->C, l->OC));
    const gz_lora_term *a = &l->lora;
    if (a->r == 0) return GZ_OK;
    GZ_TRY(be->matmul_forward(be->ctx, a->xa, x, a->A, NULL, N, l->C, a->r));
    GZ_TRY(be->scale(be->ctx, a->xa, a->scale, N * a->r));
    GZ_TRY(be->matmul_forward(be->ctx, a->tmp, a->xa, a->B, NULL, N, a->r, l->OC));
    return be->add(be->ctx, y, y, a->tmp, N * l->OC);
}

gz_status gz_linear_backward(gz_backend *be, const gz_linear *l, float *dx, const float *dy, const float *x,
                             int64_t N) {
    GZ_TRY(be->matmul_backward(be->ctx, dx, l->dw, l->db, dy, x, l->w, N, l->C, l->OC));
    const gz_lora_term *a = &l->lora;
    if (a->r == 0 || (!dx && !a->dA && !a->dB)) return GZ_OK;
    float *su = a->xa, *du = a->xa + N * a->r;
    GZ_TRY(be->matmul_forward(be->ctx, su, x, a->A, NULL, N, l->C, a->r));
    GZ_TRY(be->scale(be->ctx, su, a->scale, N * a->r));
    /* du = dy B (only when A or the input needs it); dB += dy^T (s u) */
    int need_du = dx || a->dA;
    GZ_TRY(be->matmul_backward(be->ctx, need_du ? du : NULL, a->dB, NULL, dy, su, a->B, N, a->r, l->OC));
    if (!need_du) return GZ_OK;
    GZ_TRY(be->scale(be->ctx, du, a->scale, N * a->r));
    /* dA += du^T x; the input's share du A lands in scratch and is added (matmul_backward overwrites) */
    GZ_TRY(be->matmul_backward(be->ctx, dx ? a->tmp : NULL, a->dA, NULL, du, x, a->A, N, l->C, a->r));
    if (dx) GZ_TRY(be->add(be->ctx, dx, dx, a->tmp, N * l->C));
    return GZ_OK;
}

/* ---------------------------------------------------------------- the model's Linears */
static gz_status model_linear(gz_model *m, int w, int b, int64_t N, gz_linear *out) {
    const gz_tensor_info *t = &m->tensors[w];
    *out = (gz_linear){.w = GZ_P(m, w), .b = b >= 0 ? GZ_P(m, b) : NULL, .dw = m->grads[w],
                       .db = b >= 0 ? m->grads[b] : NULL, .C = (int)t->shape[1], .OC = (int)t->shape[0]};
    return gz_lora_term_of(m, w, N, &out->lora);
}

gz_status gz_model_linear_forward(gz_model *m, int w, int b, float *y, const float *x, int64_t N) {
    gz_linear l;
    GZ_TRY(model_linear(m, w, b, N, &l));
    return gz_linear_forward(m->be, &l, y, x, N);
}

gz_status gz_model_linear_backward(gz_model *m, int w, int b, float *dx, const float *dy, const float *x, int64_t N) {
    gz_linear l;
    GZ_TRY(model_linear(m, w, b, N, &l));
    return gz_linear_backward(m->be, &l, dx, dy, x, N);
}
