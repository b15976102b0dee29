/* cross_entropy.c — mean token cross-entropy over the vocabulary; target -100 is ignored. */
#include <math.h>
#include <stdlib.h>
#include "cpu_ops.h"

#define GZ_IGNORE_INDEX (-100)

gz_status gz_cpu_cross_entropy_forward(float *lse, const float *logits, const int32_t *targets, int64_t N, int V,
                                       double *loss_sum_host, int64_t *count_host) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *row = logits + n * V;
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = row[i] > mx ? row[i] : mx;
        double s = 0.0;
        for (int i = 0; i < V; i++) s += exp((double)(row[i] - mx));
        lse[n] = mx + (float)log(s);
    }
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
        float l = lse[n];
        for (int i = 0; i < V; i++) d[i] = scale * expf(row[i] - l);
        d[targets[n]] -= scale;
    }
    return GZ_OK;
}
