/* internal.h — helpers shared by the C core's translation units (not part of the public API). */
#ifndef GOZARU_INTERNAL_H
#define GOZARU_INTERNAL_H

#include "gozaru.h"

#define GZ_MAX_ERROR 1024                 /* bytes of gz_last_error()'s message; longer ones are cut */
#define GZ_MAX_WHAT (GZ_MAX_NAME + 64)    /* bytes of an allocation's description ("gradient of <name>") */
#define GZ_SHAPE_TEXT 160                 /* bytes of a shape or index "[d0, d1, ...]" in a message (cut when longer) */

/* Records a message for gz_last_error() and returns code, so callers can write
 *   return gz_fail(GZ_ERR_VALUE, "tokens[%d] = %d is outside the vocabulary", i, id); */
gz_status gz_fail(gz_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefixes the current message with context ("loading ckpt.h5: ..."), keeps the code. */
gz_status gz_fail_context(gz_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#define GZ_TRY(expr)                      \
    do {                                  \
        gz_status gz_try_s_ = (expr);     \
        if (gz_try_s_ != GZ_OK) return gz_try_s_; \
    } while (0)

/* Checked allocation: zeroed memory or GZ_ERR_NOMEM naming what was being allocated. */
gz_status gz_calloc(void **out, size_t count, size_t size, const char *what);

/* Deterministic RNG (splitmix64 seeding + xoshiro256**), shared by init and sampling. */
/* GZ_ERR_VALUE naming tensor and element unless every m is finite and every v finite and >= 0 (AdamW
 * moments from a caller or a file). */
gz_status gz_adamw_check_moments(const char *tensor, const float *m, const float *v, int64_t numel);

typedef struct { uint64_t s[4]; } gz_rng;
void gz_rng_seed(gz_rng *r, uint64_t seed);
uint64_t gz_rng_next(gz_rng *r);
float gz_rng_uniform(gz_rng *r);   /* [0, 1) */
float gz_rng_normal(gz_rng *r);    /* N(0, 1), Box-Muller */

#endif
