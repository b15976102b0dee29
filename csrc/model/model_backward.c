/* model_backward.c — backward pass with selective training.
 *
 * A tensor's gradient is computed only when it is trainable (NULL gradient pointers skip the
 * weight-gradient GEMMs), and the backward sweep stops at the lowest trainable position: an input
 * gradient is only formed when something below it still needs one (needs(pos)).
 */
#include <limits.h>
#include <math.h>
#include "linear.h"

#define G(idx) ((idx) >= 0 ? m->grads[idx] : NULL) /* NULL when frozen or absent */

/* dln = the input gradient of the MLP's first projection(s), from dfcg (the activation output's gradient). */
static gz_status mlp_hidden_backward(gz_model *m, int l, const gz_layer_acts *a, float *dln, int64_t N) {
    gz_backend *be = m->be;
    const gz_layer_tensors *w = &m->lt[l];
    int C = m->C, I = m->I;
    if (m->cfg.mlp_kind != GZ_MLP_SWIGLU) {
        GZ_TRY(be->gelu_backward(be->ctx, m->dfch, m->dfcg, a->fch, N * I));
        return gz_model_linear_backward(m, w->fc_w, w->fc_b, dln, m->dfch, a->ln2, N);
    }
    GZ_TRY(be->swiglu_backward(be->ctx, m->dfch, m->dfcu, m->dfcg, a->fch, a->fcu, N * I));
    GZ_TRY(gz_model_linear_backward(m, w->gate_w, -1, dln, m->dfch, a->ln2, N));
    GZ_TRY(gz_model_linear_backward(m, w->fc_w, w->fc_b, dln ? m->dln_part : NULL, m->dfcu, a->ln2, N));
    return dln ? be->add(be->ctx, dln, dln, m->dln_part, N * C) : GZ_OK;
}

/* dln = the input gradient of the q/k/v projection(s), from dq, dk, dv [B, NH, T, HS]. */
static gz_status qkv_backward(gz_model *m, int l, const gz_layer_acts *a, float *dln, int B, int T) {
    gz_backend *be = m->be;
    const gz_layer_tensors *w = &m->lt[l];
    int64_t N = (int64_t)B * T;
    int C = m->C, HS = m->HS, KV = m->NKV * HS;
    if (m->cfg.arch == GZ_ARCH_GPT_NEOX) {
        GZ_TRY(be->rotary_split_backward(be->ctx, m->dqkv, m->dq, m->dk, m->dv, m->pos, m->cos_t, m->sin_t, B, T, m->NH,
                                         HS, m->rot));
        return gz_model_linear_backward(m, w->qkv_w, w->qkv_b, dln, m->dqkv, a->ln1, N);
    }
    float *dqp = m->dqkv, *dkp = dqp + N * C, *dvp = dkp + N * KV;
    GZ_TRY(be->rotary_heads_backward(be->ctx, dqp, m->dq, m->pos, m->cos_t, m->sin_t, B, T, m->NH, HS, m->rot));
    GZ_TRY(be->rotary_heads_backward(be->ctx, dkp, m->dk, m->pos, m->cos_t, m->sin_t, B, T, m->NKV, HS, m->rot));
    GZ_TRY(be->rotary_heads_backward(be->ctx, dvp, m->dv, m->pos, m->cos_t, m->sin_t, B, T, m->NKV, HS, 0));
    float *part = dln ? m->dln_part : NULL;
    GZ_TRY(gz_model_linear_backward(m, w->q_w, w->q_b, dln, dqp, a->ln1, N));
    GZ_TRY(gz_model_linear_backward(m, w->k_w, w->k_b, part, dkp, a->ln1, N));
    if (dln) GZ_TRY(be->add(be->ctx, dln, dln, part, N * C));
    GZ_TRY(gz_model_linear_backward(m, w->v_w, w->v_b, part, dvp, a->ln1, N));
    return dln ? be->add(be->ctx, dln, dln, part, N * C) : GZ_OK;
}

/* Backward through one layer. dy: gradient w.r.t. the layer output; dx receives the gradient
 * w.r.t. its input x when anything below the layer is trainable. */
static gz_status layer_backward(gz_model *m, int l, const gz_layer_acts *a, const float *dy, float *dx, int min_pos,
                                int B, int T) {
    gz_backend *be = m->be;
    const gz_layer_tensors *w = &m->lt[l];
    int64_t N = (int64_t)B * T;
    int C = m->C;
    size_t act_bytes = (size_t)N * C * sizeof(float);
    const float *x = m->res[l];
    int par = m->cfg.use_parallel_residual;
#define NEEDS(k) (min_pos < GZ_POS_LAYER(l, k)) /* something before op k (0 ln1 .. 5 proj) is trainable */
    int x_grad = NEEDS(0);

    /* ---- MLP branch. Sequential: y = h + mlp(ln2(h)); parallel: y = x + attn(ln1(x)) + mlp(ln2(x)).
     * The residual path passes dy straight through to dh (seq) or dx (par). */
    const float *mlp_in = par ? x : a->h;
    float *dmlp_in = NULL;
    if (par && x_grad) dmlp_in = dx;
    if (!par && NEEDS(3)) dmlp_in = m->dh;
    if (dmlp_in) GZ_TRY(be->copy(be->ctx, dmlp_in, dy, act_bytes));
    GZ_TRY(gz_model_linear_backward(m, w->proj_w, w->proj_b, NEEDS(5) ? m->dfcg : NULL, dy, a->fcg, N));
    if (NEEDS(5)) {
        GZ_TRY(mlp_hidden_backward(m, l, a, NEEDS(4) ? m->dln : NULL, N));
        if (NEEDS(4))
            GZ_TRY(gz_norm_backward(m, dmlp_in, w->ln2_w, w->ln2_b, m->dln, mlp_in, a->ln2_mean, a->ln2_rstd, N));
    }

    /* ---- attention branch, reached when the dense projection or anything before it is trainable */
    if (!NEEDS(3)) return GZ_OK;
    const float *dattn = par ? dy : m->dh;
    if (!par && x_grad) GZ_TRY(be->copy(be->ctx, dx, m->dh, act_bytes));
    GZ_TRY(gz_model_linear_backward(m, w->dense_w, w->dense_b, NEEDS(2) ? m->datty : NULL, dattn, a->atty, N));
    if (!NEEDS(2)) return GZ_OK;
    GZ_TRY(be->attention_backward(be->ctx, m->dq, m->dk, m->dv, m->datt, m->datty, a->atty, a->attn_lse, a->q, a->k,
                                  a->v, m->fwd_docs ? m->doc_start : NULL, B, T, m->NH, m->NKV, m->HS));
    GZ_TRY(qkv_backward(m, l, a, NEEDS(1) ? m->dln : NULL, B, T));
    if (NEEDS(1))
        GZ_TRY(gz_norm_backward(m, x_grad ? dx : NULL, w->ln1_w, w->ln1_b, m->dln, x, a->ln1_mean, a->ln1_rstd, N));
#undef NEEDS
    return GZ_OK;
}

gz_status gz_model_backward(gz_model *m, float loss_scale) {
    if (!m->have_acts)
        return gz_fail(GZ_ERR_STATE, "backward() needs a forward pass with targets first (and again after changing "
                                     "trainable tensors or parameters)");
    int min_pos = gz_model_min_trainable_pos(m);
    if (min_pos == INT_MAX) return gz_fail(GZ_ERR_STATE, "backward(): no tensor is trainable");
    if (!isfinite(loss_scale)) return gz_fail(GZ_ERR_VALUE, "loss_scale = %g is not finite", loss_scale);
    if (m->fwd_count == 0) return GZ_OK; /* every target ignored: the loss does not depend on the weights */
    gz_backend *be = m->be;
    int B = m->fwd_B, T = m->fwd_T, L = m->L, C = m->C;
    int64_t N = (int64_t)B * T;

    int need_lnf = min_pos < GZ_POS_HEAD(L);
    float *dlnf;
    GZ_TRY(gz_head_loss_backward(m, loss_scale, need_lnf, &dlnf));
    if (need_lnf) {
        int need_res = min_pos < GZ_POS_FINAL_LN(L);
        if (need_res) GZ_TRY(be->zero(be->ctx, m->dres_a, (size_t)N * C * sizeof(float)));
        GZ_TRY(gz_norm_backward(m, need_res ? m->dres_a : NULL, m->lnf_w, m->lnf_b, dlnf, m->res[L], m->lnf_mean,
                                m->lnf_rstd, N));
        float *dy = m->dres_a, *dx = m->dres_b;
        for (int l = L - 1; l >= 0 && min_pos < GZ_POS_LAYER(l + 1, 0); l--) {
            if (l < m->fwd_stop_layer)
                return gz_fail(GZ_ERR_STATE, "internal: layer %d activations were not kept", l);
            GZ_TRY(layer_backward(m, l, &m->acts[l], dy, dx, min_pos, B, T));
            float *t = dy;
            dy = dx;
            dx = t;
        }
        if (G(m->embed)) GZ_TRY(be->embedding_backward(be->ctx, G(m->embed), dy, m->tokens, N, C));
    }
    m->have_acts = 0; /* dlogits overwrote the logits; the pending head gradients are spent */
    return be->synchronize(be->ctx);
}
