/* precision.h — the mixed-precision contract, shared by every backend.
 *
 * A model's precision is a run setting (gz_model_set_precision), never part of its weights: checkpoints hold
 * the fp32 masters, so a file saved from a bf16 run loads into fp32 and back.
 *
 *   fp32           every GEMM in fp32.
 *   bf16           Linear layers (the GEMMs of matmul_forward / matmul_backward) take bf16 operands and
 *                  accumulate and write fp32: bf16 x bf16 -> fp32. Masters, gradients and AdamW state stay
 *                  fp32; so do LayerNorm, softmax, attention products, GELU, rotary, loss and reductions.
 *   bf16-emulated  the same rounding of the operands, multiplied by the fp32 SGEMM. A product of two bf16
 *                  values (8-bit significands) is exact in fp32 (24 bits), so this equals a bf16 GEMM up to
 *                  the order of the fp32 summation: slow, but exact on CPUs without bf16 instructions.
 *
 * Which tensors have bf16 copies: the weight operand `w` of matmul_forward / matmul_backward (the matrix
 * weights of qkv, attn_out, mlp_up, mlp_down and head). Activations and output gradients are rounded
 * (round to nearest even) when they enter a GEMM, into backend scratch, per call.
 *
 * When a copy refreshes: it is made at the first GEMM that reads the weight and reused until the fp32 master
 * is written. A write through the backend interface (upload, copy, zero, scale, adamw_update) marks the
 * copies overlapping the written bytes stale, and so does releasing a buffer (the address may come back holding
 * something else; a backend that cannot tell a buffer's extent marks them all stale); writes the backend cannot see (parameter views written from Python,
 * checkpoint loads, random init: everything that ends in gz_model_params_changed) call weights_written with
 * NULL, which marks them all stale. A stale copy is re-rounded lazily at the next GEMM that reads it, so an
 * optimizer step refreshes only the tensors it updated and frozen tensors are rounded once. */
#ifndef GOZARU_PRECISION_H
#define GOZARU_PRECISION_H

#include <stdint.h>
#include <string.h>

typedef enum { GZ_PRECISION_FP32 = 0, GZ_PRECISION_BF16, GZ_PRECISION_BF16_EMULATED } gz_precision;

#define GZ_PRECISION_CHOICES "'fp32', 'bf16', 'bf16-emulated'"

static inline const char *gz_precision_name(gz_precision p) {
    return p == GZ_PRECISION_BF16 ? "bf16" : p == GZ_PRECISION_BF16_EMULATED ? "bf16-emulated" : "fp32";
}

/* 0 and *out set for a known name, -1 otherwise. */
static inline int gz_precision_parse(const char *s, gz_precision *out) {
    if (!s) return -1;
    if (!strcmp(s, "fp32")) *out = GZ_PRECISION_FP32;
    else if (!strcmp(s, "bf16")) *out = GZ_PRECISION_BF16;
    else if (!strcmp(s, "bf16-emulated")) *out = GZ_PRECISION_BF16_EMULATED;
    else return -1;
    return 0;
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
