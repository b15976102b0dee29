/* precision.h — the one vocabulary of GEMM precisions and the mixed-precision contract, shared by every backend.
 *
 * A model's precision is a run setting (gz_model_set_precision), never part of its weights: checkpoints hold
 * the fp32 masters, so a file saved from a bf16 run loads into fp32 and back. Each backend runs a subset of the
 * names (gz_backend_supports: the CPU fp32, bf16, bf16-emulated; CUDA fp32, tf32, bf16), reported by
 * _core.build_info()["backend_precisions"]; asking a backend for one it does not run is GZ_ERR_BACKEND naming
 * the ones it does.
 *
 *   fp32           every GEMM in fp32.
 *   bf16           Linear layers (the GEMMs of matmul_forward / matmul_backward) take bf16 operands and
 *                  accumulate and write fp32: bf16 x bf16 -> fp32. Masters, gradients and AdamW state stay
 *                  fp32; so do LayerNorm, softmax, attention products, GELU, rotary, loss and reductions.
 *   bf16-emulated  the same rounding of the operands, multiplied by the fp32 SGEMM. A product of two bf16
 *                  values (8-bit significands) is exact in fp32 (24 bits), so this equals a bf16 GEMM up to
 *                  the order of the fp32 summation: slow, but exact on CPUs without bf16 instructions.
 *   tf32           fp32 operands multiplied on TF32 tensor cores (10-bit significands), fp32 accumulation.
 *
 * Which tensors have bf16 copies: the weight operand `w` of matmul_forward / matmul_backward (the matrix
 * weights of qkv, attn_out, mlp_up, mlp_down and head, and LoRA's A and B). Activations and output gradients are
 * rounded (round to nearest even) when they enter a GEMM, into backend scratch, per call.
 *
 * When a copy refreshes: it is made at the first GEMM that reads the weight and reused until the fp32 master
 * is written. A write through the backend interface (upload, copy, zero, scale, adamw_update) marks the
 * copies overlapping the written bytes stale, and so does releasing a buffer (the address may come back holding
 * something else; a backend that cannot tell a buffer's extent marks them all stale); writes the backend cannot
 * see (parameter views written from Python, checkpoint loads, random init: everything that ends in
 * gz_model_params_changed) call weights_written with NULL, which marks them all stale. A stale copy is re-rounded
 * lazily at the next GEMM that reads it, so an optimizer step refreshes only the tensors it updated and frozen
 * tensors are rounded once. */
#ifndef GOZARU_PRECISION_H
#define GOZARU_PRECISION_H

#include <stdio.h>
#include <stdint.h>
#include <string.h>

/* Values are stable (the order of _core.PRECISIONS); a new precision goes before GZ_PRECISION_COUNT. */
typedef enum {
    GZ_PRECISION_FP32 = 0,
    GZ_PRECISION_BF16,
    GZ_PRECISION_BF16_EMULATED,
    GZ_PRECISION_TF32,
    GZ_PRECISION_COUNT
} gz_precision;

/* The names: the one list (Python reads it as _core.PRECISIONS). NULL outside the enum. */
static inline const char *gz_precision_name(gz_precision p) {
    static const char *const names[GZ_PRECISION_COUNT] = {"fp32", "bf16", "bf16-emulated", "tf32"};
    return (unsigned)p < GZ_PRECISION_COUNT ? names[p] : NULL;
}

/* 0 and *out set for a known name, -1 otherwise. */
static inline int gz_precision_parse(const char *s, gz_precision *out) {
    for (int p = 0; s && p < GZ_PRECISION_COUNT; p++)
        if (!strcmp(s, gz_precision_name((gz_precision)p))) {
            *out = (gz_precision)p;
            return 0;
        }
    return -1;
}

#define GZ_PRECISION_BIT(p) (1u << (unsigned)(p))
#define GZ_PRECISION_ALL (GZ_PRECISION_BIT(GZ_PRECISION_COUNT) - 1u)

#define GZ_PRECISION_LIST 128 /* bytes that hold gz_precision_list of every precision */

/* "'fp32', 'bf16', ..." for the precisions in mask (GZ_PRECISION_BIT), in enum order, for messages. */
static inline const char *gz_precision_list(char *buf, size_t size, unsigned mask) {
    size_t used = 0;
    buf[0] = 0;
    for (int p = 0; p < GZ_PRECISION_COUNT; p++) {
        if (!(mask & GZ_PRECISION_BIT(p)) || used >= size) continue;
        int k = snprintf(buf + used, size - used, "%s'%s'", used ? ", " : "", gz_precision_name((gz_precision)p));
        if (k > 0) used += (size_t)k;
    }
    return buf;
}

/* fp32 -> bf16 bits, round to nearest even (NaN stays a quiet NaN), as torch and cuda_bf16.h round. */
static inline uint16_t gz_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* f rounded to the nearest bf16, as an fp32 value (what bf16-emulated multiplies). */
static inline float gz_bf16_round(float f) {
    uint32_t u = (uint32_t)gz_bf16_bits(f) << 16;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

#endif
