/* matmul_few_rows.c — y = x W^T + b for a few rows (generation's decode steps).
 *
 * With few rows the product streams W once; BLAS would first copy W into packed panels, which costs about
 * as much as the product itself. Here each pair of weight rows is loaded once and dotted with 4 input rows
 * at a time (8 accumulators, 6 loads per 8 multiply-adds). Every output is summed in the same order as
 * row_block() — 8 lanes over the input, then a fixed tree — so a row's result does not depend on how many rows
 * share the call. Measured on 2 threads: faster than BLAS for up to 8 rows (on 1 thread, BLAS is faster
 * from 2 rows on). */
#include <string.h>

#include "cpu_ops.h"

#define LANES 8

static inline float lanes_sum(const float *a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* WO weight rows x NR input rows; out[n * ldo + o]. */
#define DEFINE_BLOCK(WO, NR)                                                                                 \
    GZ_VECTOR_CLONES                                                                                         \
    static void block_##WO##x##NR(float *out, int64_t ldo, const float *x, const float *w, const float *bias, \
                                  int C) {                                                                   \
        float acc[WO][NR][LANES] = {{{0}}};                                                                  \
        int i = 0;                                                                                           \
        for (; i + LANES <= C; i += LANES)                                                                   \
            for (int o = 0; o < WO; o++)                                                                     \
                for (int n = 0; n < NR; n++)                                                                 \
                    for (int j = 0; j < LANES; j++)                                                          \
                        acc[o][n][j] += x[(int64_t)n * C + i + j] * w[(int64_t)o * C + i + j];               \
        for (int o = 0; o < WO; o++)                                                                         \
            for (int n = 0; n < NR; n++) {                                                                   \
                float s = lanes_sum(acc[o][n]);                                                              \
                for (int k = i; k < C; k++) s += x[(int64_t)n * C + k] * w[(int64_t)o * C + k];              \
                out[(int64_t)n * ldo + o] = s + (bias ? bias[o] : 0.0f);                                     \
            }                                                                                                \
    }

DEFINE_BLOCK(2, 4)
DEFINE_BLOCK(1, 4)

/* One input row against WO <= 2 weight rows: the same lanes and tree as the blocks, written with explicit
 * 8-float vectors (the auto-vectorised form of this shape shuffled and spilled: 5x slower, measured). */
typedef float gz_v8 __attribute__((vector_size(LANES * sizeof(float))));

/* An unaligned load (memcpy: no alignment or aliasing assumption; compiles to one vector load). */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(gz_v8))

GZ_VECTOR_CLONES
static void row_block(float *dst, const float *x, const float *w, const float *bias, int C, int wo) {
    gz_v8 acc[2] = {{0}, {0}};
    int i = 0;
    for (; i + LANES <= C; i += LANES) {
        gz_v8 xv, wv;
        LOAD8(xv, x + i);
        for (int k = 0; k < wo; k++) {
            LOAD8(wv, w + (int64_t)k * C + i);
            acc[k] += xv * wv;
        }
    }
    for (int k = 0; k < wo; k++) {
        float lanes[LANES];
        memcpy(lanes, &acc[k], sizeof lanes);
        float s = lanes_sum(lanes);
        for (int j = i; j < C; j++) s += x[j] * w[(int64_t)k * C + j];
        dst[k] = s + (bias ? bias[k] : 0.0f);
    }
}

gz_status gz_cpu_matmul_few_rows(float *out, const float *inp, const float *w, const float *bias, int64_t N, int C,
                                 int OC) {
    int pairs = OC / 2;
#pragma omp parallel for schedule(static) GZ_PAR_IF((int64_t)OC * C)
    for (int p = 0; p <= pairs; p++) {
        int o = 2 * p, wo = OC - o >= 2 ? 2 : OC - o;
        if (wo <= 0) continue;
        const float *wp = w + (int64_t)o * C, *bp = bias ? bias + o : NULL;
        for (int64_t n = 0; n < N;) {
            float *dst = out + n * OC + o;
            const float *x = inp + n * C;
            if (N - n >= 4) {
                if (wo == 2) block_2x4(dst, OC, x, wp, bp, C);
                else block_1x4(dst, OC, x, wp, bp, C);
                n += 4;
            } else {
                row_block(dst, x, wp, bp, C, wo);
                n += 1;
            }
        }
    }
    return GZ_OK;
}
