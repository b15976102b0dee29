/* cross_entropy.c — mean token cross-entropy over the vocabulary; target GZ_IGNORE_INDEX is ignored. */
#include <math.h>
#include <stdlib.h>
#include "../elementwise.h"
#include "cpu_ops.h"
#include "vec_math.h"

/* log(sum(exp(row))) with the max subtracted first; exps in float (every argument is <= 0: elementwise.h's
 * gz_expf_nonpos, ~1 ulp, twice the vector width of a double exp) summed in double, GZ_LANES partial sums. */
GZ_VECTOR_CLONES static float row_logsumexp(const float *row, int V) {
    float mx = gz_row_max(row, V, -INFINITY);
    double sl[GZ_LANES] = {0};
    int i;
    for (i = 0; i + GZ_LANES <= V; i += GZ_LANES)
        for (int j = 0; j < GZ_LANES; j++) sl[j] += gz_expf_nonpos(row[i + j] - mx);
    for (int j = 0; i + j < V; j++) sl[j] += gz_expf_nonpos(row[i + j] - mx);
    double s = 0.0;
    for (int j = 0; j < GZ_LANES; j++) s += sl[j];
    return mx + (float)log(s);
}

/* d[i] = scale * exp(row[i] - lse) (softmax times scale; lse >= the row's max, so every argument is <= 0);
 * d may alias row. */
GZ_VECTOR_CLONES static void row_softmax_scaled(float *d, const float *row, float lse, float scale, int V) {
    for (int i = 0; i < V; i++) d[i] = scale * gz_expf_nonpos(row[i] - lse);
}

gz_status gz_cpu_cross_entropy_forward(float *lse, const float *logits, const int32_t *targets, int64_t N, int V,
                                       double *loss_sum_host, int64_t *count_host) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) lse[n] = row_logsumexp(logits + n * V, V);
    double total = 0.0; /* summed in row order: deterministic */
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] == GZ_IGNORE_INDEX) continue;
        total += (double)lse[n] - (double)logits[n * V + targets[n]];
        count++;
    }
    *loss_sum_host = total;
    *count_host = count;
    return GZ_OK;
}

gz_status gz_cpu_cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                                        const int32_t *targets, int64_t N, int V, float scale) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *d = dlogits + n * V;
        const float *row = logits + n * V;
        if (targets[n] == GZ_IGNORE_INDEX) {
            for (int i = 0; i < V; i++) d[i] = 0.0f;
            continue;
        }
        row_softmax_scaled(d, row, lse[n], scale, V);
        d[targets[n]] -= scale;
    }
    return GZ_OK;
}
