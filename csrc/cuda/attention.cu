/* attention.cu — causal softmax attention with an online softmax (the CPU's blocked algorithm, the same
 * per-element math from elementwise.h's gz_attn_*): nothing T x T is stored; lse [B,NH,T] is saved for
 * backward, which recomputes the probabilities from it.
 *
 * q [B,NH,T,HS]; k, v [B,NKV,T,HS], query head h reads key/value head h / (NH / NKV). out and dout are
 * [B,T,NH*HS] (heads merged). Plain fp32, no cuBLAS and no atomics (deterministic):
 *   forward    one warp per query row: the lanes score 32 keys at a time, the running max and sum are warp
 *              reductions, and the accumulator row (lanes over HS) lives in shared memory;
 *   backward   D = rowsum(dout * out) per query row (a warp each), then dq with one warp per query row over
 *              its keys, then dk, dv with one warp per key row over its queries and the query heads sharing
 *              it (scores are recomputed in both passes rather than combined with atomics).
 * Packed rows (doc_start [B,T] non-NULL, backend.h): query t's keys run from its document's start
 * doc_start[t] to t, so the forward and dq loops start there, and the dk, dv loop over the queries of key s
 * stops at the first query of a later document (starts never decrease along a row). */
#include <math.h>
#include "cuda_ops.h"

#define GZ_FA_WARPS 4 /* warps (rows) per block */
#define GZ_FA_FULL 0xffffffffu

/* dot of a shared-memory row with a global row, by one lane */
__device__ __forceinline__ float row_dot(const float *a, const float *b, int HS) {
    float s = 0.0f;
    for (int d = 0; d < HS; d++) s += a[d] * b[d];
    return s;
}

/* The query row r = (b * NH + h) * T + t a warp works on: where its pieces live. */
typedef struct {
    int t;
    int64_t bt;   /* b * T + t: the token's index in [B, T] arrays (doc_start) */
    int64_t bkv;  /* b * NKV + the key/value head query head h reads */
    int64_t merged; /* offset of row t, head h in the [B, T, NH*HS] out / dout */
} query_row;

__device__ __forceinline__ query_row query_row_of(int64_t r, int T, int NH, int NKV, int HS) {
    query_row q;
    q.t = (int)(r % T);
    int64_t bh = r / T;
    int b = (int)(bh / NH), h = (int)(bh % NH);
    q.bt = (int64_t)b * T + q.t;
    q.bkv = (int64_t)b * NKV + h / (NH / NKV);
    q.merged = ((int64_t)b * T + q.t) * NH * HS + (int64_t)h * HS;
    return q;
}

/* rows r = ((b * NH + h) * T + t) */
__global__ void flash_forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                                     const int32_t *doc_start, int B, int T, int NH, int NKV, int HS, float scale) {
    extern __shared__ float sh[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t r = (int64_t)blockIdx.x * GZ_FA_WARPS + warp;
    if (r >= (int64_t)B * NH * T) return; /* the whole warp leaves together */
    query_row row = query_row_of(r, T, NH, NKV, HS);
    int t = row.t;
    const float *kh = k + row.bkv * T * HS, *vh = v + row.bkv * T * HS;
    float *qs = sh + (size_t)warp * 2 * HS, *acc = qs + HS;
    for (int d = lane; d < HS; d += 32) {
        qs[d] = q[r * HS + d];
        acc[d] = 0.0f;
    }
    __syncwarp();
    float m = -INFINITY, l = 0.0f;
    for (int j0 = doc_start ? doc_start[row.bt] : 0; j0 <= t; j0 += 32) {
        int j = j0 + lane, n = min(32, t - j0 + 1);
        float s = j <= t ? row_dot(qs, kh + (int64_t)j * HS, HS) * scale : -INFINITY;
        float m_new = fmaxf(m, gz_warp_max(s));
        float corr = gz_attn_rescale(m, m_new);
        float p = j <= t ? gz_attn_prob(s, m_new) : 0.0f;
        l = l * corr + gz_warp_sum(p);
        m = m_new;
        for (int d = lane; d < HS; d += 32) acc[d] *= corr;
        for (int jj = 0; jj < n; jj++) { /* warp-uniform bound: every lane takes part in the shuffle */
            float pj = __shfl_sync(GZ_FA_FULL, p, jj);
            const float *vj = vh + (int64_t)(j0 + jj) * HS;
            for (int d = lane; d < HS; d += 32) acc[d] += pj * vj[d];
        }
    }
    float inv = 1.0f / l;
    for (int d = lane; d < HS; d += 32) out[row.merged + d] = acc[d] * inv;
    if (lane == 0) lse[r] = gz_attn_lse(m, l);
}

/* D[r] = sum_d dout[r, d] * out[r, d] */
__global__ void flash_rowdot_kernel(float *D, const float *dout, const float *out, int B, int T, int NH, int HS) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t r = (int64_t)blockIdx.x * GZ_FA_WARPS + warp;
    if (r >= (int64_t)B * NH * T) return;
    int64_t off = query_row_of(r, T, NH, 1, HS).merged;
    float s = 0.0f;
    for (int d = lane; d < HS; d += 32) s += dout[off + d] * out[off + d];
    s = gz_warp_sum(s);
    if (lane == 0) D[r] = s;
}

/* dq: one warp per query row r, over keys 0..t (from its document's start with doc_start) */
__global__ void flash_dq_kernel(float *dq, const float *D, const float *dout, const float *lse, const float *q,
                                const float *k, const float *v, const int32_t *doc_start, int B, int T, int NH,
                                int NKV, int HS, float scale) {
    extern __shared__ float sh[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t r = (int64_t)blockIdx.x * GZ_FA_WARPS + warp;
    if (r >= (int64_t)B * NH * T) return;
    query_row row = query_row_of(r, T, NH, NKV, HS);
    int t = row.t;
    const float *kh = k + row.bkv * T * HS, *vh = v + row.bkv * T * HS;
    const float *go = dout + row.merged;
    float *qs = sh + (size_t)warp * 3 * HS, *gs = qs + HS, *acc = gs + HS;
    for (int d = lane; d < HS; d += 32) {
        qs[d] = q[r * HS + d];
        gs[d] = go[d];
        acc[d] = 0.0f;
    }
    __syncwarp();
    float L = lse[r], Dr = D[r];
    for (int j0 = doc_start ? doc_start[row.bt] : 0; j0 <= t; j0 += 32) {
        int j = j0 + lane, n = min(32, t - j0 + 1);
        float ds = 0.0f;
        if (j <= t) {
            float p = gz_attn_prob(row_dot(qs, kh + (int64_t)j * HS, HS) * scale, L);
            ds = gz_attn_dscore(p, row_dot(gs, vh + (int64_t)j * HS, HS), Dr, scale);
        }
        for (int jj = 0; jj < n; jj++) {
            float dsj = __shfl_sync(GZ_FA_FULL, ds, jj);
            const float *kj = kh + (int64_t)(j0 + jj) * HS;
            for (int d = lane; d < HS; d += 32) acc[d] += dsj * kj[d];
        }
    }
    __syncwarp();
    for (int d = lane; d < HS; d += 32) dq[r * HS + d] = acc[d];
}

/* dk, dv: one warp per key row (b, kv head, s), over queries s..T-1 of every query head reading it (s..e-1 with
 * doc_start, e the end of key s's document) */
__global__ void flash_dkv_kernel(float *dk, float *dv, const float *D, const float *dout, const float *lse,
                                 const float *q, const float *k, const float *v, const int32_t *doc_start, int B,
                                 int T, int NH, int NKV, int HS, float scale) {
    extern __shared__ float sh[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t r = (int64_t)blockIdx.x * GZ_FA_WARPS + warp;
    if (r >= (int64_t)B * NKV * T) return;
    int s = (int)(r % T);
    int64_t bkv = r / T;
    int b = (int)(bkv / NKV), kvh = (int)(bkv % NKV), group = NH / NKV;
    int end = T; /* the queries that see key s: s .. end-1, end the first query whose document starts after s */
    if (doc_start) { /* starts never decrease: a binary search, the same on every lane */
        const int32_t *ds = doc_start + (int64_t)b * T;
        for (int lo = s + 1; lo < end;) {
            int mid = lo + (end - lo) / 2;
            if (ds[mid] > s) end = mid;
            else lo = mid + 1;
        }
    }
    float *ks = sh + (size_t)warp * 4 * HS, *vs = ks + HS, *dks = vs + HS, *dvs = dks + HS;
    for (int d = lane; d < HS; d += 32) {
        ks[d] = k[r * HS + d];
        vs[d] = v[r * HS + d];
        dks[d] = dvs[d] = 0.0f;
    }
    __syncwarp();
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        int64_t bh = (int64_t)b * NH + h;
        const float *qh = q + bh * T * HS;
        for (int i0 = s; i0 < end; i0 += 32) {
            int i = i0 + lane, n = min(32, end - i0);
            float p = 0.0f, ds = 0.0f;
            if (i < end) {
                const float *go = dout + ((int64_t)b * T + i) * NH * HS + (int64_t)h * HS;
                p = gz_attn_prob(row_dot(ks, qh + (int64_t)i * HS, HS) * scale, lse[bh * T + i]);
                ds = gz_attn_dscore(p, row_dot(vs, go, HS), D[bh * T + i], scale);
            }
            for (int ii = 0; ii < n; ii++) {
                float pi = __shfl_sync(GZ_FA_FULL, p, ii), dsi = __shfl_sync(GZ_FA_FULL, ds, ii);
                const float *qi = qh + (int64_t)(i0 + ii) * HS;
                const float *goi = dout + ((int64_t)b * T + i0 + ii) * NH * HS + (int64_t)h * HS;
                for (int d = lane; d < HS; d += 32) {
                    dvs[d] += pi * goi[d];
                    dks[d] += dsi * qi[d];
                }
            }
        }
    }
    __syncwarp();
    for (int d = lane; d < HS; d += 32) {
        dk[r * HS + d] = dks[d];
        dv[r * HS + d] = dvs[d];
    }
}

/* Shared memory is rows_per_block * per_row floats; the default 48 KiB limit bounds the head size. */
static gz_status launch_shape(int64_t rows, int per_row_floats, int HS, unsigned *blocks, size_t *shmem) {
    *shmem = (size_t)GZ_FA_WARPS * per_row_floats * sizeof(float);
    if (*shmem > 48 * 1024)
        return gz_fail(GZ_ERR_VALUE, "attention: head size %d is too large for the CUDA kernels (at most %d)", HS,
                       (int)(48 * 1024 / (GZ_FA_WARPS * sizeof(float) * (per_row_floats / HS))));
    int64_t nb = (rows + GZ_FA_WARPS - 1) / GZ_FA_WARPS;
    if (nb > 0x7fffffffLL) return gz_fail(GZ_ERR_VALUE, "attention: %lld rows is too many", (long long)rows);
    *blocks = (unsigned)nb;
    return GZ_OK;
}

static gz_status check_heads(int NH, int NKV) {
    if (NKV <= 0 || NH % NKV != 0)
        return gz_fail(GZ_ERR_VALUE, "attention: %d key/value heads do not divide %d query heads", NKV, NH);
    return GZ_OK;
}

gz_status gz_cuda_attention_forward(gz_backend_ctx *ctx, float *out, float *lse, const float *q, const float *k,
                                    const float *v, const int32_t *doc_start, int B, int T, int NH, int NKV, int HS) {
    (void)ctx;
    GZ_TRY(check_heads(NH, NKV));
    if (B <= 0 || T <= 0 || NH <= 0) return GZ_OK;
    unsigned blocks;
    size_t shmem;
    GZ_TRY(launch_shape((int64_t)B * NH * T, 2 * HS, HS, &blocks, &shmem));
    flash_forward_kernel<<<blocks, 32 * GZ_FA_WARPS, shmem>>>(out, lse, q, k, v, doc_start, B, T, NH, NKV, HS,
                                                               1.0f / sqrtf((float)HS));
    GZ_LAUNCH_CHECK("flash_forward");
    return GZ_OK;
}

/* scratch: B*NH*T floats (D). dq, dk, dv are overwritten. */
gz_status gz_cuda_attention_backward(gz_backend_ctx *ctx, float *dq, float *dk, float *dv, float *scratch,
                                     const float *dout, const float *out, const float *lse, const float *q,
                                     const float *k, const float *v, const int32_t *doc_start, int B, int T, int NH,
                                     int NKV, int HS) {
    (void)ctx;
    GZ_TRY(check_heads(NH, NKV));
    if (B <= 0 || T <= 0 || NH <= 0) return GZ_OK;
    const float scale = 1.0f / sqrtf((float)HS);
    int64_t rows = (int64_t)B * NH * T;
    unsigned blocks;
    size_t shmem;
    GZ_TRY(launch_shape(rows, 0, HS, &blocks, &shmem));
    flash_rowdot_kernel<<<blocks, 32 * GZ_FA_WARPS>>>(scratch, dout, out, B, T, NH, HS);
    GZ_LAUNCH_CHECK("flash_rowdot");
    GZ_TRY(launch_shape(rows, 3 * HS, HS, &blocks, &shmem));
    flash_dq_kernel<<<blocks, 32 * GZ_FA_WARPS, shmem>>>(dq, scratch, dout, lse, q, k, v, doc_start, B, T, NH, NKV,
                                                         HS, scale);
    GZ_LAUNCH_CHECK("flash_dq");
    GZ_TRY(launch_shape((int64_t)B * NKV * T, 4 * HS, HS, &blocks, &shmem));
    flash_dkv_kernel<<<blocks, 32 * GZ_FA_WARPS, shmem>>>(dk, dv, scratch, dout, lse, q, k, v, doc_start, B, T, NH,
                                                          NKV, HS, scale);
    GZ_LAUNCH_CHECK("flash_dkv");
    return GZ_OK;
}
