/* sample.c — greedy, temperature, top-k and nucleus sampling over one row of logits. */
#include <math.h>
#include <stdlib.h>
#include "sample.h"

static int cmp_desc(const void *a, const void *b) {
    const gz_scored *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id; /* ties: lower id first, deterministic */
}

gz_status gz_sample_token(const float *lg, int V, const gz_generate_config *cfg, gz_scored *buf, gz_rng *rng,
                          int row, int step, int *out) {
    int best = 0;
    for (int i = 0; i < V; i++) {
        if (!isfinite(lg[i]))
            return gz_fail(GZ_ERR_VALUE, "generate: row %d, step %d: logit of token %d is %g; the model's weights "
                           "or activations are not finite", row, step, i, (double)lg[i]);
        if (lg[i] > lg[best]) best = i;
    }
    if (!(cfg->temperature >= GZ_GREEDY_TEMPERATURE)) {
        *out = best;
        return GZ_OK;
    }
    /* Sorted by the raw logits (all finite, so the order is total); the tempered gaps are computed in
     * double, where (lg - max) / T cannot overflow for T >= GZ_GREEDY_TEMPERATURE. */
    for (int i = 0; i < V; i++) buf[i] = (gz_scored){lg[i], i};
    qsort(buf, V, sizeof *buf, cmp_desc);
    double top = buf[0].logit, inv_t = 1.0 / (double)cfg->temperature;
#define WEIGHT(i) exp(((double)buf[i].logit - top) * inv_t)
    int keep = V;
    if (cfg->top_k > 0 && cfg->top_k < keep) keep = cfg->top_k;
    double total = 0.0;
    for (int i = 0; i < keep; i++) total += WEIGHT(i);
    if (cfg->top_p < 1.0f) { /* nucleus: smallest prefix whose probability reaches top_p */
        double cum = 0.0;
        for (int i = 0; i < keep; i++) {
            cum += WEIGHT(i) / total;
            if (cum >= cfg->top_p) {
                keep = i + 1;
                break;
            }
        }
        total = 0.0;
        for (int i = 0; i < keep; i++) total += WEIGHT(i);
    }
    double u = (double)gz_rng_uniform(rng) * total, cum = 0.0;
    for (int i = 0; i < keep; i++) {
        cum += WEIGHT(i);
        if (u < cum) {
            *out = buf[i].id;
            return GZ_OK;
        }
    }
#undef WEIGHT
    *out = buf[keep - 1].id; /* rounding: u landed on the sum itself */
    return GZ_OK;
}
