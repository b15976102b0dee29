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

#include <stdlib.h>
#include <string.h>

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

/* One chunk of n rows: head GEMM -> loss -> (fused) dlogits -> the head's backward GEMMs. x: the rows'
 * final-LayerNorm outputs; dx: where their input gradient goes (NULL: nothing below the head trains). */
static gz_status head_chunk(gz_model *m, const float *x, const int32_t *targets, float *lse, float *dx, int64_t n,
                            int with_targets, int64_t counted, int fuse, float *logits_out, double *loss_sum,
                            int64_t *count) {
    gz_backend *be = m->be;
    int C = m->C, V = m->V;
    GZ_TRY(gz_model_linear_forward(m, m->head, -1, m->logits, x, n));
    if (logits_out) GZ_TRY(be->download(be->ctx, logits_out, m->logits, (size_t)(n * V) * sizeof(float)));
    if (!with_targets) return GZ_OK;
    double s;
    int64_t c;
    GZ_TRY(be->cross_entropy_forward(be->ctx, lse, m->logits, targets, n, V, &s, &c));
    *loss_sum += s;
    *count += c;
    if (!fuse) return GZ_OK;
    GZ_TRY(be->cross_entropy_backward(be->ctx, m->logits, m->logits, lse, targets, n, V, 1.0f / (float)counted));
    return be->matmul_backward(be->ctx, dx, m->grads[m->head] ? m->head_grad_pending : NULL, NULL, m->logits, x,
                               GZ_P(m, m->head), n, C, V);
}

/* Rows whose target is ignored (prompt, padding) add nothing to the loss or to any gradient. When no logits
 * are asked for, the head runs on the counted rows alone, gathered chunk by chunk (runs of consecutive rows
 * copied, their input gradients copied back): in SFT batches most rows are prompt or padding, and the head
 * is the largest GEMM of a partial-training step. Worth it when at least 1/8 of the rows are skipped and the
 * runs are not so many that the copies cost more than they save. */
static int gather_counted(const int32_t *targets, int64_t N, int64_t counted) {
    if (!targets || counted == 0 || counted > N - N / 8) return 0;
    int64_t runs = 0;
    for (int64_t i = 0; i < N; i++)
        runs += targets[i] != GZ_IGNORE_INDEX && (i == 0 || targets[i - 1] == GZ_IGNORE_INDEX);
    return runs <= N / 8;
}

static gz_status head_loss_gathered(gz_model *m, int64_t N, const int32_t *targets, int64_t counted, int fuse,
                                    int need_lnf, double *loss_sum, int64_t *count) {
    gz_backend *be = m->be;
    int64_t C = m->C, R = m->cap_logit_rows;
    const size_t row = (size_t)C * sizeof(float);
    int32_t *chunk_targets = malloc((size_t)R * sizeof(int32_t));
    int64_t *run_start = malloc((size_t)R * sizeof(int64_t)), *run_len = malloc((size_t)R * sizeof(int64_t));
    gz_status st = chunk_targets && run_start && run_len ? GZ_OK : gz_fail(GZ_ERR_NOMEM, "out of host memory for the head's row gather");
    if (st == GZ_OK && fuse && need_lnf) st = be->zero(be->ctx, m->dlnf_pending, (size_t)N * row);
    int64_t done = 0; /* counted rows already through the head: their chunk's offset in m->lse */
    for (int64_t i = 0; st == GZ_OK && i < N;) {
        int64_t n = 0, runs = 0;
        while (i < N && n < R) { /* fill one chunk with runs of counted rows */
            if (targets[i] == GZ_IGNORE_INDEX) {
                i++;
                continue;
            }
            int64_t j = i;
            while (j < N && targets[j] != GZ_IGNORE_INDEX && n + (j - i) < R) j++;
            st = be->copy(be->ctx, m->head_x + n * C, m->lnf + i * C, (size_t)(j - i) * row);
            if (st != GZ_OK) break;
            memcpy(chunk_targets + n, targets + i, (size_t)(j - i) * sizeof(int32_t));
            run_start[runs] = i;
            run_len[runs++] = j - i;
            n += j - i;
            i = j;
        }
        if (st != GZ_OK || n == 0) break;
        st = be->upload(be->ctx, m->head_targets, chunk_targets, (size_t)n * sizeof(int32_t));
        if (st == GZ_OK)
            st = head_chunk(m, m->head_x, m->head_targets, m->lse + done, fuse && need_lnf ? m->head_dx : NULL, n,
                            1, counted, fuse, NULL, loss_sum, count);
        for (int64_t r = 0, at = 0; st == GZ_OK && fuse && need_lnf && r < runs; at += run_len[r++])
            st = be->copy(be->ctx, m->dlnf_pending + run_start[r] * C, m->head_dx + at * C, (size_t)run_len[r] * row);
        done += n;
    }
    free(chunk_targets);
    free(run_start);
    free(run_len);
    return st;
}

gz_status gz_head_loss_forward(gz_model *m, int64_t N, const int32_t *targets, int64_t counted, float *logits_out,
                               double *loss_sum, int64_t *count, int with_backward) {
    gz_backend *be = m->be;
    int C = m->C, V = m->V, L = m->L;
    int with_targets = targets != NULL;
    int64_t R = gz_head_chunk_rows(m, N, with_backward);
    int fuse = with_backward && fused(m, with_backward) && counted > 0;
    int need_lnf = gz_model_min_trainable_pos(m) < GZ_POS_HEAD(L);
    if (fuse && m->grads[m->head]) GZ_TRY(be->zero(be->ctx, m->head_grad_pending, (size_t)C * V * sizeof(float)));
    m->fwd_fused_head = fuse;
    *loss_sum = 0.0;
    *count = 0;
    if (!logits_out && fused(m, with_backward) && gather_counted(targets, N, counted))
        GZ_TRY(head_loss_gathered(m, N, targets, counted, fuse, need_lnf, loss_sum, count));
    else
        for (int64_t r0 = 0; r0 < N; r0 += R) {
            int64_t n = N - r0 < R ? N - r0 : R;
            GZ_TRY(head_chunk(m, m->lnf + r0 * C, m->targets + r0, m->lse + r0,
                              fuse && need_lnf ? m->dlnf_pending + r0 * C : NULL, n, with_targets, counted, fuse,
                              logits_out ? logits_out + r0 * V : NULL, loss_sum, count));
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
