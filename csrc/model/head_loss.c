/* head_loss.c — the LM head and the cross-entropy, in chunks of rows, with the head's backward fused in.
 *
 * The logits of all B*T tokens (N x V floats: 131 MB at N = 4096, V = 8000; 0.5 GB for rinna's 32000 at
 * N = 4096) are never held at once. Each chunk of rows goes head GEMM -> log-sum-exp and loss -> (training)
 * dlogits in place -> the head's two backward GEMMs, while the chunk is still in cache. What backward needs
 * is kept instead of the logits: the gradient w.r.t. the final LayerNorm output (N x C) and, when the head
 * trains, its weight gradient (C x V, the size of the head). Both are formed for a loss scale of 1 and
 * scaled by backward()'s loss_scale when it adds them in: gradients are linear in that scale, and a forward
 * that is never followed by backward leaves the model's gradients untouched.
 *
 * A LoRA adapter on the head keeps the previous scheme (all logits kept, head backward in backward()):
 * its gradients would need their own pending copies. */
#include "linear.h"

#define CHUNK_BYTES ((int64_t)32 << 20) /* logits per chunk: large enough that each chunk re-reads the
                                           head weight for a GEMM of at least 256 rows */

static int fused(const gz_model *m, int with_backward) {
    return !(with_backward && m->lora_at && m->lora_at[m->head] >= 0);
}

int64_t gz_head_chunk_rows(const gz_model *m, int64_t N, int with_backward) {
    if (!fused(m, with_backward)) return N;
    int64_t rows = CHUNK_BYTES / ((int64_t)m->V * (int64_t)sizeof(float));
    if (rows < 256) rows = 256;
    return rows < N ? rows : N;
}

gz_status gz_head_loss_forward(gz_model *m, int64_t N, int with_targets, int64_t counted, float *logits_out,
                               double *loss_sum, int64_t *count, int with_backward) {
    gz_backend *be = m->be;
    int C = m->C, V = m->V, L = m->L;
    int64_t R = gz_head_chunk_rows(m, N, with_backward);
    int fuse = with_backward && fused(m, with_backward) && counted > 0;
    float *dhead = fuse ? m->grads[m->head] : NULL;
    int need_lnf = gz_model_min_trainable_pos(m) < GZ_POS_HEAD(L);
    if (dhead) GZ_TRY(be->zero(be->ctx, m->head_grad_pending, (size_t)C * V * sizeof(float)));
    m->fwd_fused_head = fuse;
    *loss_sum = 0.0;
    *count = 0;
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        int64_t n = N - r0 < R ? N - r0 : R;
        const float *x = m->lnf + r0 * C;
        GZ_TRY(gz_model_linear_forward(m, m->head, -1, m->logits, x, n));
        if (logits_out) GZ_TRY(be->download(be->ctx, logits_out + r0 * V, m->logits, (size_t)(n * V) * sizeof(float)));
        if (!with_targets) continue;
        double s;
        int64_t c;
        GZ_TRY(be->cross_entropy_forward(be->ctx, m->lse + r0, m->logits, m->targets + r0, n, V, &s, &c));
        *loss_sum += s;
        *count += c;
        if (!fuse) continue;
        GZ_TRY(be->cross_entropy_backward(be->ctx, m->logits, m->logits, m->lse + r0, m->targets + r0, n, V,
                                          1.0f / (float)counted));
        GZ_TRY(be->matmul_backward(be->ctx, need_lnf ? m->dlnf_pending + r0 * C : NULL,
                                   dhead ? m->head_grad_pending : NULL, NULL, m->logits, x, GZ_P(m, m->head), n, C,
                                   V));
    }
    if (fuse && *count != counted)
        return gz_fail(GZ_ERR_STATE, "internal: %lld targets counted on the host, %lld by the backend",
                       (long long)counted, (long long)*count);
    return GZ_OK;
}

/* dlnf (m->dln on return, when anything below the head trains) for backward()'s loss_scale; the head's
 * weight gradient (and its adapter's) accumulated. */
gz_status gz_head_loss_backward(gz_model *m, float loss_scale, int need_lnf, float **dlnf) {
    gz_backend *be = m->be;
    int64_t N = (int64_t)m->fwd_B * m->fwd_T;
    int C = m->C, V = m->V;
    float *dhead = m->grads[m->head];
    *dlnf = NULL;
    if (m->fwd_fused_head) {
        if (dhead) {
            if (loss_scale != 1.0f) GZ_TRY(be->scale(be->ctx, m->head_grad_pending, loss_scale, (int64_t)C * V));
            GZ_TRY(be->add(be->ctx, dhead, dhead, m->head_grad_pending, (int64_t)C * V));
        }
        if (need_lnf) {
            if (loss_scale != 1.0f) GZ_TRY(be->scale(be->ctx, m->dlnf_pending, loss_scale, N * C));
            *dlnf = m->dlnf_pending;
        }
        return GZ_OK;
    }
    /* logits -> dlogits in place; mean over counted targets */
    GZ_TRY(be->cross_entropy_backward(be->ctx, m->logits, m->logits, m->lse, m->targets, N, V,
                                      loss_scale / (float)m->fwd_count));
    GZ_TRY(gz_model_linear_backward(m, m->head, -1, need_lnf ? m->dln : NULL, m->logits, m->lnf, N));
    if (need_lnf) *dlnf = m->dln;
    return GZ_OK;
}
